//! Contexts as a `kubectl config` / `docker context` user expects them: which daemon a
//! command goes to when flags, variables and the current context disagree, and `ctl context
//! add|use|remove|show|list` on the awkward cases (a name in use, the current context
//! removed, a file with bad YAML or that others could write).

use ctl::context::ContextListJson;
use ctl::fleet::FleetJson;
use ctl::output::StatusJson;
use scriptd_e2e::*;
use std::os::unix::fs::PermissionsExt;

/// `ctl ARGS` in `home` with the variables `vars` set.
fn ctl_with(home: &ContextHome, vars: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = home.command(args);
    cmd.envs(vars.iter().copied());
    cmd.output().expect("run ctl").into()
}

/// The script that `ctl ARGS status` (with `vars`) finds: which daemon answered.
fn answered(home: &ContextHome, vars: &[(&str, &str)], args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["status", "--output", "json"]);
    let r = ctl_with(home, vars, &all);
    assert_eq!(r.code, 0, "ctl {all:?} with {vars:?}: {}", r.stderr);
    let doc: StatusJson = serde_json::from_str(&r.stdout).expect("status JSON parses strictly");
    doc.scripts[0].name.clone()
}

#[test]
fn flags_win_over_variables_and_variables_over_the_current_context() {
    let home = ContextHome::new();
    let daemons: Vec<(Env, Daemon)> = ["alpha", "beta", "gamma"]
        .into_iter()
        .map(|name| {
            let env = Env::new(&format!(
                "scripts:\n  {name}:\n    command: [\"/bin/sleep\", \"1000\"]\n"
            ));
            let d = env.start();
            (env, d)
        })
        .collect();
    for (name, (_, d)) in ["a", "b"].iter().zip(&daemons) {
        home.ctl_ok(&[
            "context",
            "add",
            name,
            "--endpoint",
            &format!("unix://{}", d.socket.display()),
        ]);
    }
    home.ctl_ok(&["context", "use", "b"]);
    let gamma_socket = daemons[2].1.socket.display().to_string();
    let gamma_config = daemons[2].0.config().display().to_string();
    let socket_var = ("SCRIPTD_SOCKET", gamma_socket.as_str());
    let context_var = ("SCRIPTD_CONTEXT", "a");
    let config_var = ("SCRIPTD_CONFIG", gamma_config.as_str());

    assert_eq!(answered(&home, &[], &[]), "beta", "the current context");
    assert_eq!(
        answered(&home, &[context_var], &[]),
        "alpha",
        "SCRIPTD_CONTEXT"
    );
    assert_eq!(
        answered(&home, &[context_var], &["--context", "b"]),
        "beta",
        "--context over SCRIPTD_CONTEXT"
    );
    assert_eq!(
        answered(&home, &[config_var], &[]),
        "gamma",
        "SCRIPTD_CONFIG over the current context"
    );
    assert_eq!(
        answered(&home, &[], &["--config", &gamma_config]),
        "gamma",
        "--config over the current context"
    );
    assert_eq!(
        answered(&home, &[socket_var, context_var], &[]),
        "gamma",
        "SCRIPTD_SOCKET over SCRIPTD_CONTEXT"
    );
    assert_eq!(
        answered(&home, &[socket_var], &["--context", "a"]),
        "alpha",
        "a flag over every variable"
    );
    assert_eq!(
        answered(&home, &[context_var], &["--socket", &gamma_socket]),
        "gamma",
        "--socket over SCRIPTD_CONTEXT"
    );
    assert_eq!(
        answered(&home, &[], &["--socket", &gamma_socket, "--context", "a"]),
        "gamma",
        "--socket over --context"
    );

    // Several contexts on the command line fan out whatever SCRIPTD_SOCKET says.
    let r = ctl_with(
        &home,
        &[socket_var],
        &["--context", "a,b", "status", "--output", "json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let doc: FleetJson = serde_json::from_str(&r.stdout).expect("fan-out JSON parses strictly");
    assert_eq!(doc.contexts.keys().collect::<Vec<_>>(), ["a", "b"]);
    // --all-contexts too, whatever SCRIPTD_CONTEXT says.
    let r = ctl_with(
        &home,
        &[context_var],
        &["--all-contexts", "status", "--output", "json"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let doc: FleetJson = serde_json::from_str(&r.stdout).expect("fan-out JSON parses strictly");
    assert_eq!(doc.contexts.keys().collect::<Vec<_>>(), ["a", "b"]);
    // ... and with --socket beside them neither can win.
    let r = home.ctl(&["--socket", &gamma_socket, "--context", "a,b", "status"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("give one or the other"), "{}", r.stderr);
    let r = ctl_with(&home, &[socket_var], &["reload", "--rolling"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("SCRIPTD_SOCKET names one socket"),
        "{}",
        r.stderr
    );

    // `context use` says when a variable wins over what it chose.
    let r = ctl_with(&home, &[socket_var], &["context", "use", "a"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("SCRIPTD_SOCKET is set and wins over the current context"),
        "{}",
        r.stderr
    );
}

#[test]
fn context_commands_like_kubectl_config_and_docker_context() {
    let home = ContextHome::new();
    let file = home.dir.path().join("scriptd/contexts.yaml");
    let list = |home: &ContextHome| -> ContextListJson {
        serde_json::from_str(&home.ctl_ok(&["context", "list", "--output", "json"]))
            .expect("list JSON parses strictly")
    };
    let r = home.ctl(&["--all-contexts", "status"]);
    assert_eq!(r.code, 4, "no contexts at all: {r:?}");
    assert!(r.stderr.contains("there are no contexts"), "{}", r.stderr);

    home.ctl_ok(&[
        "context",
        "add",
        "one",
        "--endpoint",
        "unix:///run/one.sock",
    ]);
    home.ctl_ok(&[
        "context",
        "add",
        "two",
        "--endpoint",
        "unix:///run/two.sock",
    ]);
    let mode = std::fs::metadata(&file)
        .expect("the file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "written 0600");

    // A name in use is refused (as `docker context create`); --force replaces it in place.
    let r = home.ctl(&[
        "context",
        "add",
        "one",
        "--endpoint",
        "unix:///run/new.sock",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("a context named \"one\" exists already (endpoint unix:///run/one.sock)")
            && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    home.ctl_ok(&[
        "context",
        "add",
        "one",
        "--endpoint",
        "unix:///run/new.sock",
        "--force",
    ]);
    let l = list(&home);
    let endpoints: Vec<(&str, &str)> = l
        .contexts
        .iter()
        .map(|c| (c.name.as_str(), c.endpoint.as_str()))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("one", "unix:///run/new.sock"),
            ("two", "unix:///run/two.sock")
        ]
    );

    // A context whose daemon is not there: the message names the context.
    let r = home.ctl(&["--context", "one", "status"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("cannot reach scriptd at /run/new.sock (context one)")
            && r.stderr.contains("`ctl context show one`"),
        "{}",
        r.stderr
    );

    // Unknown names: not found (4), saying where to look.
    for args in [
        &["context", "use", "nope"][..],
        &["context", "remove", "nope"],
        &["context", "show", "nope"],
    ] {
        let r = home.ctl(args);
        assert_eq!(r.code, 4, "{args:?}: {r:?}");
        assert!(r.stderr.contains("ctl context list"), "{}", r.stderr);
    }
    let r = home.ctl(&["context", "show"]);
    assert_eq!(r.code, 4, "no current context: {r:?}");
    assert!(r.stderr.contains("ctl context use"), "{}", r.stderr);

    // `use --none`: no current context (kubectl's `config unset current-context`).
    home.ctl_ok(&["context", "use", "one"]);
    assert_eq!(list(&home).current.as_deref(), Some("one"));
    home.ctl_ok(&["context", "use", "--none"]);
    assert_eq!(list(&home).current, None);
    let r = home.ctl(&["context", "use"]);
    assert_eq!(r.code, 2, "a name or --none: {r:?}");

    // Removing the current context leaves none current, and says so (as kubectl does).
    home.ctl_ok(&["context", "use", "two"]);
    assert_eq!(list(&home).current.as_deref(), Some("two"));
    let r = home.ctl(&["context", "remove", "two"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("two was the current context; there is none now"),
        "{}",
        r.stderr
    );
    let l = list(&home);
    assert_eq!(l.current, None);
    assert_eq!(l.contexts.len(), 1);

    // No TLS, no TCP.
    let r = home.ctl(&[
        "context",
        "add",
        "web",
        "--endpoint",
        "http://127.0.0.1:7443",
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("TLS is mandatory"), "{}", r.stderr);

    // A file others could write is not used: they would choose the daemons ctl trusts.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    for args in [&["context", "list"][..], &["--context", "one", "status"]] {
        let r = home.ctl(args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&file.display().to_string())
                && r.stderr.contains("writable by other users (mode 0666)")
                && r.stderr.contains("chmod 600"),
            "{}",
            r.stderr
        );
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    home.ctl_ok(&["context", "list"]);

    // Bad YAML, or a name twice: every command says which file and what is wrong.
    for (text, says) in [
        ("contexts:\n  - name: [one\n", "at line"),
        ("contexts:\n  - nmae: one\n", "unknown field `nmae`"),
        (
            "contexts:\n  - {name: a, endpoint: 'unix:///a'}\n  - {name: a, endpoint: 'unix:///b'}\n",
            "the name \"a\" is given twice",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        for args in [&["context", "list"][..], &["--all-contexts", "status"]] {
            let r = home.ctl(args);
            assert_eq!(r.code, 2, "{args:?} on {text:?}: {r:?}");
            assert!(
                r.stderr.contains(&format!(
                    "the contexts {} are invalid",
                    file.display()
                )) && r.stderr.contains(says),
                "{text:?}: {}",
                r.stderr
            );
        }
    }
}

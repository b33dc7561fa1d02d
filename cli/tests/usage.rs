//! `ctl` without a daemon: exit codes and messages that say what to do.

use std::process::Command;

fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctl"))
        .args(args)
        .env_remove("SCRIPTD_SOCKET")
        .env_remove("SCRIPTD_CONFIG")
        .output()
        .expect("run ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreachable_daemon_exits_1_naming_the_socket() {
    let (code, _, stderr) = ctl(&["--socket", "/nonexistent/scriptd.sock", "status"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot reach scriptd at /nonexistent/scriptd.sock"),
        "{stderr}"
    );
    assert!(stderr.contains("is the daemon running?"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ctl(&["frobnicate"]).0, 2);
    assert_eq!(
        ctl(&["reload", "--exit-code"]).0,
        2,
        "--exit-code requires --dry-run"
    );
    assert_eq!(ctl(&["status", "--output", "yaml"]).0, 2);
}

/// The completion scripts the package ships are what `ctl completions` prints (they call
/// ctl back, so they only change when clap_complete's protocol does).
#[test]
fn the_shipped_completions_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/completions");
    for (shell, file) in [("bash", "ctl.bash"), ("zsh", "_ctl"), ("fish", "ctl.fish")] {
        let (code, stdout, stderr) = ctl(&["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.contains("COMPLETE="), "{stdout}");
        let shipped = std::fs::read_to_string(dir.join(file)).expect("read the shipped file");
        assert_eq!(
            stdout, shipped,
            "packaging/completions/{file} is stale: run packaging/generate.sh"
        );
    }
}

/// `ctl.1` names a page per subcommand; those pages are shipped, current, and no others.
#[test]
fn the_shipped_man_pages_are_current_and_complete() {
    let generated = tempfile::tempdir().expect("tempdir");
    let dir = generated.path().to_str().expect("utf-8 path");
    let (code, _, stderr) = ctl(&["man", "--dir", dir]);
    assert_eq!(code, 0, "{stderr}");
    let pages = |dir: &std::path::Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.starts_with("ctl") && name.ends_with(".1")
            })
            .map(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                (name.to_owned(), std::fs::read(&p).expect("read page"))
            })
            .collect()
    };
    let shipped = pages(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man"));
    let want = pages(generated.path());
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "packaging/man has other ctl pages than ctl generates: run packaging/generate.sh"
    );
    for (name, page) in &want {
        assert!(
            shipped[name] == *page,
            "packaging/man/{name} is stale: run packaging/generate.sh"
        );
    }
    let main = String::from_utf8_lossy(&want["ctl.1"]);
    assert!(
        main.contains("ctl\\-status(1)"),
        "ctl.1 names the subcommand pages"
    );
    assert!(
        !want.contains_key("ctl-man.1"),
        "hidden commands have no page"
    );
}

/// A subcommand's help lists its own options before the global ones.
#[test]
fn subcommand_help_lists_its_own_options_first() {
    let (code, stdout, _) = ctl(&["logs", "--help"]);
    assert_eq!(code, 0);
    let own = stdout.find("--follow").expect("--follow in logs --help");
    let global = stdout
        .find("Global options:")
        .expect("a Global options heading");
    assert!(own < global, "{stdout}");
    assert!(stdout[global..].contains("--socket"), "{stdout}");
}

#[test]
fn wait_flags_without_what_they_need_are_usage_errors() {
    for args in [
        &["run", "x", "--timeout", "1s"][..],
        &["run", "x", "--follow"],
        &["run", "x", "--wait", "--timeout", "soon"],
        &["logs", "x", "--timeout", "1s"],
        &["logs", "x", "--until-match", "("],
    ] {
        let (code, _, stderr) = ctl(args);
        assert_eq!(code, 2, "ctl {args:?}: {stderr}");
    }
}

/// A config named with `--config` that is not there is said, not silently replaced by a
/// socket somewhere else.
#[test]
fn a_missing_config_is_a_usage_error_naming_it() {
    let (code, _, stderr) = ctl(&["--config", "/nonexistent/scriptd.yaml", "status"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read the config /nonexistent/scriptd.yaml"),
        "{stderr}"
    );
}

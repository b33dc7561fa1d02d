//! Many hosts from one `ctl`: daemons with a TCP listener (mutual TLS, certificates made by
//! the test with rcgen) reached through contexts; what a refused client is told.

use ctl::fleet::FleetJson;
use ctl::output::StatusJson;
use scriptd_e2e::*;

/// A daemon listening on a free loopback port too, with `access` (lines under `daemon:`)
/// and one long-running script `name`.
fn tls_daemon(pki: &Pki, access: &str, name: &str) -> (Env, Daemon, u16) {
    let port = free_port();
    let env = Env::new(&format!(
        "{}  access:\n{access}scripts:\n  {name}:\n    command: [\"/bin/sleep\", \"1000\"]\n",
        pki.listen_section(port)
    ));
    let d = env.start();
    (env, d, port)
}

/// The single script of `ctl ARGS status --output json` through `home`'s contexts.
fn script_of(home: &ContextHome, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["status", "--output", "json"]);
    let out = home.ctl_ok(&all);
    let doc: StatusJson = serde_json::from_str(&out).expect("status JSON parses strictly");
    assert_eq!(doc.scripts.len(), 1, "{out}");
    doc.scripts[0].name.clone()
}

#[test]
fn a_context_per_daemon_over_tls_and_the_selection_rules() {
    let home = ContextHome::new();
    let pki = Pki::new(&home.dir.path().join("pki"), "fleet");
    let access = "    - { cert: ops, role: operate }\n";
    let (_ea, a, port_a) = tls_daemon(&pki, access, "alpha");
    let (_eb, _b, port_b) = tls_daemon(&pki, access, "beta");
    let ops = pki.client("ops");
    home.add_tls("a", port_a, &pki.ca, Some(&ops));
    home.add_tls("b", port_b, &pki.ca, Some(&ops));

    assert_eq!(script_of(&home, &["--context", "a"]), "alpha");
    assert_eq!(script_of(&home, &["--context", "b"]), "beta");
    home.ctl_ok(&["context", "use", "b"]);
    assert_eq!(script_of(&home, &[]), "beta", "the current context");
    assert_eq!(
        script_of(&home, &["--context", "a"]),
        "alpha",
        "--context over current"
    );
    let socket = a.socket.display().to_string();
    assert_eq!(
        script_of(&home, &["--context", "b", "--socket", &socket]),
        "alpha",
        "--socket wins"
    );
    // An operate certificate may reload and restart over TCP; the history names it.
    home.ctl_ok(&["--context", "a", "reload"]);
    home.ctl_ok(&["--context", "a", "restart", "alpha"]);
    let actions: ctl::history::ActionsJson = serde_json::from_str(&home.ctl_ok(&[
        "--context",
        "a",
        "history",
        "--actions",
        "--output",
        "json",
    ]))
    .expect("actions JSON parses strictly");
    let last = &actions.actions[0];
    assert_eq!(
        (last.cert.as_deref(), last.uid),
        (Some("ops"), None),
        "{last:?}"
    );
    let table = home.ctl_ok(&["--context", "a", "history", "--actions"]);
    assert!(table.contains("cert ops"), "{table}");
    // Both at once: one document keyed by context.
    let both: FleetJson =
        serde_json::from_str(&home.ctl_ok(&["--context", "a,b", "status", "--output", "json"]))
            .expect("fan-out JSON parses strictly");
    let scripts: Vec<String> = both
        .contexts
        .values()
        .map(|h| h.output.as_ref().expect("output")["scripts"][0]["name"].to_string())
        .collect();
    assert_eq!(scripts, ["\"alpha\"", "\"beta\""]);

    let list: ctl::context::ContextListJson =
        serde_json::from_str(&home.ctl_ok(&["context", "list", "--output", "json"]))
            .expect("list JSON parses strictly");
    assert_eq!(list.current.as_deref(), Some("b"));
    let names: Vec<&str> = list.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        list.contexts[0].endpoint,
        format!("https://127.0.0.1:{port_a}")
    );

    home.ctl_ok(&["context", "remove", "b"]);
    let r = home.ctl(&["--context", "b", "status"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("no context named \"b\""), "{}", r.stderr);
}

#[test]
fn refused_clients_are_told_why() {
    let home = ContextHome::new();
    let pki = Pki::new(&home.dir.path().join("pki"), "fleet");
    let other = Pki::new(&home.dir.path().join("pki"), "other");
    let (_env, _d, port) = tls_daemon(&pki, "    - { cert: viewer, role: read }\n", "alpha");
    home.add_tls("viewer", port, &pki.ca, Some(&pki.client("viewer")));
    home.add_tls("stranger", port, &pki.ca, Some(&pki.client("stranger")));
    home.add_tls("no-cert", port, &pki.ca, None);
    home.add_tls("wrong-ca", port, &pki.ca, Some(&other.client("viewer")));
    home.add_tls(
        "wrong-server-ca",
        port,
        &other.ca,
        Some(&pki.client("viewer")),
    );

    assert_eq!(script_of(&home, &["--context", "viewer"]), "alpha");
    let refused = |context: &str, args: &[&str], says: &str| {
        let mut all = vec!["--context", context];
        all.extend_from_slice(args);
        let r = home.ctl(&all);
        assert_eq!(r.code, 1, "{context}: {r:?}");
        assert!(r.stderr.contains(says), "{context}: {}", r.stderr);
        assert!(!r.stderr.contains("operation was canceled"), "{}", r.stderr);
    };
    refused(
        "viewer",
        &["reload"],
        "permission denied: the client certificate \"viewer\" has the read role; Reload needs \
         the operate role",
    );
    refused(
        "stranger",
        &["status"],
        "the client certificate \"stranger\" has no role on this scriptd",
    );
    refused("no-cert", &["status"], "requires a client certificate");
    refused(
        "wrong-ca",
        &["status"],
        "the daemon refused this client certificate",
    );
    refused(
        "wrong-server-ca",
        &["status"],
        "the daemon's certificate is not accepted",
    );

    // Something that is not a TLS server at the endpoint.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let plain_port = plain.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut conn in plain.incoming().flatten() {
            use std::io::Write;
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    home.add_tls("plain", plain_port, &pki.ca, Some(&pki.client("viewer")));
    refused("plain", &["status"], "the endpoint does not speak TLS");
}

#[test]
fn tcp_needs_tls_and_a_private_key() {
    let dir = ContextHome::new();
    let pki = Pki::new(&dir.dir.path().join("pki"), "fleet");
    let env = Env::new("  listen:\n    tcp: 127.0.0.1:7443\nscripts: {}\n");
    let r = env.check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stderr.contains("TLS is mandatory on TCP"), "{}", r.stderr);

    let env = Env::new(&format!(
        "{}scripts: {{}}\n",
        pki.listen_section(free_port())
    ));
    // The server key of the listen section is `fleet-scriptd.key`: readable by others, the
    // daemon refuses to start, as for any invalid config (exit 3), and `--check` says so.
    let key = dir.dir.path().join("pki/fleet-scriptd.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let check = env.check();
    assert_eq!(check.code, 3, "{check:?}");
    assert!(
        check.stderr.contains("can be read by other users"),
        "{check:?}"
    );
    let r = scriptd_exits(&env.config());
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains("can be read by other users") && r.stderr.contains("chmod 600"),
        "{}",
        r.stderr
    );
}

#[test]
fn fan_out_over_twenty_daemons_one_of_them_stopped() {
    let home = ContextHome::new();
    let started: Vec<(Env, Daemon)> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let env = Env::new(&format!(
                    "scripts:\n  job-{i:02}:\n    command: [\"/bin/sleep\", \"1000\"]\n"
                ));
                let d = env.start();
                (env, d)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("a daemon started"))
        .collect();
    for (i, (_, d)) in started.iter().enumerate() {
        home.ctl_ok(&[
            "context",
            "add",
            &format!("d-{i:02}"),
            "--endpoint",
            &format!("unix://{}", d.socket.display()),
        ]);
    }
    let mut started = started;
    // The 8th is stopped (its socket goes with it).
    let (_env7, d7) = started.remove(7);
    drop(d7);

    let r = home.ctl(&["--context", "d-*", "status", "--output", "json"]);
    assert_eq!(r.code, 1, "the worst exit code: {}", r.stderr);
    let doc: FleetJson = serde_json::from_str(&r.stdout).expect("fan-out JSON parses strictly");
    assert_eq!(doc.contexts.len(), 20);
    let failed: Vec<&String> = doc
        .contexts
        .iter()
        .filter(|(_, h)| h.error.is_some())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(failed, ["d-07"]);
    let down = &doc.contexts["d-07"];
    assert_eq!(down.exit_code, 1);
    assert!(
        down.error
            .as_deref()
            .is_some_and(|e| e.contains("cannot reach scriptd")),
        "{down:?}"
    );
    for (i, (name, host)) in doc.contexts.iter().enumerate().filter(|(i, _)| *i != 7) {
        assert_eq!(host.exit_code, 0, "{name}");
        let script = &host.output.as_ref().expect("a status")["scripts"][0]["name"];
        assert_eq!(script, &serde_json::json!(format!("job-{i:02}")), "{name}");
    }

    // The table: a group per host, the stopped one with its error.
    let r = home.ctl(&["--all-contexts", "status"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stdout.lines().filter(|l| l.starts_with("[d-")).count(),
        20
    );
    assert_eq!(r.stdout.matches("job-").count(), 19, "{}", r.stdout);
    let errors: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stdout);

    // What changes a daemon runs on one.
    let r = home.ctl(&["--context", "d-*", "restart", "job-00"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("name one context"), "{}", r.stderr);
}

/// `n` daemons with the watcher off, each running `base-I`, as contexts `h-1`.. in `home`.
fn manual_fleet(home: &ContextHome, n: usize) -> Vec<(Env, Daemon)> {
    let bodies = (1..=n)
        .map(|i| format!("scripts:\n  base-{i}:\n    command: [\"/bin/sleep\", \"1000\"]\n"))
        .collect();
    home.unix_fleet("h", bodies)
}

/// The running version and script names of `d`.
fn running(d: &Daemon) -> (u64, Vec<String>) {
    let s = d.status();
    (
        s.running_version,
        s.scripts.into_iter().map(|s| s.name).collect(),
    )
}

#[test]
fn a_rolling_reload_stops_at_the_host_that_rejects_and_can_undo() {
    let home = ContextHome::new();
    let fleet = manual_fleet(&home, 5);
    let versions: Vec<u64> = fleet.iter().map(|(_, d)| running(d).0).collect();
    // Every host gets a new script on disk; the 3rd's config is invalid.
    for (i, (env, _)) in fleet.iter().enumerate() {
        let extra = if i == 2 { "    bogus_key: 1\n" } else { "" };
        env.set_manual(&format!(
            "scripts:\n  base-{n}:\n    command: [\"/bin/sleep\", \"1000\"]\n  added:\n    \
             command: [\"/bin/sleep\", \"1000\"]\n{extra}",
            n = i + 1
        ));
    }
    let r = home.ctl(&[
        "--context",
        "h-*",
        "reload",
        "--rolling",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 3, "a rejected host: {r:?}");
    let doc: ctl::rolling::RollingJson =
        serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let results: Vec<&str> = doc.hosts.iter().map(|h| h.result.as_str()).collect();
    assert_eq!(
        results,
        ["applied", "applied", "rejected", "skipped", "skipped"]
    );
    assert!(
        doc.hosts[2].message.contains("bogus_key"),
        "{:?}",
        doc.hosts[2]
    );
    for (i, (_, d)) in fleet.iter().enumerate() {
        let (version, scripts) = running(d);
        let changed = i < 2;
        assert_eq!(
            scripts.contains(&"added".to_owned()),
            changed,
            "host {}",
            i + 1
        );
        assert_eq!(version != versions[i], changed, "host {}", i + 1);
        let reached = i < 3;
        assert_eq!(
            doc.hosts[i].before,
            reached.then_some(versions[i]),
            "host {}",
            i + 1
        );
    }

    // Hosts 1 and 2 get another change; with --undo-on-failure they are put back.
    for (i, (env, _)) in fleet.iter().enumerate().take(2) {
        env.set_manual(&format!(
            "scripts:\n  base-{n}:\n    command: [\"/bin/sleep\", \"1000\"]\n  second:\n    \
             command: [\"/bin/sleep\", \"1000\"]\n",
            n = i + 1
        ));
    }
    let before: Vec<(u64, Vec<String>)> = fleet.iter().map(|(_, d)| running(d)).collect();
    let r = home.ctl(&[
        "--context",
        "h-*",
        "reload",
        "--rolling",
        "--undo-on-failure",
    ]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("undone"), "{}", r.stdout);
    for (i, (_, d)) in fleet.iter().enumerate() {
        let (_, scripts) = running(d);
        assert_eq!(
            scripts,
            before[i].1,
            "host {} runs what it ran before",
            i + 1
        );
    }
    // The table: one row per host.
    for name in ["h-1", "h-2", "h-3", "h-4", "h-5"] {
        assert!(r.stdout.contains(name), "{}", r.stdout);
    }

    // `rollback --rolling`: hosts 1 and 2 each go back to their version before.
    let r = home.ctl(&[
        "--context",
        "h-1,h-2",
        "rollback",
        "--rolling",
        "--output",
        "json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc: ctl::rolling::RollingJson =
        serde_json::from_str(&r.stdout).expect("rolling JSON parses strictly");
    let results: Vec<&str> = doc.hosts.iter().map(|h| h.result.as_str()).collect();
    assert_eq!(results, ["applied", "applied"]);
    for (_, d) in fleet.iter().take(2) {
        assert!(
            running(d).1.contains(&"second".to_owned()),
            "the undone change is back"
        );
    }
}

#[test]
fn logs_follow_over_several_hosts_names_each_line_s_host() {
    let home = ContextHome::new();
    let marker = unique_marker("fleet-logs");
    let fleet: Vec<(Env, Daemon)> = ["east", "west"]
        .into_iter()
        .map(|host| {
            let env = Env::with_scripts(&[(
                "ticker",
                &format!("while true; do echo {marker}-{host}; sleep 0.1; done"),
                "",
            )]);
            let d = env.start();
            home.ctl_ok(&[
                "context",
                "add",
                host,
                "--endpoint",
                &format!("unix://{}", d.socket.display()),
            ]);
            (env, d)
        })
        .collect();
    let follower = Follower::spawn(&mut home.command(&[
        "--all-contexts",
        "logs",
        "-f",
        "-n",
        "0",
        "--raw",
        "ticker",
    ]));
    for host in ["east", "west"] {
        let lines = follower.until(&format!("{marker}-{host}"), host);
        let line = lines.last().expect("a line");
        assert_eq!(line, &format!("{host}  {marker}-{host}"), "the host column");
    }
    drop(follower);
    drop(fleet);
}

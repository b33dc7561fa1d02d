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

#[test]
fn completions_are_printed() {
    let (code, stdout, _) = ctl(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("_ctl()"),
        "{}",
        &stdout[..stdout.len().min(200)]
    );
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

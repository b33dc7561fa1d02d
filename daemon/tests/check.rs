//! `scriptd --check`: 0 for a valid config, 3 with every error for an invalid one.

use std::process::Command;

fn check(dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .arg("--check")
        .arg("--config")
        .arg(dir.join("scriptd.yaml"))
        .output()
        .expect("run scriptd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bundled_example_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, stdout, stderr) = check(&dir);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("OK (2 files, 3 scripts)"), "{stdout}");
}

#[test]
fn invalid_config_exits_3_with_every_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("scriptd.yaml"),
        "scripts:\n  a:\n    command: [/bin/true]\n    intervall: 5s\n  b:\n    command: /no/such/program\n    timeout: 30\n",
    )
    .expect("write config");
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 3, "stderr: {stderr}");
    assert!(
        stderr.contains("scriptd.yaml:4:5: scripts.a.intervall: unknown key \"intervall\"; did you mean \"interval\"?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("scriptd.yaml:7:14: scripts.b.timeout: invalid duration 30"),
        "{stderr}"
    );
    assert!(stderr.contains("is invalid (2 errors)"), "{stderr}");
}

#[test]
fn missing_config_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 3);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

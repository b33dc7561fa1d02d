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

#[test]
fn packaged_config_is_valid_and_agrees_with_the_unit() {
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    let (code, stdout, stderr) = check(&packaging.join("etc"));
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("OK (1 file, 1 script)"), "{stdout}");

    let read = |rel: &str| std::fs::read_to_string(packaging.join(rel)).expect(rel);
    let source = scriptd_common::config::read_source(&packaging.join("etc/scriptd.yaml"))
        .expect("read the packaged config");
    let cfg = scriptd_common::config::validate(&source).expect("valid");
    assert!(
        cfg.scripts.values().all(|s| !s.enabled),
        "a fresh install starts nothing"
    );

    // The unit creates the directories the config names, and points at the installed file.
    let unit = read("scriptd.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key}= in scriptd.service"))
            .to_owned()
    };
    let d = &cfg.daemon;
    let runtime = format!("/run/{}", setting("RuntimeDirectory"));
    assert_eq!(d.socket.parent(), Some(std::path::Path::new(&runtime)));
    assert_eq!(
        d.state_dir,
        std::path::Path::new("/var/lib").join(setting("StateDirectory"))
    );
    assert_eq!(
        d.log_dir,
        std::path::Path::new("/var/log").join(setting("LogsDirectory"))
    );
    let installed = "/etc/scriptd/scriptd.yaml";
    assert_eq!(setting("Type"), "notify");
    assert!(setting("ExecStart").contains(&format!("--config {installed}")));
    assert!(setting("ExecStartPre").contains(&format!("--check --config {installed}")));
    assert!(
        setting("ExecReload").contains(&format!("--socket {} reload", d.socket.display())),
        "ExecReload talks to the configured socket"
    );
    assert!(
        read("debian/install")
            .lines()
            .any(|l| l == "packaging/etc/scriptd.yaml etc/scriptd"),
        "the deb installs the config"
    );
    // The daemon (/usr/bin/scriptd) looks for its shim in ../libexec/scriptd/.
    let install = read("debian/install");
    assert!(install
        .lines()
        .any(|l| l == "target/dist-bin/scriptd usr/bin"));
    assert!(
        install
            .lines()
            .any(|l| l == "target/dist-bin/scriptd-shim usr/libexec/scriptd"),
        "the deb installs the shim where the daemon looks for it"
    );
}

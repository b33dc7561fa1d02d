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

/// A path that does not exist is a startup error (1), not an invalid config (3, which the
/// unit does not restart): the path is wrong, not the file.
#[test]
fn missing_config_exits_1_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = check(dir.path());
    assert_eq!(code, 1, "{stderr}");
    let path = dir.path().join("scriptd.yaml");
    assert!(
        stderr.contains(&format!("cannot read the config {}", path.display()))
            && stderr.contains("--config"),
        "{stderr}"
    );
}

/// Without `--config`, `./scriptd.yaml` (the packaged /etc/scriptd/scriptd.yaml only when
/// there is none; CI machines have none).
#[test]
fn without_config_the_one_in_the_working_directory_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("scriptd.yaml"), "scripts: {}\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .arg("--check")
        .current_dir(dir.path())
        .env_remove("SCRIPTD_CONFIG")
        .output()
        .expect("run scriptd");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.starts_with("scriptd.yaml: OK (1 file, 0 scripts)"),
        "{stdout}"
    );
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
    // debian/rules installs the config, the daemon and the shim where the unit and the
    // daemon (/usr/bin/scriptd looks for its shim in ../libexec/scriptd/) expect them;
    // packaging/check-deb.sh checks the built package itself.
    let rules = read("debian/rules");
    for (from, to) in [
        ("packaging/etc/scriptd.yaml", installed),
        ("dist-bin/scriptd", "/usr/bin/scriptd"),
        ("dist-bin/scriptd-shim", "/usr/libexec/scriptd/scriptd-shim"),
    ] {
        assert!(
            rules
                .lines()
                .any(|l| l.contains(from) && l.ends_with(&format!("debian/scriptd{to}"))),
            "debian/rules installs {from} as {to}"
        );
    }
}

/// `scriptd --check` on a temp dir holding `files` (name, text; `scriptd.yaml` is the main
/// file), after `prepare` has added what text cannot (FIFOs, symlinks).
fn check_files(
    files: &[(&str, &str)],
    prepare: impl FnOnce(&std::path::Path),
) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    prepare(dir.path());
    check(dir.path())
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
}

/// Hostile but small configs (issue 10 §3): each ends at once, exit 3, with the limit or the
/// problem named at a position. Before: 100,000 `[` took 37 s, `/proc/kmsg` and a FIFO never
/// ended, a `**` over a symlink loop walked 2^40 entries, and the YAML errors below had no
/// position.
#[test]
fn hostile_configs_are_refused_with_the_limit_and_a_position() {
    let laughs = {
        let mut t = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_owned();
        for (prev, name) in "abcdefgh".chars().zip("bcdefghi".chars()) {
            let refs = vec![format!("*{prev}"); 9].join(", ");
            t.push_str(&format!("{name}: &{name} [{refs}]\n"));
        }
        t
    };
    let deep = format!("scripts: {}", "[".repeat(100_000));
    let no_prep = |_: &std::path::Path| {};
    let cases: Vec<(&str, (i32, String, String), &str)> = vec![
        (
            "100,000 [",
            check_files(&[("scriptd.yaml", &deep)], no_prep),
            // `scripts:` is level 1; the 64th `[` opens level 65.
            "scriptd.yaml:1:73: invalid YAML: nested deeper than 64 levels (the limit",
        ),
        (
            "billion laughs",
            check_files(&[("scriptd.yaml", &laughs)], no_prep),
            "scriptd.yaml:6:8: invalid YAML: aliases expand to too many nodes",
        ),
        (
            "two documents",
            check_files(
                &[("scriptd.yaml", "scripts: {}\n---\nscripts: {}\n")],
                no_prep,
            ),
            "scriptd.yaml:2:1: invalid YAML: a second YAML document starts here",
        ),
        (
            "no final newline",
            check_files(
                &[("scriptd.yaml", "scripts:\n  a:\n    command: [x")],
                no_prep,
            ),
            "scriptd.yaml:3:16: invalid YAML: did not find expected ',' or ']'",
        ),
        (
            "include /proc/kmsg",
            check_files(&[("scriptd.yaml", "include: [\"/proc/kmsg\"]\n")], no_prep),
            "/proc/kmsg: refused /proc/kmsg: it is on procfs (/proc)",
        ),
        (
            "an included FIFO",
            check_files(&[("scriptd.yaml", "include: [\"*.yaml\"]\n")], |d| {
                mkfifo(&d.join("pipe.yaml"))
            }),
            "pipe.yaml: refused ",
        ),
        (
            "a FIFO as the main file",
            check_files(&[], |d| mkfifo(&d.join("scriptd.yaml"))),
            "scriptd.yaml: refused ",
        ),
        (
            "** over a symlink loop",
            check_files(&[("scriptd.yaml", "include: [\"l/**/*.yaml\"]\n")], |d| {
                std::fs::create_dir(d.join("l")).expect("mkdir");
                std::os::unix::fs::symlink(d.join("l"), d.join("l/a")).expect("symlink");
                std::os::unix::fs::symlink(d.join("l"), d.join("l/b")).expect("symlink");
            }),
            // The entry limit (100,000), or the time limit (5 s) on a slow machine.
            "scriptd.yaml: include \"l/**/*.yaml\": the include globs ",
        ),
    ];
    for (name, (code, _, stderr), want) in cases {
        assert_eq!(code, 3, "{name}: {stderr}");
        assert!(stderr.starts_with(want), "{name}: {stderr}");
    }
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let (code, stdout, stderr) = check_files(
        &[
            (
                "scriptd.yaml",
                "\u{feff}include: [\"more.yaml\"]\nscripts:\n  a:\n    command: [/bin/true]\n",
            ),
            (
                "more.yaml",
                "\u{feff}scripts: {b: {command: [/bin/true]}}\n",
            ),
        ],
        |_| {},
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK (2 files, 2 scripts)"), "{stdout}");
}

/// The shipped `scriptd(8)` is what `scriptd --man` renders (clap's options plus the script
/// fields from the field table): regenerate it with `packaging/generate.sh` after a change.
#[test]
fn the_shipped_man_page_is_the_generated_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_scriptd"))
        .arg("--man")
        .output()
        .expect("run scriptd --man");
    assert!(out.status.success());
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/man/scriptd.8");
    let shipped = std::fs::read(&shipped).expect("read packaging/man/scriptd.8");
    assert!(
        out.stdout == shipped,
        "packaging/man/scriptd.8 is stale: run packaging/generate.sh"
    );
    let page = String::from_utf8_lossy(&out.stdout);
    for field in scriptd_common::config::fields::FIELDS {
        assert!(
            page.contains(&field.name.replace('-', "\\-")),
            "{}",
            field.name
        );
    }
}

/// Each table of `scriptd(8)` (daemon/src/manual.rs) is in the README as it renders it.
#[test]
fn the_readme_carries_the_man_page_tables() {
    use scriptd::manual::{self, markdown};
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("read README.md");
    for (headings, rows) in [
        (("key", "meaning"), manual::CONFIG_KEYS),
        (("code", "meaning"), manual::EXIT_STATUS),
        (("signal", "what scriptd does"), manual::SIGNALS),
        (("variable", "meaning"), manual::ENVIRONMENT),
        (("path", "what it is"), manual::FILES),
    ] {
        let table = markdown(headings, rows);
        if std::env::var_os("PRINT_MAN_TABLES").is_some() {
            println!("{table}");
            continue;
        }
        assert!(
            readme.contains(&table),
            "README.md lacks this table of daemon/src/manual.rs (or has another version of \
             it):\n{table}"
        );
    }
}

//! Hostile but small configs: each is refused with an error naming the limit or the problem
//! at a `file:line:col` (or the file, for what is wrong with the file as a whole), and none
//! hangs or takes long (the tests assert on the errors; the cases that used to take minutes
//! or forever finish because the limits hold).

use scriptd_common::config::{limits, read_source, validate};
use std::path::Path;

/// A temp dir holding `files` (name, text); `scriptd.yaml` is the main file.
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Every error of reading and validating the config in `dir`, as printed.
fn errors_in(dir: &Path) -> Vec<String> {
    let result = read_source(&dir.join("scriptd.yaml")).and_then(|s| validate(&s).map(|_| ()));
    match result {
        Ok(()) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    errors_in(dir_with(files).path())
}

fn one_error(files: &[(&str, &str)]) -> String {
    let mut e = errors(files);
    assert_eq!(e.len(), 1, "{e:#?}");
    e.remove(0)
}

#[test]
fn deep_nesting_is_refused_at_its_position() {
    let e = one_error(&[("scriptd.yaml", &format!("scripts: {}", "[".repeat(100_000)))]);
    // `scripts:` is level 1; the 64th `[` opens level 65.
    assert!(
        e.starts_with("scriptd.yaml:1:73: invalid YAML: nested deeper than 64 levels"),
        "{e}"
    );
    // Block nesting counts too.
    let mut text = String::new();
    for level in 0..=limits::MAX_DEPTH {
        text.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
    }
    let e = one_error(&[("scriptd.yaml", &text)]);
    assert!(
        e.starts_with("scriptd.yaml:65:129: invalid YAML: nested deeper than 64 levels"),
        "{e}"
    );
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let e = errors(&[
        (
            "scriptd.yaml",
            "\u{feff}include: [\"scripts.d/*.yaml\"]\nscripts:\n  a:\n    command: [/bin/true]\n",
        ),
        (
            "scripts.d/b.yaml",
            "\u{feff}scripts:\n  b:\n    command: [/bin/true]\n",
        ),
    ]);
    assert_eq!(e, Vec::<String>::new());
    // Positions on the first line are an editor's (which does not show the mark).
    let e = one_error(&[(
        "scriptd.yaml",
        "\u{feff}scripts: {a: {command: [/bin/true], intervall: 5s}}\n",
    )]);
    assert!(
        e.starts_with("scriptd.yaml:1:37: scripts.a.intervall"),
        "{e}"
    );
}

#[test]
fn every_yaml_error_has_a_position() {
    let laughs = {
        let mut t = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_owned();
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            t.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(", ")
            ));
        }
        t
    };
    let cases: &[(&str, &str, &str)] = &[
        (
            "billion laughs",
            &laughs,
            "scriptd.yaml:6:8: invalid YAML: aliases expand to too many nodes",
        ),
        (
            "two documents",
            "scripts: {}\n---\nscripts: {}\n",
            "scriptd.yaml:2:1: invalid YAML: a second YAML document starts here",
        ),
        (
            "error at the end of a file without a final newline",
            "scripts:\n  a:\n    command: [/bin/true",
            "scriptd.yaml:3:24: invalid YAML: did not find expected ',' or ']'",
        ),
        (
            "the same with a final newline: the empty line after it",
            "scripts:\n  a:\n    command: [/bin/true\n",
            "scriptd.yaml:4:1: invalid YAML: did not find expected ',' or ']'",
        ),
    ];
    for (name, text, want) in cases {
        let e = one_error(&[("scriptd.yaml", text)]);
        assert!(e.starts_with(want), "{name}: {e}");
    }
}

#[test]
fn config_files_must_be_regular_files() {
    let dir = dir_with(&[("scriptd.yaml", "include: [\"conf.d/*.yaml\"]\n")]);
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("conf.d/pipe.yaml"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    assert_eq!(
        errors_in(dir.path()),
        [format!(
            "conf.d/pipe.yaml: refused {}/conf.d/pipe.yaml: it is a FIFO, not a regular \
             file; config files must be regular files",
            dir.path().display()
        )]
    );

    // The main file too: a FIFO without a writer is refused, not waited on.
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("scriptd.yaml");
    nix::unistd::mkfifo(&main, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let e = errors_in(dir.path());
    assert!(e[0].contains("it is a FIFO"), "{e:?}");

    // Devices, and the kernel's files that look regular.
    for (include, want) in [
        ("/dev/zero", "it is a character device"),
        ("/proc/kmsg", "it is on procfs (/proc)"),
        ("/proc/self/environ", "it is on procfs (/proc)"),
        ("/sys/kernel/uevent_seqnum", "it is on sysfs (/sys)"),
    ] {
        let e = one_error(&[("scriptd.yaml", &format!("include: [\"{include}\"]\n"))]);
        assert!(e.starts_with(&format!("{include}: refused")), "{e}");
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn reads_are_bounded() {
    let big = "#".repeat(limits::MAX_FILE_BYTES as usize);
    // One file: at most 1 MiB.
    let e = one_error(&[
        ("scriptd.yaml", "include: [\"conf.d/*.yaml\"]\n"),
        ("conf.d/big.yaml", &format!("{big}\n")),
    ]);
    assert!(
        e.starts_with("conf.d/big.yaml: refused") && e.contains("larger than 1 MiB, the limit"),
        "{e}"
    );
    // All files: at most 16 MiB.
    let dir = dir_with(&[("scriptd.yaml", "include: [\"conf.d/*.yaml\"]\n")]);
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    for i in 0..17 {
        std::fs::write(dir.path().join(format!("conf.d/{i:02}.yaml")), &big).unwrap();
    }
    let e = errors_in(dir.path());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("together are larger than 16 MiB (the limit)"),
        "{e:?}"
    );
}

#[test]
fn include_matches_are_bounded() {
    let dir = dir_with(&[("scriptd.yaml", "include: [\"conf.d/*.yaml\"]\n")]);
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    for i in 0..=limits::MAX_INCLUDE_MATCHES {
        std::fs::write(dir.path().join(format!("conf.d/{i}.yaml")), "").unwrap();
    }
    assert_eq!(
        errors_in(dir.path()),
        [
            "scriptd.yaml: include \"conf.d/*.yaml\": the include globs match more than 1000 \
          files (the limit); make them narrower or merge files"
        ]
    );
    std::fs::remove_file(dir.path().join("conf.d/0.yaml")).unwrap();
    assert_eq!(errors_in(dir.path()), Vec::<String>::new(), "1000 are fine");
}

#[test]
fn the_include_walk_is_bounded() {
    // Two links to their own directory: `**` would walk 2^40 entries before the kernel's
    // ELOOP stops it.
    let dir = dir_with(&[("scriptd.yaml", "include: [\"loops/**/*.yaml\"]\n")]);
    let loops = dir.path().join("loops");
    std::fs::create_dir(&loops).unwrap();
    std::os::unix::fs::symlink(&loops, loops.join("a")).unwrap();
    std::os::unix::fs::symlink(&loops, loops.join("b")).unwrap();
    let e = errors_in(dir.path());
    // The entry limit (100,000), or the time limit (5 s) on a slow machine.
    assert!(
        e.len() == 1
            && e[0].starts_with("scriptd.yaml: include \"loops/**/*.yaml\": the include globs ")
            && e[0].contains(" (the limit); make them narrower"),
        "{e:?}"
    );
}

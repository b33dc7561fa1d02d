//! `validate_cached`: the same result as a whole validation, always (configs equal, errors
//! the same with the same positions), over edits of single scripts, of the defaults, of the
//! machine, and over texts the cut into pieces must not be fooled by.

use proptest::prelude::*;
use scriptd_common::config::{
    validate_cached_with, validate_with, Account, Config, ConfigErrors, ConfigSource, Host, Stat,
    ValidationCache,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `/srv` and `/tmp` are directories, `/bin/*` executable files, except what `missing`
/// lists; users exist unless listed there too (by name).
#[derive(Default)]
struct Machine {
    missing: BTreeSet<String>,
}

impl Host for Machine {
    fn stat(&mut self, path: &Path) -> Stat {
        let p = path.to_string_lossy();
        if self.missing.contains(p.as_ref()) {
            return Stat::Missing;
        }
        match p.as_ref() {
            "/srv" | "/tmp" => Stat::Dir,
            p if p.starts_with("/bin/") => Stat::File(0o755),
            _ => Stat::Missing,
        }
    }

    fn lookup(&mut self, name: &str, _group: bool) -> Result<u32, String> {
        if self.missing.contains(name) {
            Err(format!("no group {name:?}"))
        } else {
            Ok(100)
        }
    }

    fn search_path(&self) -> Option<String> {
        Some("/usr/bin:/bin".into())
    }

    fn user(&mut self, spec: &str) -> Result<Account, String> {
        if self.missing.contains(spec) {
            return Err(format!("no user named {spec:?}"));
        }
        Ok(Account {
            name: spec.into(),
            uid: 1000 + spec.len() as u32,
            gid: 100,
        })
    }
}

fn source(files: &[(&str, &str)]) -> ConfigSource {
    ConfigSource::of_texts(PathBuf::from("/srv/scriptd.yaml"), files)
}

/// A config or its errors as text (positions included).
fn outcome(r: Result<Config, ConfigErrors>) -> Result<Config, Vec<String>> {
    r.map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// Validates `src` with `cache` and checks it against a whole validation.
fn check(
    src: &ConfigSource,
    machine: &mut Machine,
    cache: &mut ValidationCache,
) -> Result<Config, Vec<String>> {
    let cached = outcome(validate_cached_with(src, machine, cache));
    let whole = outcome(validate_with(src, machine));
    assert_eq!(cached, whole, "{:#?}", src.files);
    cached
}

const BASE: &str = "daemon:\n  socket: run/s.sock\ndefaults:\n  stop_grace: 2s\nscripts:\n";

#[test]
fn an_unchanged_script_is_the_same_arc_and_a_changed_one_is_new() {
    let text = |g: u32| {
        format!(
            "{BASE}  a:\n    command: [\"/bin/true\"]\n    interval: 1h\n  b:\n    command: sleep 9\n    env: {{ G: \"{g}\" }}\n  c:\n    command: [\"/bin/echo\", \"x\"]\n"
        )
    };
    let mut m = Machine::default();
    let mut cache = ValidationCache::default();
    let one = check(&source(&[("scriptd.yaml", &text(1))]), &mut m, &mut cache).expect("valid");
    assert_eq!(cache.len(), 3);
    let two = check(&source(&[("scriptd.yaml", &text(2))]), &mut m, &mut cache).expect("valid");
    assert!(
        Arc::ptr_eq(&one.scripts["a"], &two.scripts["a"]),
        "a reused"
    );
    assert!(
        Arc::ptr_eq(&one.scripts["c"], &two.scripts["c"]),
        "c reused"
    );
    assert!(
        !Arc::ptr_eq(&one.scripts["b"], &two.scripts["b"]),
        "b validated again"
    );
    assert_eq!(two.scripts["b"].env["G"], "2");

    // The machine changed under an unchanged script: its program is gone.
    m.missing.insert("/bin/echo".into());
    let gone = check(&source(&[("scriptd.yaml", &text(3))]), &mut m, &mut cache);
    assert!(gone.is_err(), "{gone:?}");
    m.missing.clear();
    let three = check(&source(&[("scriptd.yaml", &text(3))]), &mut m, &mut cache).expect("valid");
    assert!(
        Arc::ptr_eq(&two.scripts["a"], &three.scripts["a"]),
        "the cache outlived the error"
    );

    // New defaults: every script validated again, under them.
    let other = text(3).replace("stop_grace: 2s", "stop_grace: 3s");
    let four = check(&source(&[("scriptd.yaml", &other)]), &mut m, &mut cache).expect("valid");
    assert!(!Arc::ptr_eq(&three.scripts["a"], &four.scripts["a"]));
    assert_eq!(
        four.scripts["a"].stop_grace,
        std::time::Duration::from_secs(3)
    );
}

#[test]
fn included_files_that_did_not_change_are_reused() {
    let main = "include: [\"conf.d/*.yaml\"]\ndefaults:\n  stop_grace: 2s\n";
    let a = "scripts:\n  a:\n    command: [\"/bin/true\"]\n";
    let mut m = Machine::default();
    let mut cache = ValidationCache::default();
    let one = check(
        &source(&[
            ("scriptd.yaml", main),
            ("conf.d/a.yaml", a),
            ("conf.d/b.yaml", "scripts:\n  b:\n    command: sleep 1\n"),
        ]),
        &mut m,
        &mut cache,
    )
    .expect("valid");
    let two = check(
        &source(&[
            ("scriptd.yaml", main),
            ("conf.d/a.yaml", a),
            ("conf.d/b.yaml", "scripts:\n  b:\n    command: sleep 2\n"),
        ]),
        &mut m,
        &mut cache,
    )
    .expect("valid");
    assert!(Arc::ptr_eq(&one.scripts["a"], &two.scripts["a"]));
    // A script moved to another file is validated there again, and still equal.
    let three = check(
        &source(&[
            ("scriptd.yaml", main),
            ("conf.d/b.yaml", &format!("{a}  b:\n    command: sleep 2\n")),
        ]),
        &mut m,
        &mut cache,
    )
    .expect("valid");
    assert_eq!(three.scripts["a"], two.scripts["a"]);
}

/// Texts the cut must not be fooled by, each checked cold and warm (after a valid config
/// whose scripts have the same names).
#[test]
fn texts_that_cross_the_cuts_give_the_whole_validation() {
    let texts = [
        // A quoted scalar over lines, crossing into the next script's column.
        "scripts:\n  a:\n    command: \"/bin/true\n  b: x\"\n",
        "scripts:\n  a:\n    command: '/bin/true\n  b: {command: sleep}'\n  c:\n    command: sleep 1\n",
        "daemon:\n  socket: \"x\nscripts:\n  a:\n    command: sleep 1\n\"\n",
        // Flow collections over lines.
        "scripts:\n  a: {command: [\"/bin/true\",\n  \"x\"]}\n",
        // Anchors: used in another script, redefined.
        "scripts:\n  a:\n    command: &c [\"/bin/true\"]\n  b:\n    command: *c\n",
        "scripts:\n  a:\n    command: &c [\"/bin/true\"]\n    env: &e {A: \"1\"}\n  b:\n    command: *c\n    env: *e\n",
        "defaults: &d\n  stop_grace: 1s\nscripts:\n  a:\n    command: [\"/bin/true\"]\nreload: *d\n",
        // Block scalars, keep chomping, comments at column 0 inside.
        "scripts:\n  a:\n    command: |+\n      echo a\n\n# c\n\n  b:\n    command: >\n      sleep\n      1\n",
        // Two documents; a directive; a tab.
        "scripts:\n  a:\n    command: sleep 1\n---\nreload: {}\n",
        "scripts:\n  a:\n    command: sleep 1\n--- \n",
        "scripts:\n  a:\n    command: sleep 1\n%YAML 1.2\n---\n",
        "scripts:\n  a:\n    command: [\"/bin/true\"]\n...\n",
        "scripts:\n  a:\n\tcommand: sleep 1\n",
        "scripts:\n  a:\n    command: sleep 1\n\t\n  b:\n    command: sleep 1\n",
        // Names repeated, within the scripts, as keys of another type, across files.
        "scripts:\n  a:\n    command: [\"/bin/true\"]\n  a:\n    command: [\"/bin/true\"]\n",
        "scripts:\n  1:\n    command: [\"/bin/true\"]\n  \"1\":\n    command: [\"/bin/true\"]\n",
        "scripts:\n  true:\n    command: [\"/bin/true\"]\n  True:\n    command: [\"/bin/true\"]\n",
        // Top-level keys repeated between the head and the tail; `scripts` twice.
        "reload: {}\nscripts:\n  a:\n    command: [\"/bin/true\"]\nreload: {}\n",
        "scripts:\n  a:\n    command: [\"/bin/true\"]\nscripts:\n  b:\n    command: [\"/bin/true\"]\n",
        "scripts: {}\nscripts:\n  b:\n    command: [\"/bin/true\"]\n",
        // Lines between the columns, a value at the scripts' column.
        "scripts:\n    a:\n      command: sleep 1\n  b:\n    command: sleep 1\n",
        "scripts:\n  a:\n  - x\n",
        "scripts:\n  a: {command: sleep 1}\n   b: 1\n",
        "scripts:\n  a:\n    command: sleep\n  1\n",
        // Errors inside a piece, and an invalid name.
        "scripts:\n  a:\n    command: [\"/bin/nope\"]\n  b:\n    interval: 1h\n",
        "scripts:\n  a-:\n    command: x\n  -b:\n    command: y\n",
        "scripts:\n  null:\n    command: x\n",
        // Deep nesting inside one script.
        &format!("scripts:\n  a:\n    command: x\n    env: {}{}\n", "[".repeat(62), "]".repeat(62)),
        &format!("scripts:\n  a:\n    command: x\n    env: {}{}\n", "[".repeat(61), "]".repeat(61)),
        // A byte-order mark; Windows line ends; no final newline.
        "\u{feff}scripts:\n  a:\n    command: [\"/bin/true\"]\n",
        "scripts:\r\n  a:\r\n    command: [\"/bin/true\"]\r\n  b:\r\n    command: sleep 1",
        // Fine as they are.
        "scripts:\n  # a comment\n  a:\n    command: [\"/bin/true\"] # c\n\n  b: {command: sleep 1, interval: 1m}\nreload:\n  verify: 2s\n",
        "---\nscripts:\n  a:\n    command: [\"/bin/true\"]\n",
    ];
    let warm = "scripts:\n  a:\n    command: [\"/bin/true\"]\n  b:\n    command: sleep 1\n  1:\n    command: sleep 1\n  true:\n    command: sleep 1\n";
    for text in texts {
        let mut m = Machine::default();
        let mut cold = ValidationCache::default();
        let _ = check(&source(&[("scriptd.yaml", text)]), &mut m, &mut cold);
        let mut cache = ValidationCache::default();
        check(&source(&[("scriptd.yaml", warm)]), &mut m, &mut cache).expect("valid");
        let _ = check(&source(&[("scriptd.yaml", text)]), &mut m, &mut cache);
        check(&source(&[("scriptd.yaml", warm)]), &mut m, &mut cache).expect("valid");
    }
}

/// One script in one of several styles.
fn arb_script() -> impl Strategy<Value = String> {
    let program = prop::sample::select(vec!["/bin/true", "/bin/echo", "/bin/gone", "true", "echo"]);
    let dir = prop::option::of(prop::sample::select(vec!["/srv", "/tmp", "/opt"]));
    let env = prop::option::of(prop::collection::btree_map("[A-C]", "[a-c0-9]{0,3}", 0..3));
    let user = prop::option::of(prop::sample::select(vec!["alice", "bob", "mallory"]));
    (
        program,
        dir,
        env,
        user,
        0..5usize,
        prop::option::of(1u32..5),
    )
        .prop_map(|(program, dir, env, user, style, interval)| {
            let mut body = match style {
                0 => format!("    command: [\"{program}\", \"x\"]\n"),
                1 => format!("    command: {program} x # a comment\n"),
                2 => format!("    command: |\n      {program} x\n\n"),
                3 => format!("    command: \"{program}\n      x\"\n"),
                _ => format!("    command: [\"{program}\",\n      \"x\"]\n"),
            };
            if let Some(d) = dir {
                body += &format!("    working_dir: {d}\n");
            }
            if let Some(env) = env {
                let items: Vec<String> = env.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
                body += &format!("    env: {{ {} }}\n", items.join(", "));
            }
            if let Some(u) = user {
                body += &format!("    user: {u}\n");
            }
            if let Some(i) = interval {
                body += &format!("    interval: {i}m\n");
            }
            body
        })
}

/// An edit of the config between two validations.
#[derive(Debug, Clone)]
enum Edit {
    /// Script `i` (modulo their number) gets a new body.
    Body(usize, String),
    /// A script added under a name from a small pool (which may repeat one).
    Add(usize, String),
    Remove(usize),
    /// `defaults:` set to this `stop_grace` (seconds; 0: no defaults).
    Defaults(u32),
    /// A path or user the machine loses, or gets back.
    Machine(&'static str),
    /// A line of text inserted before script `i`'s lines.
    Line(usize, &'static str),
    /// The scripts split over an included file, or back into one.
    Split(bool),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), arb_script()).prop_map(|(i, s)| Edit::Body(i, s)),
        2 => (0..12usize, arb_script()).prop_map(|(i, s)| Edit::Add(i, s)),
        1 => any::<usize>().prop_map(Edit::Remove),
        1 => (0..3u32).prop_map(Edit::Defaults),
        1 => prop::sample::select(vec!["/bin/true", "/bin/echo", "/srv", "alice", "/usr/bin/echo"]).prop_map(Edit::Machine),
        1 => (any::<usize>(), prop::sample::select(vec!["  # c\n", "\n", "junk\n", "  - x\n", "    deeper: 1\n", "---\n", "  x: &a 1\n", "  y: *a\n"])).prop_map(|(i, l)| Edit::Line(i, l)),
        1 => any::<bool>().prop_map(Edit::Split),
    ]
}

/// The config as files: the main file (with `defaults` and, unsplit, every script) and, split,
/// an included file with the second half of the scripts.
fn files(scripts: &[(String, String)], defaults: u32, split: bool) -> Vec<(String, String)> {
    let mut main = String::from("daemon:\n  socket: run/s.sock\n");
    if split {
        main += "include: [\"conf.d/*.yaml\"]\n";
    }
    if defaults > 0 {
        main += &format!("defaults:\n  stop_grace: {defaults}s\n");
    }
    let half = if split {
        scripts.len() / 2
    } else {
        scripts.len()
    };
    let body = |s: &[(String, String)]| -> String {
        let mut t = String::from("scripts:\n");
        for (name, text) in s {
            t += name;
            t += text;
        }
        t
    };
    main += &body(&scripts[..half]);
    main += "reload:\n  verify: 5s\n";
    let mut out = vec![("scriptd.yaml".to_owned(), main)];
    if split {
        out.push(("conf.d/b.yaml".to_owned(), body(&scripts[half..])));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Over random edits, the cached validation gives what the whole one gives.
    #[test]
    fn the_cached_validation_is_the_whole_one(
        start in prop::collection::vec(arb_script(), 1..8),
        edits in prop::collection::vec(arb_edit(), 1..12),
    ) {
        let mut scripts: Vec<(String, String)> = start
            .into_iter()
            .enumerate()
            .map(|(i, body)| (format!("  s{i}:\n"), body))
            .collect();
        let (mut defaults, mut split) = (2, false);
        let mut m = Machine::default();
        let mut cache = ValidationCache::default();
        let run = |scripts: &[(String, String)], defaults, split, m: &mut Machine, cache: &mut ValidationCache| {
            let files = files(scripts, defaults, split);
            let refs: Vec<(&str, &str)> = files.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
            let _ = check(&source(&refs), m, cache);
        };
        run(&scripts, defaults, split, &mut m, &mut cache);
        for edit in edits {
            let n = scripts.len().max(1);
            match edit {
                Edit::Body(i, body) => {
                    if let Some(s) = scripts.get_mut(i % n) {
                        s.1 = body;
                    }
                }
                Edit::Add(i, body) => scripts.push((format!("  s{i}:\n"), body)),
                Edit::Remove(i) => {
                    if !scripts.is_empty() {
                        scripts.remove(i % n);
                    }
                }
                Edit::Defaults(d) => defaults = d,
                Edit::Machine(what) => {
                    if !m.missing.remove(what) {
                        m.missing.insert(what.to_owned());
                    }
                }
                Edit::Line(i, line) => {
                    if let Some(s) = scripts.get_mut(i % n) {
                        s.0.insert_str(0, line);
                    }
                }
                Edit::Split(s) => split = s,
            }
            run(&scripts, defaults, split, &mut m, &mut cache);
        }
    }
}

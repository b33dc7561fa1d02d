//! Table-driven tests of config validation (DESIGN.md "Configuration"): every error names
//! file, line, column and key path, every error is reported at once, and a valid config
//! yields the effective values with defaults applied.

use proptest::prelude::*;
use scriptd_common::config::{
    load, validate, validate_with, Backoff, CommandSpec, ConfigFile, ConfigSource, ExecContext,
    Host, RestartPolicy, ScriptConfig, Stat, StopSignal, DUPLICATES_LISTED,
};
use scriptd_common::diff::script_fields;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

const MAIN: &str = "scriptd.yaml";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A config directory in a tempdir.
struct Dir(TempDir);

impl Dir {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("create tempdir"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// The tempdir path as text, substituted for `{dir}` in YAML and expected messages.
    fn text(&self) -> String {
        self.path().display().to_string()
    }

    fn main(&self) -> PathBuf {
        self.path().join(MAIN)
    }

    /// Writes `content` (with `{dir}` replaced) to `name`, creating parent directories.
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directory");
        }
        std::fs::write(&path, content.replace("{dir}", &self.text())).expect("write file");
        path
    }

    /// Writes a file and sets its mode.
    fn write_mode(&self, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = self.write(name, content);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn mkdir(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::create_dir_all(&path).expect("create directory");
        path
    }

    /// Writes `files` (main file first) and loads the config from disk; returns the
    /// rendered errors, empty when it is valid.
    fn load_errors(&self, files: &[(&str, &str)]) -> Vec<String> {
        for (name, content) in files {
            self.write(name, content);
        }
        match load(&self.main()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    /// Validates `yaml` as the main file in memory (the main path is inside the tempdir,
    /// so the default working_dir exists); returns the rendered errors.
    fn validate_errors(&self, yaml: &str) -> Vec<String> {
        let source = ConfigSource {
            main: self.main(),
            files: vec![ConfigFile {
                name: MAIN.into(),
                content: yaml.replace("{dir}", &self.text()),
            }],
        };
        match validate(&source) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Asserts `got` matches `want` one to one, in order. A wanted message ending in `...` is a
/// prefix; `{dir}` stands for the config directory.
fn assert_errors(case: &str, dir: &Dir, got: &[String], want: &[&str]) {
    let want: Vec<String> = want
        .iter()
        .map(|w| w.replace("{dir}", &dir.text()))
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "case {case:?}: expected {} error(s), got {}:\n  {}\nwanted:\n  {}",
        want.len(),
        got.len(),
        got.join("\n  "),
        want.join("\n  "),
    );
    for (g, w) in got.iter().zip(&want) {
        match w.strip_suffix("...") {
            Some(prefix) => assert!(
                g.starts_with(prefix),
                "case {case:?}:\n  got:    {g}\n  wanted: {w}"
            ),
            None => assert_eq!(g, w, "case {case:?}"),
        }
    }
}

/// One in-memory case: a name, the main file's YAML, and the expected errors.
type Case = (&'static str, &'static str, &'static [&'static str]);

fn run_cases(cases: &[Case]) {
    let dir = Dir::new();
    for (name, yaml, want) in cases {
        let got = dir.validate_errors(yaml);
        assert_errors(name, &dir, &got, want);
    }
}

// ---------------------------------------------------------------------------------------
// A valid config
// ---------------------------------------------------------------------------------------

const DESIGN_MAIN: &str = r#"daemon:
  socket: run/scriptd.sock
  state_dir: state
  log_dir: /var/log/scriptd-test
  debounce: 250ms
  watch: false
  metrics: "[::1]:9464"
include: ["scripts.d/*.yaml"]
defaults:
  timeout: 10m
  max_log_lines: 20000
  stop_grace: 15s
  log: { max_bytes: 20MiB, keep: 5, max_line_bytes: 32KiB }
scripts:
  backup:
    command: ["{dir}/bin/backup.sh", "--full"]
    interval: 5m
    timeout: 2m
    enabled: true
    working_dir: {dir}/srv
    env: { RETENTION: "7" }
    max_log_lines: 5000
  web:
    command: "python3 -m http.server 8080"
    restart: on-failure
    stop_signal: TERM
    stop_grace: 5s
"#;

const DESIGN_DB: &str = r#"scripts:
  db:
    command: [sh, -c, "echo dump"]
    interval: 1h
    enabled: false
    log: { keep: 1 }
"#;

#[test]
fn valid_design_example_loads_with_effective_values() {
    let dir = Dir::new();
    dir.write_mode("bin/backup.sh", "#!/bin/sh\nexit 0\n", 0o755);
    dir.mkdir("srv");
    dir.write("scriptd.yaml", DESIGN_MAIN);
    dir.write("scripts.d/db.yaml", DESIGN_DB);
    dir.write("scripts.d/notes.txt", "not yaml: [ and not included\n");
    // Dotfiles are never included: an editor's swap file, Ansible's temp file mid-save.
    dir.write("scripts.d/.db.yaml.swp", "not yaml: [ and not included\n");
    dir.write(
        "scripts.d/.ansible_tmpXa.yaml",
        "not yaml: [ and not included\n",
    );
    let base = dir.path();

    let (source, config) = match load(&dir.main()) {
        Ok(loaded) => loaded,
        Err(e) => panic!("the DESIGN.md example should load, got:\n{e}"),
    };

    // Files: main first, then the included ones; the glob matches neither notes.txt nor
    // the dotfiles.
    let names: Vec<_> = source.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["scriptd.yaml", "scripts.d/db.yaml"]);
    assert_eq!(source.main, dir.main());

    // Daemon: relative paths resolved against the main file's directory.
    let d = &config.daemon;
    assert_eq!(d.socket, base.join("run/scriptd.sock"));
    assert_eq!(d.state_dir, base.join("state"));
    assert_eq!(d.log_dir, PathBuf::from("/var/log/scriptd-test"));
    assert_eq!(d.debounce, Duration::from_millis(250));
    assert!(!d.watch);
    assert_eq!(d.history_limit, 100, "builtin history_limit");
    assert_eq!(d.metrics, "[::1]:9464".parse().ok());

    let names: Vec<_> = config.scripts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["backup", "db", "web"],
        "included scripts are present"
    );

    // backup: its own values win over defaults.
    let backup = &config.scripts["backup"];
    assert_eq!(
        backup.command,
        CommandSpec::Argv(vec![
            format!("{}/bin/backup.sh", dir.text()),
            "--full".into()
        ])
    );
    assert!(backup.is_periodic());
    assert_eq!(backup.interval, Some(Duration::from_secs(300)));
    assert_eq!(backup.timeout, Some(Duration::from_secs(120)));
    assert!(backup.enabled);
    assert_eq!(backup.working_dir, base.join("srv"));
    assert_eq!(backup.env.get("RETENTION").map(String::as_str), Some("7"));
    assert_eq!(backup.max_log_lines, 5000);
    assert_eq!(backup.stop_grace, Duration::from_secs(15), "inherited");
    assert_eq!(backup.log.max_bytes, 20 << 20, "inherited");
    assert_eq!(backup.log.keep, 5, "inherited");
    assert_eq!(backup.log.max_line_bytes, 32 << 10, "inherited");

    // web: a service with a shell command; defaults inherited where it sets nothing.
    let web = &config.scripts["web"];
    assert_eq!(
        web.command,
        CommandSpec::Shell("python3 -m http.server 8080".into())
    );
    assert_eq!(web.argv(), ["/bin/sh", "-c", "python3 -m http.server 8080"]);
    assert!(!web.is_periodic());
    assert_eq!(
        web.timeout, None,
        "defaults.timeout is for periodic scripts; a service has none"
    );
    assert_eq!(web.max_log_lines, 20000, "inherited");
    assert_eq!(web.stop_grace, Duration::from_secs(5), "its own");
    assert_eq!(web.restart, RestartPolicy::OnFailure);
    assert_eq!(web.stop_signal, StopSignal::TERM);
    assert_eq!(
        web.working_dir, base,
        "working_dir defaults to the config directory"
    );
    assert!(web.enabled, "enabled defaults to true");
    assert!(web.env.is_empty());

    // db: from the included file; log.keep overridden, the rest inherited.
    let db = &config.scripts["db"];
    assert_eq!(db.argv(), ["sh", "-c", "echo dump"]);
    assert_eq!(db.interval, Some(Duration::from_secs(3600)));
    assert_eq!(db.timeout, Some(Duration::from_secs(600)));
    assert!(!db.enabled);
    assert_eq!(db.working_dir, base);
    assert_eq!(db.log.keep, 1);
    assert_eq!(db.log.max_bytes, 20 << 20);
    assert_eq!(db.log.max_line_bytes, 32 << 10);
    assert_eq!(db.max_log_lines, 20000);
    assert_eq!(db.stop_signal, StopSignal::TERM);
}

#[test]
fn minimal_config_uses_builtin_defaults() {
    let dir = Dir::new();
    dir.write("scriptd.yaml", "scripts:\n  a:\n    command: \"true\"\n");
    let (_, config) = match load(&dir.main()) {
        Ok(loaded) => loaded,
        Err(e) => panic!("minimal config should load, got:\n{e}"),
    };
    let d = &config.daemon;
    assert_eq!(d.socket, dir.path().join("run/scriptd.sock"));
    assert_eq!(d.state_dir, dir.path().join("state"));
    assert_eq!(d.log_dir, dir.path().join("logs"));
    assert_eq!(d.debounce, Duration::from_millis(50));
    assert!(d.watch);
    assert_eq!(d.metrics, None, "metrics are off by default");
    let a = &config.scripts["a"];
    assert_eq!(a.timeout, None);
    assert_eq!(a.interval, None);
    assert_eq!(a.max_log_lines, 10_000);
    assert_eq!(a.stop_grace, Duration::from_secs(10));
    assert_eq!(a.restart, RestartPolicy::OnFailure);
    assert_eq!(a.stop_signal, StopSignal::TERM);
    assert_eq!(a.log.max_bytes, 10 << 20);
    assert_eq!(a.log.keep, 3);
    assert_eq!(a.log.max_line_bytes, 64 << 10);
    assert_eq!(a.backoff, Backoff::default());
    assert_eq!(a.backoff.delay, Duration::from_millis(500));
    assert_eq!(a.backoff.max_delay, Duration::from_secs(30));
    assert_eq!(a.backoff.reset_after, Duration::from_secs(10));
}

#[test]
fn empty_main_file_is_an_empty_config() {
    let dir = Dir::new();
    assert_errors("empty file", &dir, &dir.validate_errors(""), &[]);
}

// ---------------------------------------------------------------------------------------
// One error per case, in memory
// ---------------------------------------------------------------------------------------

#[test]
fn yaml_syntax_errors() {
    run_cases(&[
        (
            "unclosed flow list",
            "scripts:\n  a:\n    command: [true\n",
            &["scriptd.yaml:4:1: invalid YAML: did not find expected ',' or ']'"],
        ),
        (
            "bad indentation",
            "scripts:\n  a:\n    command: x\n   interval: 5m\n",
            &["scriptd.yaml:4:4: invalid YAML: ..."],
        ),
        (
            "duplicate key in one mapping",
            "scripts:\n  a:\n    command: \"true\"\n  a:\n    command: \"true\"\n",
            &["scriptd.yaml:2:3: invalid YAML: scripts: duplicate entry with key \"a\""],
        ),
        (
            "top level is not a mapping",
            "- a\n- b\n",
            &["scriptd.yaml:1:1: the file must be a mapping (key: value), found a list"],
        ),
    ]);
}

#[test]
fn unknown_keys() {
    run_cases(&[
        (
            "top-level typo",
            "sripts:\n  a:\n    command: \"true\"\n",
            &["scriptd.yaml:1:1: sripts: unknown key \"sripts\"; did you mean \"scripts\"?"],
        ),
        (
            "top-level, no close match",
            "foo: 1\n",
            &["scriptd.yaml:1:1: foo: unknown key \"foo\"; expected one of: daemon, include, \
               defaults, scripts, reload"],
        ),
        (
            "script key typo",
            "scripts:\n  a:\n    command: \"true\"\n    intervall: 5m\n",
            &["scriptd.yaml:4:5: scripts.a.intervall: unknown key \"intervall\"; did you mean \
               \"interval\"?"],
        ),
        (
            "reload section",
            "reload:\n  verify: 0s\n  on_failure: undo\n  verfy: 1s\n",
            &[
                "scriptd.yaml:2:11: reload.verify: ...",
                "scriptd.yaml:3:15: reload.on_failure: invalid on_failure \"undo\"; use rollback \
                 (go back to the previous version) or keep (keep the new version and report)",
                "scriptd.yaml:4:3: reload.verfy: unknown key \"verfy\"; did you mean \"verify\"?...",
            ],
        ),
        (
            "script key, no close match",
            "scripts:\n  a:\n    command: \"true\"\n    frobnicate: 1\n",
            &["scriptd.yaml:4:5: scripts.a.frobnicate: unknown key \"frobnicate\"; expected one \
               of: command, interval, timeout, enabled, working_dir, env, max_log_lines, \
               restart, restart_delay, restart_delay_max, restart_reset_after, ready_after, \
               stop_signal, stop_grace, log, ..."],
        ),
        (
            "daemon key typo",
            "daemon:\n  sockett: run/s.sock\n",
            &["scriptd.yaml:2:3: daemon.sockett: unknown key \"sockett\"; did you mean \
               \"socket\"?"],
        ),
        (
            "script log key typo",
            "scripts:\n  a:\n    command: \"true\"\n    log:\n      max_byte: 1MiB\n",
            &["scriptd.yaml:5:7: scripts.a.log.max_byte: unknown key \"max_byte\"; did you mean \
               \"max_bytes\"?"],
        ),
        (
            "defaults log key, flow style",
            "defaults:\n  log: { kept: 3 }\n",
            &["scriptd.yaml:2:10: defaults.log.kept: unknown key \"kept\"; did you mean \"keep\"?"],
        ),
        (
            "interval is not a default",
            "defaults:\n  interval: 5m\n",
            &["scriptd.yaml:2:3: defaults.interval: unknown key \"interval\"; ..."],
        ),
    ]);
}

#[test]
fn durations() {
    run_cases(&[
        (
            "misspelled unit",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 5 minuets\n",
            &["scriptd.yaml:4:15: scripts.a.interval: invalid duration \"5 minuets\" ..."],
        ),
        (
            "bare number",
            "scripts:\n  a:\n    command: \"true\"\n    timeout: 30\n",
            &["scriptd.yaml:4:14: scripts.a.timeout: invalid duration 30: add a unit, e.g. \
               \"30s\" or \"30ms\""],
        ),
        (
            "bare number in daemon",
            "daemon:\n  debounce: 50\n",
            &["scriptd.yaml:2:13: daemon.debounce: invalid duration 50: add a unit, e.g. \"50s\" \
               or \"50ms\""],
        ),
        (
            "metrics address with a host name",
            "daemon:\n  metrics: localhost:9464\n",
            &["scriptd.yaml:2:12: daemon.metrics: invalid address \"localhost:9464\": use \
               IP:PORT, e.g. 127.0.0.1:9464 (loopback) or [::1]:9464; host names are not resolved"],
        ),
        (
            "metrics address as a number",
            "daemon:\n  metrics: 9464\n",
            &["scriptd.yaml:2:12: daemon.metrics: expected a string, found a number"],
        ),
        (
            "zero interval",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 0s\n",
            &["scriptd.yaml:4:15: scripts.a.interval: must be greater than zero"],
        ),
        (
            "zero timeout in defaults",
            "defaults:\n  timeout: 0ms\n",
            &["scriptd.yaml:2:12: defaults.timeout: must be greater than zero"],
        ),
        (
            "not a scalar",
            "scripts:\n  a:\n    command: \"true\"\n    stop_grace: [1s]\n",
            &["scriptd.yaml:4:17: scripts.a.stop_grace: expected a duration such as \"30s\", \
               found a list"],
        ),
    ]);
}

#[test]
fn durations_longer_than_100_years_are_refused() {
    const TOO_LONG: &str = "is too long: at most 100y (100 years)";
    let cases: &[(&str, &str, &str)] = &[
        (
            "interval",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 300000000000y\n",
            "scriptd.yaml:4:15: scripts.a.interval: duration \"300000000000y\"",
        ),
        (
            "timeout",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 1m\n    timeout: 101y\n",
            "scriptd.yaml:5:14: scripts.a.timeout: duration \"101y\"",
        ),
        (
            "stop_grace",
            "scripts:\n  a:\n    command: \"true\"\n    stop_grace: 200years\n",
            "scriptd.yaml:4:17: scripts.a.stop_grace: duration \"200years\"",
        ),
        (
            "stop_grace in defaults",
            "defaults:\n  stop_grace: 99999999999d\n",
            "scriptd.yaml:2:15: defaults.stop_grace: duration \"99999999999d\"",
        ),
        (
            "restart_delay_max",
            "scripts:\n  a:\n    command: \"true\"\n    restart_delay_max: 1000y\n",
            "scriptd.yaml:4:24: scripts.a.restart_delay_max: duration \"1000y\"",
        ),
        (
            "debounce",
            "daemon:\n  debounce: 500y\n",
            "scriptd.yaml:2:13: daemon.debounce: duration \"500y\"",
        ),
    ];
    let dir = Dir::new();
    for (name, yaml, at) in cases {
        let want = format!("{at} {TOO_LONG}");
        assert_errors(name, &dir, &dir.validate_errors(yaml), &[want.as_str()]);
    }
    // The limit itself is accepted.
    assert_errors(
        "exactly 100 years",
        &dir,
        &dir.validate_errors(
            "scripts:\n  a:\n    command: \"true\"\n    interval: 100y\n    timeout: 100y\n    \
             stop_grace: 100y\n",
        ),
        &[],
    );
}

#[test]
fn service_and_periodic_only_fields() {
    run_cases(&[
        (
            "timeout on a service",
            "scripts:\n  web:\n    command: \"true\"\n    timeout: 5s\n",
            &[
                "scriptd.yaml:4:5: scripts.web.timeout: timeout applies only to periodic scripts \
               (with interval or schedule); a service runs until it is stopped: remove timeout \
               or add interval or schedule",
            ],
        ),
        (
            "timeout from defaults on a service is ignored",
            "defaults:\n  timeout: 5s\nscripts:\n  web:\n    command: \"true\"\n",
            &[],
        ),
        (
            "timeout next to an interval that does not parse: only the interval is reported",
            "scripts:\n  a:\n    command: \"true\"\n    interval: soon\n    timeout: 5s\n",
            &["scriptd.yaml:4:15: scripts.a.interval: invalid duration \"soon\" ..."],
        ),
        (
            "restart on a periodic script",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 1m\n    restart: always\n",
            &[
                "scriptd.yaml:5:5: scripts.a.restart: restart applies only to services (scripts \
               without interval); remove it or remove interval",
            ],
        ),
        (
            "backoff fields on a periodic script",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 1m\n    restart_delay: 1s\n    \
             restart_delay_max: 5s\n    restart_reset_after: 1m\n",
            &[
                "scriptd.yaml:5:5: scripts.a.restart_delay: restart_delay applies only to \
                 services ...",
                "scriptd.yaml:6:5: scripts.a.restart_delay_max: restart_delay_max applies only \
                 to services ...",
                "scriptd.yaml:7:5: scripts.a.restart_reset_after: restart_reset_after applies \
                 only to services ...",
            ],
        ),
        (
            "backoff fields in defaults apply to services only",
            "defaults:\n  restart_delay: 1s\nscripts:\n  a:\n    command: \"true\"\n    \
             interval: 1m\n",
            &[],
        ),
    ]);
}

#[test]
fn restart_backoff_fields() {
    run_cases(&[
        (
            "zero delay",
            "scripts:\n  a:\n    command: \"true\"\n    restart_delay: 0s\n",
            &["scriptd.yaml:4:20: scripts.a.restart_delay: must be greater than zero"],
        ),
        (
            "zero reset_after in defaults",
            "defaults:\n  restart_reset_after: 0ms\n",
            &["scriptd.yaml:2:24: defaults.restart_reset_after: must be greater than zero"],
        ),
        (
            "bare number",
            "scripts:\n  a:\n    command: \"true\"\n    restart_delay_max: 30\n",
            &[
                "scriptd.yaml:4:24: scripts.a.restart_delay_max: invalid duration 30: add a \
               unit, ...",
            ],
        ),
        (
            "max below delay in one script",
            "scripts:\n  a:\n    command: \"true\"\n    restart_delay: 10s\n    \
             restart_delay_max: 2s\n",
            &[
                "scriptd.yaml:5:24: scripts.a.restart_delay_max: restart_delay_max (2s) is \
               shorter than restart_delay (10s); raise restart_delay_max or lower \
               restart_delay",
            ],
        ),
        (
            "max below delay in defaults: reported once, not per script",
            "defaults:\n  restart_delay: 10s\n  restart_delay_max: 2s\nscripts:\n  a:\n    \
             command: \"true\"\n  b:\n    command: \"true\"\n",
            &[
                "scriptd.yaml:3:22: defaults.restart_delay_max: restart_delay_max (2s) is \
               shorter than restart_delay (10s); ...",
            ],
        ),
        (
            "script delay above the max of defaults",
            "defaults:\n  restart_delay_max: 2s\nscripts:\n  a:\n    command: \"true\"\n    \
             restart_delay: 1m\n",
            &[
                "scriptd.yaml:6:20: scripts.a.restart_delay: restart_delay_max (2s) is shorter \
               than restart_delay (1m); ...",
            ],
        ),
        (
            "script max below the delay of defaults",
            "defaults:\n  restart_delay: 1m\nscripts:\n  a:\n    command: \"true\"\n    \
             restart_delay_max: 2s\n",
            &[
                "scriptd.yaml:6:24: scripts.a.restart_delay_max: restart_delay_max (2s) is \
               shorter than restart_delay (1m); ...",
            ],
        ),
    ]);
}

#[test]
fn restart_backoff_effective_values() {
    let dir = Dir::new();
    dir.write(
        MAIN,
        "defaults:\n  restart_delay: 2s\n  restart_reset_after: 1m\nscripts:\n  a:\n    \
         command: \"true\"\n  b:\n    command: \"true\"\n    restart_delay_max: 10s\n  c:\n    \
         command: \"true\"\n    restart_delay: 1m\n",
    );
    let (_, config) = load(&dir.main()).unwrap_or_else(|e| panic!("valid config, got:\n{e}"));
    let secs = Duration::from_secs;
    let b = |name: &str| config.scripts[name].backoff;
    assert_eq!(
        b("a"),
        Backoff {
            delay: secs(2),
            max_delay: secs(30),
            reset_after: secs(60)
        },
        "delay and reset from defaults, built-in max"
    );
    assert_eq!(b("b").max_delay, secs(10), "its own max");
    assert_eq!(b("b").delay, secs(2));
    assert_eq!(
        b("c").max_delay,
        secs(60),
        "no max set anywhere: the built-in 30s is raised to the delay"
    );
}

#[test]
fn backoff_grows_doubling_up_to_its_max() {
    let b = Backoff {
        delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(700),
        reset_after: Duration::from_secs(1),
    };
    let got: Vec<u64> = (0..6).map(|n| b.delay_for(n).as_millis() as u64).collect();
    assert_eq!(got, [100, 200, 400, 700, 700, 700]);
    // Far beyond any shift width: still the max, no overflow.
    assert_eq!(b.delay_for(u32::MAX), Duration::from_millis(700));
    let huge = Backoff {
        delay: Duration::from_secs(3_000_000_000),
        max_delay: Duration::from_secs(3_155_760_000),
        reset_after: Duration::from_secs(1),
    };
    assert_eq!(huge.delay_for(40), huge.max_delay);
}

#[test]
fn scalar_fields() {
    run_cases(&[
        (
            "invalid size",
            "scripts:\n  a:\n    command: \"true\"\n    log: { max_bytes: 10 MeB }\n",
            &["scriptd.yaml:4:23: scripts.a.log.max_bytes: invalid size \"10 MeB\"; use e.g. \
               4096, 64KiB, 10MiB, 1GiB"],
        ),
        (
            "zero size",
            "defaults:\n  log:\n    max_line_bytes: 0KiB\n",
            &["scriptd.yaml:3:21: defaults.log.max_line_bytes: must be greater than zero"],
        ),
        (
            "invalid restart policy",
            "scripts:\n  a:\n    command: \"true\"\n    restart: sometimes\n",
            &["scriptd.yaml:4:14: scripts.a.restart: invalid restart policy \"sometimes\"; use \
               always, on-failure or never"],
        ),
        (
            "unknown stop_signal",
            "scripts:\n  a:\n    command: \"true\"\n    stop_signal: FOO\n",
            &["scriptd.yaml:4:18: scripts.a.stop_signal: unknown signal \"FOO\"; use one of TERM, \
               INT, HUP, QUIT, KILL, USR1, USR2"],
        ),
        (
            "unknown stop_signal number",
            "scripts:\n  a:\n    command: \"true\"\n    stop_signal: 99\n",
            &["scriptd.yaml:4:18: scripts.a.stop_signal: unknown signal \"99\"; ..."],
        ),
        (
            "restart on a periodic script",
            "scripts:\n  a:\n    command: \"true\"\n    interval: 1m\n    restart: always\n",
            &["scriptd.yaml:5:5: scripts.a.restart: restart applies only to services (scripts \
               without interval); remove it or remove interval"],
        ),
        (
            "max_log_lines 0",
            "scripts:\n  a:\n    command: \"true\"\n    max_log_lines: 0\n",
            &["scriptd.yaml:4:20: scripts.a.max_log_lines: expected a whole number of at least \
               1, found 0"],
        ),
        (
            "max_log_lines negative",
            "defaults:\n  max_log_lines: -5\n",
            &["scriptd.yaml:2:18: defaults.max_log_lines: expected a whole number of at least 1, \
               found -5"],
        ),
        (
            "enabled not a bool (YAML 1.2: yes is a string)",
            "scripts:\n  a:\n    command: \"true\"\n    enabled: yes\n",
            &["scriptd.yaml:4:14: scripts.a.enabled: expected true or false, found \"yes\""],
        ),
        (
            "enabled a number",
            "scripts:\n  a:\n    command: \"true\"\n    enabled: 1\n",
            &["scriptd.yaml:4:14: scripts.a.enabled: expected true or false, found 1"],
        ),
        (
            "env value is a mapping",
            "scripts:\n  a:\n    command: \"true\"\n    env:\n      X: { y: 1 }\n",
            &["scriptd.yaml:5:10: scripts.a.env.X: expected a string value, found a mapping"],
        ),
        (
            "include is not a glob",
            "include: 5\n",
            &["scriptd.yaml:1:10: include: expected a glob or a list of globs, found a number"],
        ),
        (
            "include with an invalid glob",
            "include: [\"ok/*.yaml\", \"[\"]\n",
            &["scriptd.yaml:1:24: include[1]: invalid glob \"[\": ..."],
        ),
    ]);
}

#[test]
fn commands() {
    run_cases(&[
        (
            "missing command",
            "scripts:\n  a:\n    interval: 1m\n",
            &["scriptd.yaml:2:3: scripts.a: missing required key \"command\""],
        ),
        (
            "script body is empty: one error, at the script's key",
            "scripts:\n  a:\n",
            &[
                "scriptd.yaml:2:3: scripts.a: must be a mapping (key: value), found \
               nothing (null)",
            ],
        ),
        (
            "script body is empty, another script follows",
            "scripts:\n  a:\n  b:\n    command: \"true\"\n",
            &[
                "scriptd.yaml:2:3: scripts.a: must be a mapping (key: value), found \
               nothing (null)",
            ],
        ),
        (
            "script body is a number",
            "scripts:\n  a: 5\n",
            &[
                "scriptd.yaml:2:6: scripts.a: must be a mapping (key: value), found a \
               number",
            ],
        ),
        (
            "empty command string",
            "scripts:\n  a:\n    command: \"\"\n",
            &["scriptd.yaml:3:14: scripts.a.command: must not be empty"],
        ),
        (
            "blank command string",
            "scripts:\n  a:\n    command: \"   \"\n",
            &["scriptd.yaml:3:14: scripts.a.command: must not be empty"],
        ),
        (
            "empty command list",
            "scripts:\n  a:\n    command: []\n",
            &["scriptd.yaml:3:14: scripts.a.command: must not be an empty list"],
        ),
        (
            "command list with a mapping item",
            "scripts:\n  a:\n    command: [/bin/sh, {x: 1}]\n",
            &[
                "scriptd.yaml:3:24: scripts.a.command[1]: arguments must be strings, found a \
               mapping",
            ],
        ),
        (
            "command list with a mapping item, block style",
            "scripts:\n  a:\n    command:\n      - /bin/sh\n      - x: 1\n",
            &[
                "scriptd.yaml:5:9: scripts.a.command[1]: arguments must be strings, found a \
               mapping",
            ],
        ),
        (
            "command is a block mapping: points at its first key",
            "scripts:\n  a:\n    command:\n      xyz: 1\n",
            &[
                "scriptd.yaml:4:7: scripts.a.command: expected a list of arguments or a shell \
               command string, found a mapping",
            ],
        ),
        (
            "command is a number",
            "scripts:\n  a:\n    command: 5\n",
            &[
                "scriptd.yaml:3:14: scripts.a.command: expected a list of arguments or a shell \
               command string, found a number",
            ],
        ),
        (
            "numbers and booleans are accepted as arguments",
            "scripts:\n  a:\n    command: [/bin/sh, -c, true, 5]\n",
            &[],
        ),
    ]);
}

#[test]
fn programs_and_working_dirs_in_memory() {
    run_cases(&[
        (
            "absolute program does not exist",
            "scripts:\n  a:\n    command: [/nonexistent/prog, --x]\n",
            &["scriptd.yaml:3:15: scripts.a.command[0]: program /nonexistent/prog does not \
               exist"],
        ),
        (
            "program not in the script's PATH",
            "scripts:\n  a:\n    command: [no-such-prog-xyz]\n    env: { PATH: /nonexistent-dir }\n",
            &["scriptd.yaml:3:15: scripts.a.command[0]: program \"no-such-prog-xyz\" not found in \
               PATH (/nonexistent-dir); give its full path or install it"],
        ),
        (
            "program not in the daemon's PATH",
            "scripts:\n  a:\n    command: [no-such-prog-xyz-42]\n",
            &["scriptd.yaml:3:15: scripts.a.command[0]: program \"no-such-prog-xyz-42\" not \
               found in PATH (..."],
        ),
        (
            "program found in PATH",
            "scripts:\n  a:\n    command: [sh, -c, \"exit 0\"]\n",
            &[],
        ),
        (
            "a shell string only needs /bin/sh",
            "scripts:\n  a:\n    command: \"no-such-prog-xyz --flag\"\n",
            &[],
        ),
        (
            "working_dir does not exist (relative, resolved against the config dir)",
            "scripts:\n  a:\n    command: \"true\"\n    working_dir: missing\n",
            &["scriptd.yaml:4:18: scripts.a.working_dir: working_dir {dir}/missing does not \
               exist; create it or fix the path"],
        ),
        (
            "working_dir does not exist (absolute)",
            "scripts:\n  a:\n    command: [/nonexistent/prog]\n    working_dir: /nonexistent/wd\n",
            // The program is not checked in a directory that does not exist.
            &["scriptd.yaml:4:18: scripts.a.working_dir: working_dir /nonexistent/wd does not \
               exist; create it or fix the path"],
        ),
        (
            "working_dir from defaults does not exist: reported on the script",
            "defaults:\n  working_dir: /nonexistent/wd\nscripts:\n  a:\n    command: \"true\"\n",
            &["scriptd.yaml:4:3: scripts.a: working_dir /nonexistent/wd does not exist; create \
               it or fix the path"],
        ),
        (
            "working_dir empty",
            "scripts:\n  a:\n    command: \"true\"\n    working_dir: \"\"\n",
            &["scriptd.yaml:4:18: scripts.a.working_dir: must not be empty"],
        ),
    ]);
}

#[test]
fn script_names() {
    run_cases(&[
        (
            "space and bang",
            "scripts:\n  \"bad name!\":\n    command: \"true\"\n",
            &["scriptd.yaml:2:3: scripts.bad name!: invalid script name \"bad name!\": use \
               letters, digits, '_', '-' and '.', starting with a letter or digit, at most 64 \
               characters"],
        ),
        (
            "leading dash",
            "scripts:\n  -x:\n    command: \"true\"\n",
            &["scriptd.yaml:2:3: scripts.-x: invalid script name \"-x\": ..."],
        ),
        (
            "65 characters",
            "scripts:\n  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:\n    command: \"true\"\n",
            &["scriptd.yaml:2:3: scripts.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: invalid script name ..."],
        ),
        (
            "letters, digits, '_', '-' and '.' are fine",
            "scripts:\n  web-1.main_x:\n    command: \"true\"\n  9lives:\n    command: \"true\"\n",
            &[],
        ),
    ]);
}

// ---------------------------------------------------------------------------------------
// Cases that need files on disk
// ---------------------------------------------------------------------------------------

#[test]
fn program_not_executable() {
    let dir = Dir::new();
    dir.write_mode("bin/tool", "#!/bin/sh\n", 0o644);
    let got = dir.load_errors(&[(MAIN, "scripts:\n  a:\n    command: [\"{dir}/bin/tool\"]\n")]);
    assert_errors(
        "mode 0644",
        &dir,
        &got,
        &[
            "scriptd.yaml:3:15: scripts.a.command[0]: program {dir}/bin/tool is not executable \
           (mode 644); run `chmod +x {dir}/bin/tool`",
        ],
    );
}

#[test]
fn program_is_a_directory() {
    let dir = Dir::new();
    dir.mkdir("bin/tool");
    let got = dir.load_errors(&[(MAIN, "scripts:\n  a:\n    command: [\"{dir}/bin/tool\"]\n")]);
    assert_errors(
        "directory",
        &dir,
        &got,
        &["scriptd.yaml:3:15: scripts.a.command[0]: program {dir}/bin/tool is not a file"],
    );
}

#[test]
fn relative_program_resolves_against_working_dir() {
    let dir = Dir::new();
    dir.write_mode("work/run.sh", "#!/bin/sh\n", 0o755);
    dir.write_mode("tools/run.sh", "#!/bin/sh\n", 0o755);
    let cases: &[Case] = &[
        (
            "exists and is executable in working_dir",
            "scripts:\n  a:\n    command: [./run.sh]\n    working_dir: work\n",
            &[],
        ),
        (
            "relative to the config dir when working_dir is not set",
            "scripts:\n  a:\n    command: [tools/run.sh]\n",
            &[],
        ),
        (
            "not in working_dir",
            "scripts:\n  a:\n    command: [./run.sh]\n",
            &["scriptd.yaml:3:15: scripts.a.command[0]: program {dir}/./run.sh does not exist"],
        ),
        (
            "resolved against working_dir, not the config dir",
            "scripts:\n  a:\n    command: [tools/run.sh]\n    working_dir: work\n",
            &[
                "scriptd.yaml:3:15: scripts.a.command[0]: program {dir}/work/tools/run.sh does \
               not exist",
            ],
        ),
    ];
    for (name, yaml, want) in cases {
        let got = dir.load_errors(&[(MAIN, yaml)]);
        assert_errors(name, &dir, &got, want);
    }

    // And the effective working_dir is absolute.
    dir.write(
        MAIN,
        "scripts:\n  a:\n    command: [./run.sh]\n    working_dir: work\n",
    );
    let (_, config) = load(&dir.main()).expect("valid relative program");
    assert_eq!(config.scripts["a"].working_dir, dir.path().join("work"));
}

#[test]
fn working_dir_is_a_file() {
    let dir = Dir::new();
    dir.write("afile", "x");
    let got = dir.load_errors(&[(
        MAIN,
        "scripts:\n  a:\n    command: \"true\"\n    working_dir: afile\n",
    )]);
    assert_errors(
        "file",
        &dir,
        &got,
        &[
            "scriptd.yaml:4:18: scripts.a.working_dir: working_dir {dir}/afile is not a \
           directory; create it or fix the path",
        ],
    );
}

#[test]
fn duplicate_script_across_files() {
    let dir = Dir::new();
    let got = dir.load_errors(&[
        (
            MAIN,
            "include: \"scripts.d/*.yaml\"\nscripts:\n  backup:\n    command: \"true\"\n",
        ),
        (
            "scripts.d/a.yaml",
            "scripts:\n  other:\n    command: \"true\"\n",
        ),
        (
            "scripts.d/db.yaml",
            "# database jobs\nscripts:\n  db:\n    command: \"true\"\n  backup:\n    command: \"true\"\n",
        ),
    ]);
    assert_errors(
        "duplicate",
        &dir,
        &got,
        &[
            "scripts.d/db.yaml:5:3: scripts.backup: script \"backup\" is already defined at \
           scriptd.yaml:3:3; script names must be unique across files",
        ],
    );
}

#[test]
fn duplicate_script_between_included_files() {
    let dir = Dir::new();
    let got = dir.load_errors(&[
        (MAIN, "include: [\"a.yaml\", \"b.yaml\"]\n"),
        ("b.yaml", "scripts:\n    x:\n      command: \"true\"\n"),
        ("a.yaml", "\nscripts:\n  x:\n    command: \"true\"\n"),
    ]);
    assert_errors(
        "between includes",
        &dir,
        &got,
        &[
            "b.yaml:2:5: scripts.x: script \"x\" is already defined at a.yaml:3:3; script names \
           must be unique across files",
        ],
    );
}

#[test]
fn included_file_errors() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "daemon in an included file",
            "daemon:\n  watch: false\nscripts: {}\n",
            &["scripts.d/x.yaml:1:1: daemon: unknown key \"daemon\"; expected one of: scripts"],
        ),
        (
            "include in an included file",
            "scripts: {}\ninclude: [\"more/*.yaml\"]\n",
            &["scripts.d/x.yaml:2:1: include: unknown key \"include\"; expected one of: scripts"],
        ),
        (
            "defaults in an included file",
            "defaults:\n  timeout: 1m\n",
            &["scripts.d/x.yaml:1:1: defaults: unknown key \"defaults\"; ..."],
        ),
        (
            "YAML syntax error in an included file",
            "scripts:\n  y:\n    command: [true\n",
            &["scripts.d/x.yaml:4:1: invalid YAML: ..."],
        ),
        (
            "bad value in an included file",
            "scripts:\n  y:\n    command: \"true\"\n    interval: 5 minuets\n",
            &["scripts.d/x.yaml:4:15: scripts.y.interval: invalid duration \"5 minuets\" ..."],
        ),
        ("empty included file", "", &[]),
    ];
    for (name, included, want) in cases {
        let dir = Dir::new();
        let got = dir.load_errors(&[
            (
                MAIN,
                "include: [\"scripts.d/*.yaml\"]\nscripts:\n  a:\n    command: \"true\"\n",
            ),
            ("scripts.d/x.yaml", included),
        ]);
        assert_errors(name, &dir, &got, want);
    }
}

#[test]
fn missing_main_file() {
    let dir = Dir::new();
    let errors = load(&dir.main()).expect_err("no main file");
    let got: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_errors(
        "missing",
        &dir,
        &got,
        &["scriptd.yaml: cannot read {dir}/scriptd.yaml: ..."],
    );
}

#[test]
fn all_errors_are_reported_at_once_in_file_order() {
    let dir = Dir::new();
    let main = "\
daemon:
  debounce: 50
  sockett: x
include: [\"scripts.d/*.yaml\"]
scripts:
  a:
    interval: 1m
  b:
    command: \"true\"
    interval: 5 minuets
    stop_signal: FOO
  c:
    command: [/nonexistent/prog]
    max_log_lines: 0
  d:
    command: \"true\"
    interval: 1m
    restart: never
";
    let included = "\
scripts:
  e:
    command: []
  a:
    command: \"true\"
";
    let got = dir.load_errors(&[(MAIN, main), ("scripts.d/e.yaml", included)]);
    assert_errors(
        "many",
        &dir,
        &got,
        &[
            "scriptd.yaml:2:13: daemon.debounce: invalid duration 50: add a unit...",
            "scriptd.yaml:3:3: daemon.sockett: unknown key \"sockett\"; did you mean \"socket\"?",
            "scriptd.yaml:6:3: scripts.a: missing required key \"command\"",
            "scriptd.yaml:10:15: scripts.b.interval: invalid duration \"5 minuets\" ...",
            "scriptd.yaml:11:18: scripts.b.stop_signal: unknown signal \"FOO\"...",
            "scriptd.yaml:13:15: scripts.c.command[0]: program /nonexistent/prog does not exist",
            "scriptd.yaml:14:20: scripts.c.max_log_lines: expected a whole number of at least 1, \
             found 0",
            "scriptd.yaml:18:5: scripts.d.restart: restart applies only to services...",
            "scripts.d/e.yaml:3:14: scripts.e.command: must not be an empty list",
            "scripts.d/e.yaml:4:3: scripts.a: script \"a\" is already defined at \
             scriptd.yaml:6:3; script names must be unique across files",
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Hashing (permissions: tests/access.rs)
// ---------------------------------------------------------------------------------------

#[test]
fn source_hash_tracks_content() {
    let dir = Dir::new();
    dir.write(
        MAIN,
        "include: [\"scripts.d/*.yaml\"]\nscripts:\n  a:\n    command: \"true\"\n",
    );
    dir.write(
        "scripts.d/b.yaml",
        "scripts:\n  b:\n    command: \"true\"\n",
    );
    let read = || scriptd_common::config::read_source(&dir.main()).expect("read source");

    let first = read();
    let h0 = first.hash();
    assert_eq!(h0.len(), 64, "SHA-256 hex");
    assert!(h0.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(read().hash(), h0, "stable when nothing changed");
    assert_eq!(first.clone().hash(), h0);

    // The included file changes.
    dir.write(
        "scripts.d/b.yaml",
        "scripts:\n  b:\n    command: \"false\"\n",
    );
    let h1 = read().hash();
    assert_ne!(h1, h0, "included file changed");
    assert_eq!(read().hash(), h1, "stable again");

    // The main file changes (even whitespace).
    dir.write(
        MAIN,
        "include: [\"scripts.d/*.yaml\"]\nscripts:\n  a:\n    command: \"true\"\n\n",
    );
    let h2 = read().hash();
    assert_ne!(h2, h1, "main file changed");

    // A new included file appears.
    dir.write("scripts.d/c.yaml", "");
    let h3 = read().hash();
    assert_ne!(h3, h2, "file added");

    // Moving text from one file to another changes it too (names and lengths are hashed).
    let moved = |a: &str, b: &str| ConfigSource {
        main: dir.main(),
        files: vec![
            ConfigFile {
                name: MAIN.into(),
                content: a.into(),
            },
            ConfigFile {
                name: "x.yaml".into(),
                content: b.into(),
            },
        ],
    };
    assert_ne!(moved("ab", "c").hash(), moved("a", "bc").hash());
    assert_eq!(moved("ab", "c").hash(), moved("ab", "c").hash());
}

// ---------------------------------------------------------------------------------------
// Size: validation is linear, and many duplicates are summed up
// ---------------------------------------------------------------------------------------

/// A file included by mistake redefines every script: 10,000 duplicates are found with
/// bounded work (each a map look-up, positions indexed once per file) and listed
/// `DUPLICATES_LISTED` at a time plus one summary, not 10,000 lines.
#[test]
fn ten_thousand_duplicate_names_are_summed_up() {
    const N: usize = 10_000;
    let dir = Dir::new();
    let scripts: String = (0..N)
        .map(|i| format!("  s{i:05}:\n    command: [\"/bin/true\"]\n"))
        .collect();
    let source = ConfigSource {
        main: dir.main(),
        files: vec![
            ConfigFile {
                name: MAIN.into(),
                content: format!("include: [\"again.yaml\"]\nscripts:\n{scripts}"),
            },
            ConfigFile {
                name: "again.yaml".into(),
                content: format!("scripts:\n{scripts}"),
            },
        ],
    };
    let errors = validate(&source).expect_err("duplicates").0;
    assert_eq!(errors.len(), DUPLICATES_LISTED + 1, "{errors:#?}");
    for (i, e) in errors.iter().take(DUPLICATES_LISTED).enumerate() {
        assert_eq!(
            e.to_string(),
            format!(
                "again.yaml:{}:3: scripts.s{i:05}: script \"s{i:05}\" is already defined at \
                 scriptd.yaml:{}:3; script names must be unique across files",
                2 + 2 * i,
                3 + 2 * i
            )
        );
    }
    let last = DUPLICATES_LISTED;
    assert_eq!(
        errors[last].to_string(),
        format!(
            "again.yaml:{}:3: scripts.s{last:05}: script \"s{last:05}\" and {} more scripts of \
             this file are already defined in another file (only the first {DUPLICATES_LISTED} \
             are listed); script names must be unique across files: is a file included twice?",
            2 + 2 * last,
            N - DUPLICATES_LISTED - 1
        )
    );
}

#[test]
fn one_summary_only_for_two_or_more_unlisted_duplicates() {
    let dir = Dir::new();
    for (n, summary) in [
        (DUPLICATES_LISTED + 1, None),
        (
            DUPLICATES_LISTED + 2,
            Some("and 1 more script of this file are already defined"),
        ),
        (
            DUPLICATES_LISTED + 3,
            Some("and 2 more scripts of this file are already defined"),
        ),
    ] {
        let scripts: String = (0..n)
            .map(|i| format!("  s{i:02}:\n    command: [\"/bin/true\"]\n"))
            .collect();
        let got = dir.load_errors(&[
            (
                MAIN,
                &format!("include: [\"again.yaml\"]\nscripts:\n{scripts}"),
            ),
            ("again.yaml", &format!("scripts:\n{scripts}")),
        ]);
        let listed = got
            .iter()
            .filter(|e| e.contains("is already defined at"))
            .count();
        match summary {
            None => assert_eq!(listed, n, "{got:#?}"),
            Some(text) => {
                assert_eq!(listed, DUPLICATES_LISTED, "{got:#?}");
                assert_eq!(got.len(), DUPLICATES_LISTED + 1, "{got:#?}");
                assert!(got[DUPLICATES_LISTED].contains(text), "{got:#?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Properties of the pure part (the machine replaced by a fake Host)
// ---------------------------------------------------------------------------------------

/// `/srv` and `/tmp` are directories; every program is an executable file.
struct FakeHost;

impl Host for FakeHost {
    fn stat(&mut self, path: &Path) -> Stat {
        match path.to_str() {
            Some("/srv" | "/tmp") => Stat::Dir,
            _ => Stat::File(0o755),
        }
    }

    fn lookup(&mut self, name: &str, _group: bool) -> Result<u32, String> {
        Err(format!("no {name:?} here"))
    }

    fn search_path(&self) -> Option<String> {
        Some("/bin".into())
    }
}

fn validate_fake(yaml: &str) -> Result<scriptd_common::config::Config, Vec<String>> {
    let source = ConfigSource {
        main: PathBuf::from("/srv/scriptd.yaml"),
        files: vec![ConfigFile {
            name: MAIN.into(),
            content: yaml.into(),
        }],
    };
    validate_with(&source, &mut FakeHost).map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// One script written as YAML, with the config it must validate to.
fn arb_script() -> impl Strategy<Value = (String, ScriptConfig)> {
    (
        prop::option::of(1u64..100_000),
        prop::option::of(1u64..100_000),
        prop::option::of(any::<bool>()),
        prop::option::of(prop::sample::select(vec!["/srv", "/tmp"])),
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,6}", "[a-z0-9 ]{0,8}", 0..3),
        prop::option::of(1u64..1 << 40),
        prop::option::of(prop::sample::select(StopSignal::ALL.to_vec())),
        prop::option::of(0u32..100),
        prop::option::of((
            1u64..1 << 34,
            prop::sample::select(vec!["", "KiB", "MiB", "GiB"]),
        )),
    )
        .prop_map(
            |(interval, timeout, enabled, wd, env, lines, sig, keep, bytes)| {
                let mut yaml = String::from("    command: [\"/bin/true\", \"-x\"]\n");
                let mut cfg = ScriptConfig {
                    command: CommandSpec::Argv(vec!["/bin/true".into(), "-x".into()]),
                    interval: None,
                    timeout: None,
                    enabled: true,
                    working_dir: "/srv".into(),
                    env: env.clone(),
                    max_log_lines: 10_000,
                    restart: RestartPolicy::OnFailure,
                    stop_signal: StopSignal::TERM,
                    stop_grace: Duration::from_secs(10),
                    log: Default::default(),
                    backoff: Backoff::default(),
                    health: None,
                    calendar: Default::default(),
                    exec: ExecContext::default(),
                    ready_after: Duration::from_secs(1),
                };
                if let Some(ms) = interval {
                    yaml += &format!("    interval: {ms}ms\n");
                    cfg.interval = Some(Duration::from_millis(ms));
                    if let Some(ms) = timeout {
                        yaml += &format!("    timeout: {ms}ms\n");
                        cfg.timeout = Some(Duration::from_millis(ms));
                    }
                }
                if let Some(e) = enabled {
                    yaml += &format!("    enabled: {e}\n");
                    cfg.enabled = e;
                }
                if let Some(wd) = wd {
                    yaml += &format!("    working_dir: {wd}\n");
                    cfg.working_dir = wd.into();
                }
                if !env.is_empty() {
                    yaml += "    env:\n";
                    for (k, v) in &env {
                        yaml += &format!("      {k}: \"{v}\"\n");
                    }
                }
                if let Some(n) = lines {
                    yaml += &format!("    max_log_lines: {n}\n");
                    cfg.max_log_lines = n;
                }
                if let Some(sig) = sig {
                    yaml += &format!("    stop_signal: SIG{}\n", sig.name());
                    cfg.stop_signal = sig;
                }
                if keep.is_some() || bytes.is_some() {
                    yaml += "    log:\n";
                }
                if let Some(k) = keep {
                    yaml += &format!("      keep: {k}\n");
                    cfg.log.keep = k;
                }
                if let Some((n, unit)) = bytes {
                    let mult = match unit {
                        "KiB" => 1 << 10,
                        "MiB" => 1 << 20,
                        "GiB" => 1 << 30,
                        _ => 1,
                    };
                    yaml += &format!("      max_bytes: {n}{unit}\n");
                    cfg.log.max_bytes = n * mult;
                }
                (yaml, cfg)
            },
        )
}

/// Any YAML value, for the places a field's value goes.
fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("~".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[a, 1, {b: c}]".to_owned()),
        Just("{ x: { y: z } }".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-zA-Z0-9 .:/-]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A script written with any mix of fields validates to exactly what it says, the rest
    /// from the built-in defaults.
    #[test]
    fn written_scripts_validate_to_what_they_say((yaml, want) in arb_script()) {
        let text = format!("scripts:\n  s:\n{yaml}");
        let cfg = validate_fake(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e:#?}")))?;
        prop_assert_eq!(&*cfg.scripts["s"], &want, "{}", text);
    }

    /// Any value in any field's place is either taken or reported at that field, with
    /// file, line and column; never a panic.
    #[test]
    fn any_value_in_any_field_is_an_error_at_that_field(
        field in prop::sample::select(scriptd_common::config::fields::FIELDS.to_vec()),
        value in arb_value(),
    ) {
        let key = match field.subkey() {
            Some(_) if field.name == "env.*" => format!("    env:\n      X: {value}\n"),
            Some(_) if field.name == "limits.*" => format!("    limits:\n      nofile: {value}\n"),
            Some(sub) => format!("    {}:\n      {sub}: {value}\n", field.key()),
            None => format!("    {}: {value}\n", field.name),
        };
        let command = if field.name == "command" { "" } else { "    command: [\"/bin/true\"]\n" };
        let text = format!("scripts:\n  s:\n{command}{key}");
        match validate_fake(&text) {
            Err(errors) => {
                for e in &errors {
                    prop_assert!(
                        e.starts_with("scriptd.yaml:") && e.contains(": scripts.s"),
                        "{}\n{:#?}", text, errors
                    );
                }
                let written = format!("scripts.s.{}", field.key());
                prop_assert!(
                    errors.iter().any(|e| e.contains(&written)),
                    "no error at {}: {}\n{:#?}", written, text, errors
                );
            }
            Ok(cfg) => {
                // Taken: the field is in the script's rows.
                let row = match field.name {
                    "env.*" => "env.X",
                    "limits.*" => "limits.nofile",
                    name => name,
                };
                let rows = script_fields(&cfg.scripts["s"]);
                prop_assert!(rows.contains_key(row), "{} taken but not set: {:?}", row, rows);
            }
        }
    }
}

#[test]
fn counts_past_32_bits_are_errors_not_defaults() {
    run_cases(&[
        (
            "log.keep",
            "scripts:\n  a:\n    command: [\"/bin/true\"]\n    log: { keep: 4294967296 }\n",
            &["scriptd.yaml:4:18: scripts.a.log.keep: 4294967296 is too large: at most 4294967295"],
        ),
        (
            "daemon.history_limit",
            "daemon:\n  history_limit: 4294967296\n",
            &["scriptd.yaml:2:18: daemon.history_limit: 4294967296 is too large: at most \
               4294967295"],
        ),
    ]);
}

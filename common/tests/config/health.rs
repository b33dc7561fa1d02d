//! `health:` (a service's probe): what validation takes and refuses, where it says so,
//! what `defaults:` gives, and the impact of a change.

use scriptd_common::config::{CommandSpec, Config, HealthConfig, Probe};
use scriptd_common::diff::{diff_script, Impact};
use std::time::Duration;

fn validate(yaml: &str) -> Result<Config, Vec<String>> {
    crate::support::validate(yaml).map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// The health of script `web` of `yaml`, which must be valid.
fn health_of(yaml: &str) -> Option<HealthConfig> {
    let cfg = validate(yaml).unwrap_or_else(|e| panic!("{yaml}\n{}", e.join("\n")));
    cfg.scripts["web"].health.clone()
}

fn web(health: &str) -> String {
    format!("scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n{health}")
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn each_probe_kind_with_the_builtin_defaults() {
    let table = [
        (
            "      http: http://127.0.0.1:8080/healthz\n",
            Probe::Http("http://127.0.0.1:8080/healthz".into()),
        ),
        (
            "      tcp: \"[::1]:5432\"\n",
            Probe::Tcp("[::1]:5432".into()),
        ),
        (
            "      exec: [\"/bin/check\", \"--quick\"]\n",
            Probe::Exec(CommandSpec::Argv(vec![
                "/bin/check".into(),
                "--quick".into(),
            ])),
        ),
        (
            "      exec: \"pg_isready -q\"\n",
            Probe::Exec(CommandSpec::Shell("pg_isready -q".into())),
        ),
    ];
    for (yaml, probe) in table {
        assert_eq!(
            health_of(&web(yaml)),
            Some(HealthConfig {
                probe,
                interval: secs(10),
                timeout: secs(1),
                failures: 3,
                start_period: Duration::ZERO,
                restart: true,
            }),
            "{yaml}"
        );
    }
    let no_probe = "scripts:\n  web:\n    command: [\"/bin/server\"]\n";
    assert_eq!(health_of(no_probe), None);
}

#[test]
fn every_setting_and_what_defaults_give() {
    let own = "      tcp: \"db:5432\"\n      interval: 250ms\n      timeout: 100ms\n      \
               failures: 1\n      start_period: 30s\n      restart: false\n";
    let want = HealthConfig {
        probe: Probe::Tcp("db:5432".into()),
        interval: Duration::from_millis(250),
        timeout: Duration::from_millis(100),
        failures: 1,
        start_period: secs(30),
        restart: false,
    };
    assert_eq!(health_of(&web(own)), Some(want.clone()));

    // Key by key: the script's own keys win, the rest come from `defaults`, then built in.
    let yaml = "defaults:\n  health:\n    interval: 5s\n    failures: 7\nscripts:\n  web:\n    \
                command: [\"/bin/server\"]\n    health:\n      http: http://h/\n      failures: 2\n";
    let got = health_of(yaml).expect("a probe");
    assert_eq!(
        (got.interval, got.failures, got.timeout),
        (secs(5), 2, secs(1))
    );

    // A probe in `defaults` probes every service, and no periodic script; a script's own
    // probe kind replaces it.
    let yaml = "defaults:\n  health:\n    tcp: \"127.0.0.1:1\"\nscripts:\n  web:\n    command: \
                [\"/bin/server\"]\n  other:\n    command: [\"/bin/server\"]\n    health:\n      \
                http: http://h/\n  job:\n    command: [\"/bin/job\"]\n    interval: 1m\n";
    let cfg = validate(yaml).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let probe = |name: &str| cfg.scripts[name].health.as_ref().map(|h| h.probe.clone());
    assert_eq!(probe("web"), Some(Probe::Tcp("127.0.0.1:1".into())));
    assert_eq!(probe("other"), Some(Probe::Http("http://h/".into())));
    assert_eq!(probe("job"), None);
}

#[test]
fn refused_with_what_to_do_at_the_key() {
    let table: &[(&str, &str, &[&str])] = &[
        (
            "no probe",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      interval: 1s\n",
            &[
                "scriptd.yaml:4:5: scripts.web.health: health needs a probe: add one of exec, \
               http, tcp (e.g. `http: http://127.0.0.1:8080/`), or remove health",
            ],
        ),
        (
            "empty section",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health: {}\n",
            &["scriptd.yaml:4:5: scripts.web.health: health needs a probe..."],
        ),
        (
            "two probe kinds",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      http: \
             http://h/\n      tcp: \"h:80\"\n",
            &[
                "scriptd.yaml:6:7: scripts.web.health.tcp: health takes exactly one probe of \
               exec, http or tcp, and http is already given: remove one of them",
            ],
        ),
        (
            "https",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      http: \
             https://h/\n",
            &[
                "scriptd.yaml:5:13: scripts.web.health.http: https is not supported in \
               \"https://h/\": the probe speaks plain HTTP only...",
            ],
        ),
        (
            "bad URL",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      http: \
             localhost:8080\n",
            &[
                "scriptd.yaml:5:13: scripts.web.health.http: \"localhost:8080\" has no scheme: \
               write it as http://HOST:PORT/PATH",
            ],
        ),
        (
            "tcp without a port",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      tcp: db\n",
            &[
                "scriptd.yaml:5:12: scripts.web.health.tcp: \"db\" has no port: write it as \
               HOST:PORT, e.g. 127.0.0.1:5432 or [::1]:5432",
            ],
        ),
        (
            "on a periodic script",
            "scripts:\n  job:\n    command: [\"/bin/job\"]\n    interval: 1m\n    health:\n      \
             tcp: \"h:1\"\n",
            &[
                "scriptd.yaml:5:5: scripts.job.health: health applies only to services (scripts \
               without interval); remove it or remove interval",
            ],
        ),
        (
            "zero interval and timeout, no failures",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      tcp: \
             \"h:1\"\n      interval: 0s\n      timeout: 0ms\n      failures: 0\n",
            &[
                "scriptd.yaml:6:17: scripts.web.health.interval: must be greater than zero",
                "scriptd.yaml:7:16: scripts.web.health.timeout: must be greater than zero",
                "scriptd.yaml:8:17: scripts.web.health.failures: expected a whole number of at \
                 least 1, found 0",
            ],
        ),
        (
            "unknown key",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      tcp: \
             \"h:1\"\n      intervall: 1s\n",
            &[
                "scriptd.yaml:6:7: scripts.web.health.intervall: unknown key \"intervall\"; did \
               you mean \"interval\"?",
            ],
        ),
        (
            "exec program missing",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health:\n      exec: \
             [\"/opt/missing/check\"]\n",
            &[
                "scriptd.yaml:5:14: scripts.web.health.exec[0]: program /opt/missing/check does \
               not exist",
            ],
        ),
        (
            "not a mapping",
            "scripts:\n  web:\n    command: [\"/bin/server\"]\n    health: http://h/\n",
            &[
                "scriptd.yaml:4:13: scripts.web.health: must be a mapping (key: value), found a \
               string",
            ],
        ),
        (
            "two kinds in defaults",
            "defaults:\n  health: { exec: [\"/bin/true\"], tcp: \"h:1\" }\nscripts: {}\n",
            &["scriptd.yaml:2:34: defaults.health.tcp: health takes exactly one probe..."],
        ),
    ];
    for (case, yaml, want) in table {
        let got = validate(yaml).err().unwrap_or_default();
        assert_eq!(got.len(), want.len(), "{case}: {got:#?}");
        for (g, w) in got.iter().zip(*want) {
            match w.strip_suffix("...") {
                Some(prefix) => assert!(g.starts_with(prefix), "{case}:\n{g}\n{w}"),
                None => assert_eq!(g, w, "{case}"),
            }
        }
    }
}

#[test]
fn a_probe_change_is_live_the_service_is_not_restarted() {
    let before = validate(&web("      http: http://127.0.0.1:8080/\n")).expect("valid");
    let after = validate(&web(
        "      http: http://127.0.0.1:8080/ready\n      interval: 2s\n",
    ))
    .expect("valid");
    let none = validate("scripts:\n  web:\n    command: [\"/bin/server\"]\n").expect("valid");
    let (b, a, n) = (
        &before.scripts["web"],
        &after.scripts["web"],
        &none.scripts["web"],
    );
    let changes = diff_script("web", b, a);
    let fields: Vec<_> = changes
        .iter()
        .map(|c| (c.field.as_str(), c.impact))
        .collect();
    assert_eq!(
        fields,
        [
            ("health.http", Impact::Live),
            ("health.interval", Impact::Live)
        ]
    );
    // Added or removed: a row per key (the probe and its five settings), each live.
    for (old, new) in [(n, b), (b, n)] {
        let changes = diff_script("web", old, new);
        assert_eq!(changes.len(), 6, "{changes:#?}");
        assert!(changes.iter().all(|c| c.field.starts_with("health.")));
        assert!(changes.iter().all(|c| c.impact == Impact::Live));
    }
}

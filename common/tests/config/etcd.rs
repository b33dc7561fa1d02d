//! `daemon.source.etcd`: the bootstrap file's keys, and the rules of a config whose scripts
//! live in an etcd value (the second file, named `etcd:KEY`).

use scriptd_common::config::etcd::{with_value, EtcdSource};
use scriptd_common::config::{validate, ConfigFile, ConfigSource};

/// `bootstrap` as the main file and, when given, `value` as the value of key `/k`;
/// the rendered errors, or the config's etcd source and script names.
fn check(
    bootstrap: &str,
    value: Option<&str>,
) -> Result<(Option<EtcdSource>, Vec<String>), Vec<String>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut source = ConfigSource {
        main: dir.path().join("scriptd.yaml"),
        files: vec![ConfigFile {
            name: "scriptd.yaml".into(),
            content: bootstrap.into(),
        }],
    };
    if let Some(value) = value {
        source = with_value(&source, "/k", value.into());
    }
    match validate(&source) {
        Ok(c) => Ok((c.daemon.source, c.scripts.into_keys().collect())),
        Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
    }
}

const BOOT: &str =
    "daemon:\n  source:\n    etcd:\n      endpoints: [\"http://127.0.0.1:2379\"]\n      key: /k\n";

#[test]
fn a_bootstrap_file_with_an_etcd_source_is_valid_and_the_value_holds_the_scripts() {
    let (source, scripts) = check(BOOT, None).expect("valid");
    let source = source.expect("an etcd source");
    assert_eq!(source.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(source.key, "/k");
    assert!(scripts.is_empty());
    let value = "defaults: { stop_grace: 1s }\nscripts:\n  a: { command: \"sleep 9\" }\n";
    let (_, scripts) = check(BOOT, Some(value)).expect("valid");
    assert_eq!(scripts, ["a"]);
}

#[test]
fn bad_etcd_settings_are_errors_at_their_keys() {
    let cases: &[(&str, &str)] = &[
        (
            "daemon:\n  source:\n    etcd:\n      key: /k\n",
            "scriptd.yaml:4:7: daemon.source.etcd: missing \"endpoints\"",
        ),
        (
            "daemon:\n  source:\n    etcd:\n      endpoints: [\"http://e:1\"]\n",
            "scriptd.yaml:4:7: daemon.source.etcd: missing \"key\"",
        ),
        (
            "daemon:\n  source:\n    etcd:\n      endpoints: [\"e:2379\"]\n      key: /k\n",
            "daemon.source.etcd.endpoints[0]: invalid endpoint \"e:2379\": expected http://HOST:PORT",
        ),
        (
            "daemon:\n  source:\n    etcd:\n      endpoints: []\n      key: /k\n",
            "daemon.source.etcd.endpoints: must list at least one endpoint",
        ),
        (
            "daemon:\n  source:\n    etcd:\n      endpoints: [\"http://e:1\"]\n      key: /k\n      username: u\n",
            "\"username\" and \"password_file\" go together",
        ),
        (
            "daemon:\n  source:\n    etcd:\n      endpoints: [\"http://e:1\"]\n      keys: /k\n",
            "daemon.source.etcd.keys: unknown key",
        ),
        (
            "daemon:\n  source:\n    consul: {}\n",
            "daemon.source.consul: unknown key",
        ),
    ];
    for (yaml, want) in cases {
        let errors = check(yaml, None).expect_err(yaml);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{yaml}: wanted {want:?} in {errors:#?}"
        );
    }
}

/// `daemon.source.etcd` with `endpoints` and `tls` lines (each under `etcd:`).
fn with_tls(endpoints: &str, tls: &str) -> String {
    format!("daemon:\n  source:\n    etcd:\n      endpoints: {endpoints}\n      key: /k\n{tls}")
}

#[test]
fn tls_takes_https_endpoints_a_ca_and_optionally_a_client_certificate() {
    let (source, _) = check(
        &with_tls(
            "[\"https://e:2379\", \"https://f:2379\"]",
            "      tls: { ca: ca.pem, cert: c.pem, key: c.key }\n",
        ),
        None,
    )
    .expect("valid");
    let tls = source.and_then(|s| s.tls).expect("tls settings");
    assert!(
        tls.ca.is_absolute() && tls.ca.ends_with("ca.pem"),
        "{tls:?}"
    );
    let client = tls.client.expect("a client certificate");
    assert!(client.cert.ends_with("c.pem") && client.key.ends_with("c.key"));
    let (source, _) = check(
        &with_tls("[\"https://e:2379\"]", "      tls: { ca: /ca.pem }\n"),
        None,
    )
    .expect("valid");
    assert_eq!(source.and_then(|s| s.tls).and_then(|t| t.client), None);
}

#[test]
fn tls_settings_that_cannot_work_are_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[\"https://e:1\", \"http://f:1\"]",
            "      tls: { ca: /ca.pem }\n",
            "daemon.source.etcd.endpoints: mixes http:// and https:// endpoints",
        ),
        (
            "[\"https://e:1\"]",
            "",
            "daemon.source.etcd: https:// endpoints need \"tls\" with at least \"ca\"",
        ),
        (
            "[\"http://e:1\"]",
            "      tls: { ca: /ca.pem }\n",
            "daemon.source.etcd.tls: TLS needs https:// endpoints",
        ),
        (
            "[\"https://e:1\"]",
            "      tls: { cert: /c.pem, key: /c.key }\n",
            "daemon.source.etcd.tls: missing \"ca\"",
        ),
        (
            "[\"https://e:1\"]",
            "      tls: { ca: /ca.pem, cert: /c.pem }\n",
            "daemon.source.etcd.tls: \"cert\" and \"key\" go together",
        ),
        (
            "[\"https://e:1\"]",
            "      tls: { ca: /ca.pem, client_ca: /x.pem }\n",
            "daemon.source.etcd.tls.client_ca: unknown key",
        ),
    ];
    for (endpoints, tls, want) in cases {
        let yaml = with_tls(endpoints, tls);
        let errors = check(&yaml, None).expect_err(&yaml);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{yaml}: wanted {want:?} in {errors:#?}"
        );
    }
}

#[test]
fn scripts_in_the_bootstrap_file_of_an_etcd_config_are_errors() {
    let yaml = format!("{BOOT}scripts:\n  a: {{ command: \"sleep 9\" }}\n");
    let errors = check(&yaml, None).expect_err("scripts beside an etcd source");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("scriptd.yaml:6:1: scripts: with daemon.source.etcd the config comes from the etcd key \"/k\""),
        "{errors:#?}"
    );
}

#[test]
fn the_value_may_not_include_files_or_set_daemon_keys() {
    let errors = check(BOOT, Some("include: [\"x/*.yaml\"]\n")).expect_err("include");
    assert!(
        errors[0].starts_with("etcd:/k:1:1: include: an etcd value cannot include files"),
        "{errors:#?}"
    );
    let errors = check(BOOT, Some("daemon: {}\n")).expect_err("daemon");
    assert!(
        errors[0].starts_with("etcd:/k:1:1: daemon: unknown key"),
        "{errors:#?}"
    );
    let errors = check(
        BOOT,
        Some("scripts:\n  a: { command: \"sleep 9\", intervl: 5s }\n"),
    )
    .expect_err("a bad script");
    assert!(errors[0].starts_with("etcd:/k:2:"), "{errors:#?}");
}

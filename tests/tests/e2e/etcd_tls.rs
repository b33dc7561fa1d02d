//! The etcd source over TLS (`https://` endpoints, `daemon.source.etcd.tls`) against a real
//! etcd serving clients over TLS only ([`Etcd::start_tls`], certificates made by the test
//! with rcgen): a put is applied; a CA or client certificate etcd does not accept is said
//! in `ctl status` and the log while the last version keeps running; user and password
//! over TLS; and files that cannot be used stop the start, naming the file.

use scriptd_e2e::{
    etcd_status, running_sleep, scriptd_exits, wait_for, Daemon, Env, Etcd, Pki, DEADLINE,
};
use std::path::{Path, PathBuf};

const KEY: &str = "/scriptd/hosts/tls/config";

/// A value running service `b`, `sleep {secs}`.
fn value(secs: u32) -> String {
    format!("defaults:\n  stop_grace: 1s\nscripts:\n  b:\n    command: \"sleep {secs}\"\n")
}

/// `daemon.source` lines for `endpoints` (a YAML flow list), [`KEY`], and `tls` (a YAML
/// flow mapping).
fn source(endpoints: &str, tls: &str) -> String {
    format!(
        "  source:\n    etcd:\n      endpoints: {endpoints}\n      key: {KEY}\n      tls: {tls}\n"
    )
}

/// `{ ca: CA }`, or `{ ca: CA, cert: C, key: K }` with a client certificate.
fn tls(ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> String {
    match client {
        None => format!("{{ ca: {} }}", ca.display()),
        Some((cert, key)) => format!(
            "{{ ca: {}, cert: {}, key: {} }}",
            ca.display(),
            cert.display(),
            key.display()
        ),
    }
}

/// The `daemon.source` lines for `etcd`'s endpoint with `tls`.
fn source_of(etcd: &Etcd, tls: &str) -> String {
    source(&format!("[\"{}\"]", etcd.url), tls)
}

/// Waits until `d`'s watch is established on `endpoint`.
fn connected(d: &Daemon, endpoint: &str) {
    wait_for(&format!("connected to {endpoint}"), DEADLINE, || {
        let s = etcd_status(d);
        (s.connected && s.endpoint == endpoint).then_some(())
    });
}

#[test]
fn over_tls_with_a_client_certificate_a_put_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "etcd");
    let etcd = Etcd::start_tls(&pki, true);
    etcd.put(KEY, &value(1001));
    let env = Env::new(&source_of(
        &etcd,
        &tls(&pki.ca, Some(&pki.client("daemon"))),
    ));
    let d = env.start();
    running_sleep(&d, "b", 1001);
    connected(&d, &etcd.url);
    assert!(etcd.url.starts_with("https://"), "{}", etcd.url);
    let revision = etcd.put(KEY, &value(1002));
    running_sleep(&d, "b", 1002);
    wait_for("the put to be the running revision", DEADLINE, || {
        (etcd_status(&d).running_revision == Some(revision)).then_some(())
    });
}

#[test]
fn certificates_etcd_does_not_accept_are_said_and_the_last_version_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "etcd");
    let other = Pki::new(dir.path(), "other");
    let etcd = Etcd::start_tls(&pki, true);
    etcd.put(KEY, &value(1001));
    let env = Env::new(&source_of(
        &etcd,
        &tls(&pki.ca, Some(&pki.client("daemon"))),
    ));
    let d = env.start();
    running_sleep(&d, "b", 1001);
    drop(d);

    let cases = [
        (
            "a CA that did not sign etcd's certificate",
            tls(&other.ca, Some(&pki.client("daemon"))),
            "etcd's certificate is not accepted",
            "daemon.source.etcd.tls.ca",
        ),
        (
            "no client certificate",
            tls(&pki.ca, None),
            "etcd requires a client certificate and got none",
            "daemon.source.etcd.tls.cert",
        ),
        (
            "a client certificate of another CA",
            tls(&pki.ca, Some(&other.client("daemon"))),
            "etcd refused the client certificate",
            "--trusted-ca-file",
        ),
    ];
    for (what, files, says, names) in cases {
        env.set_body(&source_of(&etcd, &files));
        let d = env.start();
        running_sleep(&d, "b", 1001);
        let s = etcd_status(&d);
        let problem = s.problem.clone().unwrap_or_default();
        assert!(!s.connected, "{what}: {s:?}");
        assert!(
            problem.contains(says) && problem.contains(names),
            "{what}: {problem}"
        );
        assert!(
            problem.contains("running the last version in the history"),
            "{what}: {problem}"
        );
        let log = d.log_text();
        assert!(log.contains(says), "{what}: the log says it too: {log}");
    }
}

#[test]
fn a_user_and_password_over_tls_and_a_wrong_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "etcd");
    let mut etcd = Etcd::start_tls(&pki, false);
    etcd.enable_auth("rootpw");
    etcd.put(KEY, &value(1001));
    let env = Env::new(&format!(
        "{}      username: root\n      password_file: password\n",
        source_of(&etcd, &tls(&pki.ca, None))
    ));
    env.write("password", "rootpw\n");
    let d = env.start();
    running_sleep(&d, "b", 1001);
    connected(&d, &etcd.url);
    etcd.put(KEY, &value(1002));
    running_sleep(&d, "b", 1002);
    drop(d);

    env.write("password", "wrong\n");
    let d = env.start();
    running_sleep(&d, "b", 1002);
    let problem = etcd_status(&d).problem.unwrap_or_default();
    assert!(
        problem.contains("authenticate failed") && problem.contains("invalid user ID or password"),
        "{problem}"
    );
}

#[test]
fn tls_files_that_cannot_be_used_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "etcd");
    let (cert, _) = pki.client("one");
    let (_, other_key) = pki.client("two");
    let (readable_cert, readable_key) = pki.client("three");
    std::fs::set_permissions(
        &readable_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let missing = dir.path().join("missing-ca.pem");
    // A certificate where the key should be, readable by the daemon's user only.
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::copy(&cert, &not_a_key).expect("copy");
    std::fs::set_permissions(
        &not_a_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let endpoint = "[\"https://127.0.0.1:1\"]";
    let cases = [
        (
            tls(&missing, None),
            format!(
                "cannot read daemon.source.etcd.tls.ca {}: No such file",
                missing.display()
            ),
        ),
        (
            tls(&pki.ca, Some(&(cert.clone(), other_key.clone()))),
            format!(
                "daemon.source.etcd.tls.key {} is not the private key of the certificate in \
                 daemon.source.etcd.tls.cert {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            tls(&pki.ca, Some(&(readable_cert, readable_key.clone()))),
            format!(
                "daemon.source.etcd.tls.key {} can be read by other users (mode 644)",
                readable_key.display()
            ),
        ),
        (
            tls(&pki.ca, Some(&(cert.clone(), not_a_key.clone()))),
            format!(
                "daemon.source.etcd.tls.key {}: no private key",
                not_a_key.display()
            ),
        ),
    ];
    for (files, says) in cases {
        let env = Env::new(&source(endpoint, &files));
        let r = env.check();
        assert_eq!(r.code, 3, "--check: {r:?}");
        assert!(
            r.stderr.contains("scriptd.yaml:") && r.stderr.contains(&says),
            "wanted {says:?} in {}",
            r.stderr
        );
        let r = scriptd_exits(&env.config());
        assert_eq!(r.code, 3, "start: {r:?}");
        assert!(r.stderr.contains(&says), "{}", r.stderr);
    }

    let env = Env::new(&source(
        "[\"https://127.0.0.1:1\", \"http://127.0.0.1:2\"]",
        &tls(&pki.ca, None),
    ));
    let r = env.check();
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr
            .contains("daemon.source.etcd.endpoints: mixes http:// and https:// endpoints"),
        "{}",
        r.stderr
    );
}

//! Refused TLS handshakes on the daemon's TCP listener are logged once per client address,
//! then counted: a client without a certificate retrying in a loop (or a scanner) is not a
//! log line per connection.

use scriptd_e2e::*;
use std::time::Duration;

#[test]
fn refused_handshakes_are_logged_once_per_address() {
    let home = ContextHome::new();
    let pki = Pki::new(&home.dir.path().join("pki"), "fleet");
    let port = free_port();
    let env = Env::new(&format!(
        "{}  access:\n    - {{ cert: ops, role: read }}\nscripts: {{}}\n",
        pki.listen_section(port)
    ));
    let d = env.start();
    home.add_tls("no-cert", port, &pki.ca, None);
    for _ in 0..3 {
        let r = home.ctl(&["--context", "no-cert", "status"]);
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains("requires a client certificate"),
            "{}",
            r.stderr
        );
    }
    let refused = || {
        d.log_text()
            .lines()
            .filter(|l| l.contains("refused a TLS handshake") && l.contains("address 127.0.0.1"))
            .count()
    };
    wait_for("the refusal in the daemon's log", DEADLINE, || {
        (refused() > 0).then_some(())
    });
    assert_stays(
        "one line for three refused handshakes",
        Duration::from_millis(300),
        || refused() == 1,
    );
}

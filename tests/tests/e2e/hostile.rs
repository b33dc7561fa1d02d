//! Hostile but small saves to a running daemon (issue 10 §3): each is rejected with its
//! errors at a position, the running version keeps running, and the daemon logs the
//! rejection as one record of bounded size however many errors there are.

use scriptd_e2e::{is_phase, Daemon, Env, Events};

const SVC: &str = "scripts:\n  svc:\n    command: [\"sleep\", \"1000\"]\n";

fn svc_pid(d: &Daemon) -> u32 {
    d.wait_script("svc", "running", |s| {
        s.state == "running" && s.pid.is_some()
    })
    .pid
    .unwrap_or_default()
}

/// Waits for the next rejected reload and checks that nothing changed.
fn rejected(d: &Daemon, ev: &mut Events, pid: u32) -> ctl::output::EventJson {
    let e = ev.wait("the hostile save to be rejected", |e| {
        is_phase(e, "rejected")
    });
    let st = d.status();
    assert_eq!(st.running_version, 1, "the running version stays");
    assert_eq!(st.sync, "invalid");
    assert_eq!(d.script("svc").pid, Some(pid), "svc untouched");
    e
}

#[test]
fn hostile_saves_are_rejected_and_logged_in_one_bounded_record() {
    let env = Env::new(SVC);
    let d = env.start();
    let pid = svc_pid(&d);
    let mut ev = Events::follow(&d);

    // 1,500 errors: one rejection, one log line with the first ten and a count.
    let mut body = SVC.to_owned();
    for i in 0..1500 {
        body.push_str(&format!(
            "  s{i:04}:\n    command: [/bin/true]\n    intervall: 5s\n"
        ));
    }
    env.set_body(&body);
    let e = rejected(&d, &mut ev, pid);
    let errors = e.errors.unwrap_or_default();
    assert_eq!(errors.len(), 1500, "the event carries every error");
    let attempt = format!("attempt={}", e.attempt_id.unwrap_or_default());
    let log = scriptd_e2e::wait_for(
        "the rejection in the daemon log",
        scriptd_e2e::DEADLINE,
        || {
            let log = d.log_text();
            log.contains("the config is invalid (1500 errors)")
                .then_some(log)
        },
    );
    let records: Vec<&str> = log.lines().filter(|l| l.contains(&attempt)).collect();
    let rejection: Vec<&&str> = records
        .iter()
        .filter(|l| l.contains("the config is invalid"))
        .collect();
    assert_eq!(rejection.len(), 1, "{records:#?}");
    let line = rejection[0];
    assert!(
        line.contains("scripts.s0009.intervall"),
        "the first ten: {line}"
    );
    assert!(!line.contains("scripts.s0010."), "not the eleventh: {line}");
    assert!(line.contains("; and 1490 more"), "{line}");
    assert!(line.len() < 8 * 1024, "{} bytes: {line}", line.len());
    assert!(
        !log.contains("scripts.s1499"),
        "no error past the first ten is logged"
    );

    // 100,000 `[`: refused where the nesting passes 64 levels, not parsed for a minute.
    env.set_body(&format!("{SVC}defaults: {}", "[".repeat(100_000)));
    let e = rejected(&d, &mut ev, pid);
    let errors = e.errors.unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].line > 0 && errors[0].column > 0, "{errors:#?}");
    assert!(
        errors[0].message.contains("nested deeper than 64 levels"),
        "{errors:#?}"
    );

    // An include of /proc/kmsg: refused, not read (reading it blocks and consumes the kernel
    // log).
    env.set_body(&format!("include: [\"/proc/kmsg\"]\n{SVC}"));
    let e = rejected(&d, &mut ev, pid);
    let errors = e.errors.unwrap_or_default();
    assert!(
        errors.len() == 1 && errors[0].message.contains("it is on procfs (/proc)"),
        "{errors:#?}"
    );
}

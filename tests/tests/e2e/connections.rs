//! Connections and the daemon's own resources: the soft descriptor limit raised to the hard
//! one at startup, connections with no call in flight closed after the idle timeout (and
//! followers kept), a uid with no role that cannot lock root out with idle connections,
//! refusals logged once per uid, and `state_dir` / `log_dir` that other users could write
//! refused at startup.
//!
//! Tests named `..._as_root` connect as other uids: they need root and are ignored ("needs
//! root") otherwise.

use hyper_util::rt::TokioIo;
use scriptd_e2e::{
    closed_by_peer, connect_as, exits, fd_count, scriptd_exits, wait_for, Daemon, Env, Events,
    DAEMON_SECTION, DEADLINE,
};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

/// The per-uid connection cap, as the README states it.
const PER_UID: usize = 64;
/// A uid with no role in [`access_env`].
const STRANGER: u32 = 54320;

/// A config granting uid 54321 the read role (so the socket is open to every uid), in a
/// directory other uids may pass through.
fn access_env() -> Env {
    let env = Env::new("");
    env.write(
        "scriptd.yaml",
        &format!("{DAEMON_SECTION}  access:\n    - {{ user: 54321, role: read }}\n"),
    );
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
    env
}

/// `ctl status` as root, failing the test (not hanging it) if it does not answer.
fn root_status(d: &Daemon) {
    let child = d
        .ctl_command(&["status"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl status");
    let r = exits(child, "ctl status as root");
    assert_eq!(r.code, 0, "root's ctl status answers: {r:?}");
}

/// Lines of the daemon's log containing every one of `needles`.
fn log_lines(d: &Daemon, needles: &[&str]) -> usize {
    d.log_text()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let (_, hard_here) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let hard = hard_here.min(4096);
    let env = Env::new("");
    let d = env.start_with_nofile(256, hard, &[]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", d.pid())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let hard_text = hard.to_string();
    assert_eq!(
        (fields[3], fields[4]),
        (hard_text.as_str(), hard_text.as_str()),
        "soft raised to hard: {line}"
    );
    assert!(
        d.log_text().contains(&format!(
            "descriptor limit (RLIMIT_NOFILE): soft 256 raised to the hard limit {hard}"
        )),
        "both limits are logged: {}",
        d.log_text()
    );
}

#[test]
fn idle_connections_are_closed_and_followers_are_not() {
    let env = Env::new("");
    let d = env.start_with_env(&[("SCRIPTD_IDLE_TIMEOUT", "1s")]);
    // A follower that sees no event for longer than the timeout.
    let mut events = Events::follow(&d);
    let idle: Vec<std::os::fd::OwnedFd> = (0..5)
        .map(|_| {
            let s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
            s.set_nonblocking(true).expect("non-blocking");
            s.into()
        })
        .collect();
    wait_for("the daemon to close the idle connections", DEADLINE, || {
        idle.iter().all(closed_by_peer).then_some(())
    });
    assert!(
        d.log_text().contains("closing a connection idle for 1s"),
        "{}",
        d.log_text()
    );
    // The follower was idle as long, but its call is in flight: it still gets events.
    let (code, r) = d.reload(&[]);
    assert_eq!(code, 0, "{r:?}");
    let id = r.attempt_id.expect("attempt id");
    events.wait("the reload's event on the old follower", |e| {
        e.attempt_id == Some(id)
    });
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn a_uid_without_a_role_cannot_lock_root_out_as_root() {
    // The test holds the stranger's end of every connection.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the test's own limit");
    let many = 1100;
    assert!(
        hard > many as u64 + 100,
        "the test needs {many} descriptors"
    );

    let env = access_env();
    // Uncapped, 1,100 idle connections would pin this daemon at its limit.
    let d = env.start_with_nofile(1024, 1024, &[]);
    let before = fd_count(d.pid());
    let conns = connect_as(STRANGER, &d.socket, many);
    assert_eq!(conns.len(), many);
    // All but the cap are closed at once; the cap's worth stays open.
    wait_for(
        "all but the stranger's capped connections to be closed",
        DEADLINE,
        || {
            let open = conns.iter().filter(|c| !closed_by_peer(c)).count();
            (open == PER_UID).then_some(())
        },
    );
    root_status(&d);
    let held = fd_count(d.pid());
    assert!(
        held <= before + PER_UID + 8,
        "the daemon holds {held} descriptors, {before} before the stranger came"
    );
    // One report (and at most a summary), not a thousand.
    let reports = log_lines(&d, &["closed a new connection at once", "uid=54320"]);
    assert!(
        (1..=2).contains(&reports),
        "{reports} reports:\n{}",
        d.log_text()
    );
    // Closed connections give their places back: a new batch is served in full (once the
    // daemon has seen the old ones close).
    drop(conns);
    wait_for(
        "a new batch of the stranger's to be served",
        DEADLINE,
        || {
            let again = connect_as(STRANGER, &d.socket, PER_UID);
            let answers = wait_for(
                "the daemon to answer every new connection",
                DEADLINE,
                || again.iter().map(served).collect::<Option<Vec<bool>>>(),
            );
            answers.iter().all(|&ok| ok).then_some(())
        },
    );
}

/// Whether the daemon served the connection `fd` (its HTTP/2 settings arrived) or closed
/// it; `None` while it has done neither.
fn served(fd: &std::os::fd::OwnedFd) -> Option<bool> {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    match recv(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => Some(false),
        Ok(_) => Some(true),
        Err(nix::errno::Errno::EAGAIN) => None,
        Err(_) => Some(false),
    }
}

#[test]
fn at_the_descriptor_limit_the_accept_loop_backs_off_and_recovers() {
    let env = Env::new("");
    let d = env.start_with_nofile(64, 64, &[("SCRIPTD_IDLE_TIMEOUT", "2s")]);
    // The daemon's own uid is not capped: its idle connections fill the daemon's table.
    let idle: Vec<std::os::unix::net::UnixStream> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&d.socket).expect("connect"))
        .collect();
    wait_for("the daemon to reach its descriptor limit", DEADLINE, || {
        d.log_text()
            .contains("cannot accept connections: Too many open files")
            .then_some(())
    });
    // The idle ones are closed, accepting resumes, and ctl answers again.
    wait_for("the daemon to accept again", DEADLINE, || {
        d.log_text()
            .contains("accepting connections again")
            .then_some(())
    });
    root_status(&d);
    drop(idle);
    // Backing off, not spinning: one report (and at most a summary), not one per retry.
    let reports = log_lines(&d, &["cannot accept connections"]);
    assert!(
        (1..=2).contains(&reports),
        "{reports} reports:\n{}",
        d.log_text()
    );
}

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn refusals_of_one_uid_are_logged_once_as_root() {
    let env = access_env();
    let d = env.start();
    let conn = connect_as(STRANGER, &d.socket, 1)
        .pop()
        .expect("a connection");
    let stream = std::os::unix::net::UnixStream::from(conn);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let calls = 200;
    let refused = runtime.block_on(async move {
        let slot = std::sync::Mutex::new(Some(stream));
        let channel = tonic::transport::Endpoint::from_static("http://scriptd.invalid")
            .connect_with_connector(tower::service_fn(move |_| {
                let stream = slot.lock().expect("slot").take();
                async move {
                    let stream = stream.ok_or_else(|| std::io::Error::other("one connection"))?;
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::from_std(stream)?))
                }
            }))
            .await
            .expect("channel");
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut refused = 0;
        for _ in 0..calls {
            let r = client
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            if r.is_err_and(|s| s.code() == tonic::Code::PermissionDenied) {
                refused += 1;
            }
        }
        refused
    });
    assert_eq!(refused, calls, "every call is refused");
    // Every refusal was answered; the log has the first one only (summaries come once a
    // minute).
    let logged = log_lines(&d, &["refused: uid 54320 has no role"]);
    assert_eq!(logged, 1, "{}", d.log_text());
}

#[test]
fn state_and_log_dirs_others_can_write_are_refused() {
    for (key, dir) in [("daemon.state_dir", "state"), ("daemon.log_dir", "logs")] {
        for (mode, what, fix) in [
            (0o777, "writable by others", "chmod go-w"),
            (0o1777, "is shared (mode 1777)", "chmod o-w"),
        ] {
            let env = Env::new("");
            let path = env.path(dir);
            fs::create_dir_all(&path).expect("mkdir");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let r = scriptd_exits(&env.config());
            assert_eq!(r.code, 1, "{dir} {mode:o}: {r:?}");
            assert!(
                r.stderr
                    .contains(&format!("{key} {} is refused", path.display()))
                    && r.stderr.contains(what)
                    && r.stderr.contains(&format!("{fix} {}", path.display())),
                "{dir} {mode:o}: the error names the key and the fix: {}",
                r.stderr
            );
            assert!(!env.socket().exists(), "nothing was started: {}", r.stderr);
        }
    }
    // Group-writable by a group that is not the owner's private one: refused too, with the
    // fix (root can give the directory such a group).
    if nix::unistd::geteuid().is_root() {
        let env = Env::new("");
        let path = env.path("logs");
        fs::create_dir_all(&path).expect("mkdir");
        nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(54329))).expect("chown");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o775)).expect("chmod");
        let r = scriptd_exits(&env.config());
        assert_eq!(r.code, 1, "{r:?}");
        assert!(
            r.stderr.contains("writable by group") && r.stderr.contains("chmod go-w"),
            "{}",
            r.stderr
        );
    }
    // Those the daemon creates itself are fine.
    let env = Env::new("");
    let d = env.start();
    assert_eq!(d.ctl(&["status"]).code, 0);
}

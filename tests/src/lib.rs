//! Harness for end-to-end tests: a temp dir with a config, the real `scriptd` started on it
//! with its own socket, the real `ctl` run against it, and polling with deadlines (never a
//! bare sleep).
//!
//! [`Events`] follows `ctl events --output json` for tests that wait on reload and script
//! events.
//!
//! The binaries come from the same target directory as the test executable; `cargo test
//! --workspace` builds them (the daemon and cli packages have integration tests of their
//! own, which makes cargo build their binaries first). `SCRIPTD_BIN` / `CTL_BIN` override.

use ctl::output::{EventJson, ReloadJson, ScriptJson, StatusJson};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default deadline for things that should happen "soon".
pub const DEADLINE: Duration = Duration::from_secs(10);

fn bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the tests with `cargo test --workspace` (or set {env})",
        path.display()
    );
    path
}

/// Path of the `scriptd` binary under test.
pub fn scriptd_bin() -> PathBuf {
    bin("scriptd", "SCRIPTD_BIN")
}

/// Path of the `ctl` binary under test.
pub fn ctl_bin() -> PathBuf {
    bin("ctl", "CTL_BIN")
}

/// Copies the executable `from` to `to` (mode 0755) and returns once `to` can be run. A
/// process that another test thread forks while the copy is open for writing holds that
/// descriptor until it execs, and running `to` meanwhile fails with "Text file busy".
pub fn copy_executable(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    wait_for("the copied executable to be free to run", DEADLINE, || {
        // `--version` is parsed before anything else; the process is killed at once anyway.
        let spawned = Command::new(to)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                Some(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
            Err(e) => panic!("run {}: {e}", to.display()),
        }
    });
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `deadline` saying what was
/// awaited.
pub fn wait_for<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_opt(deadline, f)
        .unwrap_or_else(|| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Like [`wait_for`], but `None` at the deadline instead of a panic.
pub fn wait_for_opt<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` for the whole `window`; panics the first time it does not hold. For asserting
/// that something does *not* happen.
pub fn assert_stays(what: &str, window: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    loop {
        assert!(f(), "{what}: no longer holds");
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Text of a file, empty when it does not exist (yet).
pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Lines of a file the scripts append to, none when it does not exist (yet).
pub fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_owned).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the `scriptd` binary on `config` and waits (with a deadline) for it to exit: a
/// daemon that should refuse to start but keeps running fails the test instead of hanging.
pub fn scriptd_exits(config: &Path) -> Run {
    let child = Command::new(scriptd_bin())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn scriptd");
    exits(child, &format!("scriptd --config {}", config.display()))
}

/// Waits (with a deadline) for `child`, whose stdout and stderr are piped, to exit; kills it
/// and fails the test if it keeps running.
pub fn exits(mut child: Child, what: &str) -> Run {
    let end = Instant::now() + DEADLINE;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} kept running; it should have exited");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output").into()
}

/// Result of a `ctl` run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A temp directory holding a config.
pub struct Env {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
}

/// The text of [`DAEMON_SECTION`], for `concat!`.
macro_rules! daemon_section {
    () => {
        "daemon:\n  socket: run/scriptd.sock\n  state_dir: state\n  log_dir: logs\n  debounce: 20ms\n"
    };
}

/// The `daemon:` section every test config starts with.
pub const DAEMON_SECTION: &str = daemon_section!();

/// [`DAEMON_SECTION`] with the watcher off: changes apply only on `ctl reload` or SIGHUP. For
/// tests that need the `ctl reload` answer itself (the watcher would otherwise race it).
pub const NO_WATCH_SECTION: &str = concat!(daemon_section!(), "  watch: false\n");

impl Env {
    /// A temp dir with `scriptd.yaml` = [`DAEMON_SECTION`] + `body`.
    pub fn new(body: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("scriptd-e2e")
            .tempdir()
            .expect("temp dir");
        let env = Self { dir };
        env.write("scriptd.yaml", &format!("{DAEMON_SECTION}{body}"));
        env
    }

    /// A temp dir with `scriptd.yaml` = [`NO_WATCH_SECTION`] + `body`.
    pub fn manual(body: &str) -> Self {
        let env = Self::new("");
        env.set_manual(body);
        env
    }

    /// A temp dir whose config runs one script per `(name, body, settings)`, each written
    /// as a file (see [`Self::script_entry`]).
    pub fn with_scripts(scripts: &[(&str, &str, &str)]) -> Self {
        let env = Self::new("");
        let entries: String = scripts
            .iter()
            .map(|(name, body, settings)| env.script_entry(name, body, settings))
            .collect();
        env.set_body(&format!("scripts:\n{entries}"));
        env
    }

    /// Writes the shell script `body` to `NAME.sh` and returns the config entry of script
    /// `name` running it, with `settings` (YAML lines under the script: `    key: value\n`).
    /// Scripts run in the config directory: relative paths in `body` are inside it.
    pub fn script_entry(&self, name: &str, body: &str, settings: &str) -> String {
        let path = self.script(&format!("{name}.sh"), body);
        format!(
            "  {name}:\n    command: [\"{}\"]\n{settings}",
            path.display()
        )
    }

    /// Path inside the dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Main config path.
    pub fn config(&self) -> PathBuf {
        self.path("scriptd.yaml")
    }

    /// Socket path.
    pub fn socket(&self) -> PathBuf {
        self.path("run/scriptd.sock")
    }

    /// Writes a file atomically (temp file + rename), as most editors save, mode 0644.
    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        let tmp = path.with_extension("tmp~");
        fs::write(&tmp, content).expect("write temp file");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::rename(&tmp, &path).expect("rename into place");
    }

    /// Writes an executable script file (mode 0755) and returns its path.
    pub fn script(&self, rel: &str, body: &str) -> PathBuf {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Replaces the main config body (keeping the daemon section).
    pub fn set_body(&self, body: &str) {
        self.write("scriptd.yaml", &format!("{DAEMON_SECTION}{body}"));
    }

    /// Replaces the main config with [`NO_WATCH_SECTION`] + `body`.
    pub fn set_manual(&self, body: &str) {
        self.write("scriptd.yaml", &format!("{NO_WATCH_SECTION}{body}"));
    }

    /// Waits until the file `rel` reads exactly `want`.
    pub fn wait_file(&self, rel: &str, want: &str) {
        let path = self.path(rel);
        let mut last = String::new();
        let found = wait_for_opt(DEADLINE, || {
            last = read(&path);
            (last == want).then_some(())
        });
        assert!(
            found.is_some(),
            "{rel} should read {want:?}, reads {last:?}"
        );
    }

    /// `scriptd --check` on this config.
    pub fn check(&self) -> Run {
        Command::new(scriptd_bin())
            .arg("--check")
            .arg("--config")
            .arg(self.config())
            .output()
            .expect("run scriptd --check")
            .into()
    }

    /// Starts the daemon and waits until `ctl status` answers.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// Like [`Self::start`], with extra environment variables for the daemon.
    pub fn start_with_env(&self, vars: &[(&str, &str)]) -> Daemon {
        self.start_binary(&scriptd_bin(), vars)
    }

    /// Like [`Self::start_with_env`], with the daemon binary at `bin`.
    pub fn start_binary(&self, bin: &Path, vars: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin);
        cmd.envs(vars.iter().copied());
        self.start_command(cmd)
    }
}

/// A running daemon; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Daemon {
    child: Option<Child>,
    /// Its socket.
    pub socket: PathBuf,
    /// Its stderr log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Pid of the daemon process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The command `ctl --socket S ARGS`, not started: for a `ctl` the caller spawns itself
    /// (a follower) or whose stdio it sets up.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ctl_bin());
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("SCRIPTD_CONFIG");
        cmd
    }

    /// Runs `ctl --socket S ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_command(args).output().expect("run ctl").into()
    }

    /// Runs `ctl --socket S ARGS`, which must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let r = self.ctl(args);
        assert_eq!(r.code, 0, "ctl {args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// `ctl reload --output json ARGS`: exit code and the document, parsed strictly.
    pub fn reload(&self, args: &[&str]) -> (i32, ReloadJson) {
        let mut all = vec!["reload", "--output", "json"];
        all.extend_from_slice(args);
        let r = self.ctl(&all);
        let doc = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("`ctl {}` JSON does not parse ({e}): {r:?}", all.join(" ")));
        (r.code, doc)
    }

    /// `ctl status --output json`, parsed strictly.
    pub fn status(&self) -> StatusJson {
        let r = self.ctl(&["status", "--output", "json"]);
        assert_eq!(r.code, 0, "ctl status failed: {}", r.stderr);
        serde_json::from_str(&r.stdout).expect("status JSON parses with the strict schema")
    }

    /// Status of one script.
    pub fn script(&self, name: &str) -> ScriptJson {
        self.status()
            .scripts
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no script {name} in status"))
    }

    /// Waits until `pred` holds for the script's status; returns that status.
    pub fn wait_script(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&ScriptJson) -> bool,
    ) -> ScriptJson {
        wait_for(&format!("{name}: {what}"), DEADLINE, || {
            let s = self.script(name);
            pred(&s).then_some(s)
        })
    }

    /// The daemon's own log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal daemon");
    }

    /// Waits for the daemon to exit; returns its exit code (None when killed by a signal).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("daemon running");
        let status = wait_for("the daemon to exit", deadline, || {
            child.try_wait().ok().flatten()
        });
        status.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// True when a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // State is the field after the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

/// True when nothing at all is left of `pid`: not running and not a zombie either.
pub fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until none of `pids` exists any more, zombies included.
pub fn wait_gone(pids: &[u32], what: &str) {
    wait_for(what, DEADLINE, || {
        pids.iter().all(|&p| gone(p)).then_some(())
    });
}

/// Command line of a process, NULs as spaces; empty when it is gone.
pub fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// A marker for the processes of one test, to find them among all processes with
/// [`pids_with_marker`]: `base` (a number of seconds for `sleep`, distinct per test) followed
/// by this test process's pid, so that another run of the suite on the same machine never
/// matches it.
pub fn unique_marker(base: &str) -> String {
    format!("{base}{:07}", std::process::id())
}

/// Pids of every live process whose raw command line (NUL-separated) contains `marker`.
pub fn pids_with_marker(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// A command run in the background (a `ctl` follower) whose stdout lines arrive on a channel,
/// read by a thread of its own; killed on drop.
pub struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    /// Spawns `cmd` with stdout piped and stdin and stderr null, and starts reading.
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// `ctl ARGS` against `d`, followed.
    pub fn start(d: &Daemon, args: &[&str]) -> Self {
        Self::spawn(&mut d.ctl_command(args))
    }

    /// The next line, waiting at most `timeout`; an error at the timeout or once the output
    /// ended and every line was taken.
    pub fn next_line(&self, timeout: Duration) -> Result<String, mpsc::RecvTimeoutError> {
        self.lines.recv_timeout(timeout)
    }

    /// Lines until one contains `needle` (within [`DEADLINE`]); every line read.
    pub fn until(&self, needle: &str, what: &str) -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    got.push(l);
                    if hit {
                        return got;
                    }
                }
                Err(_) => panic!("timed out waiting for {what} ({needle:?}); got: {got:#?}"),
            }
        }
    }

    /// Waits for the process to exit by itself; its exit code and the lines not taken yet.
    pub fn wait_exit(mut self, what: &str) -> (Option<i32>, Vec<String>) {
        let status = wait_for(what, DEADLINE, || self.child.try_wait().ok().flatten());
        // The reader thread ends with the pipe: what is left arrives, then the channel ends.
        let rest = self.lines.iter().collect();
        (status.code(), rest)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `e` is a reload event in `phase` (`applied`, `rejected`, `unchanged`, ...).
pub fn is_phase(e: &EventJson, phase: &str) -> bool {
    e.kind == "reload" && e.phase.as_deref() == Some(phase)
}

/// `ctl events --output json` run in the background and followed line by line; killed on
/// drop. Every event received is kept in [`Events::seen`]; the `wait` methods consume them in
/// order, so an event is matched by at most one wait.
pub struct Events {
    follower: Follower,
    /// Every event received so far.
    seen: Vec<EventJson>,
    /// Index in `seen` of the first event no `wait` has consumed.
    cursor: usize,
}

impl Events {
    /// Starts following and returns once the follower provably receives events: it runs
    /// `ctl reload` of the unchanged files until that attempt's `unchanged` event shows up in
    /// the stream. The files on disk must be the running version.
    pub fn follow(d: &Daemon) -> Self {
        let mut ev = Self {
            follower: Follower::start(d, &["events", "--output", "json"]),
            seen: Vec::new(),
            cursor: 0,
        };
        // A reload made before the follower subscribed is not seen: reload again, with a
        // window growing from 50 ms (a subscribed follower gets the event within a few ms).
        // The event awaited is the last attempt's: every event of an earlier attempt comes
        // before it, so none arrives after this returns.
        let mut attempts = 0;
        wait_for("`ctl events` to receive events", DEADLINE, || {
            let (code, r) = d.reload(&[]);
            assert_eq!(
                (code, r.result.as_str()),
                (0, "unchanged"),
                "the sync reload must find nothing to do: {r:?}"
            );
            let id = r.attempt_id.expect("attempt id");
            let window = Duration::from_millis(50 << attempts.min(3));
            attempts += 1;
            ev.wait_opt(window, |e| {
                is_phase(e, "unchanged") && e.attempt_id == Some(id)
            })
            .map(|_| ())
        });
        ev
    }

    /// Every event received so far, consumed or not, in order.
    pub fn seen(&self) -> &[EventJson] {
        &self.seen
    }

    /// Receives one event (waiting at most until `end`) into `seen`; false at `end`.
    fn pull(&mut self, end: Instant) -> bool {
        let left = end.saturating_duration_since(Instant::now());
        match self.follower.next_line(left) {
            Ok(line) => {
                let e: EventJson = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("event line does not parse ({e}): {line}"));
                assert_eq!(e.schema, 1, "event without schema 1: {e:?}");
                self.seen.push(e);
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("`ctl events` ended"),
        }
    }

    /// The first unconsumed event matching `pred`, within `deadline`; consumes it and every
    /// event before it. `None` at the deadline.
    pub fn wait_opt(
        &mut self,
        deadline: Duration,
        pred: impl Fn(&EventJson) -> bool,
    ) -> Option<EventJson> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(i) = self.seen[self.cursor..].iter().position(&pred) {
                let i = self.cursor + i;
                self.cursor = i + 1;
                return Some(clone_event(&self.seen[i]));
            }
            self.cursor = self.seen.len();
            if !self.pull(end) {
                return None;
            }
        }
    }

    /// Like [`Self::wait_opt`] with [`DEADLINE`], panicking at the deadline with what was
    /// awaited and every event seen.
    pub fn wait(&mut self, what: &str, pred: impl Fn(&EventJson) -> bool) -> EventJson {
        match self.wait_opt(DEADLINE, pred) {
            Some(e) => e,
            None => panic!(
                "timed out waiting for event: {what}; events seen:\n{}",
                self.dump()
            ),
        }
    }

    /// Collects whatever arrives during `window` into [`Self::seen`]: for tests that prove
    /// something did not happen in a while.
    pub fn collect_for(&mut self, window: Duration) {
        let end = Instant::now() + window;
        while self.pull(end) {}
    }

    /// Every event seen so far, one JSON line each: for failure messages.
    pub fn dump(&self) -> String {
        self.seen
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics if any reload so far was rejected or failed, or removed a script.
    pub fn assert_no_bad_reload(&self) {
        for e in &self.seen {
            let bad = is_phase(e, "rejected")
                || is_phase(e, "failed-rolled-back")
                || e.changes
                    .iter()
                    .flatten()
                    .any(|c| c.field == "*" && c.impact == "stop");
            assert!(
                !bad,
                "unexpected reload event {e:?}; all events:\n{}",
                self.dump()
            );
        }
    }
}

/// A copy of an event (`EventJson` is not `Clone`): a round trip through JSON.
fn clone_event(e: &EventJson) -> EventJson {
    serde_json::from_value(serde_json::to_value(e).expect("event to JSON"))
        .expect("event from JSON")
}

impl Env {
    /// Like [`Self::start_with_env`], with the daemon's descriptor limit (`RLIMIT_NOFILE`)
    /// set to `soft`:`hard` before it starts, as `prlimit --nofile=SOFT:HARD` would.
    pub fn start_with_nofile(&self, soft: u64, hard: u64, vars: &[(&str, &str)]) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(scriptd_bin());
        cmd.envs(vars.iter().copied());
        // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    soft,
                    hard,
                )
                .map_err(std::io::Error::from)
            });
        }
        self.start_command(cmd)
    }
}

/// How many descriptors process `pid` has open.
pub fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Opens `n` connections to the Unix socket `path` as effective uid `uid` (needs root):
/// only the thread that connects changes its effective uid (a raw `setresuid`, not glibc's,
/// which would change every thread of the test process), so the daemon's SO_PEERCRED says
/// `uid`. Connecting does not block: a connection the listen queue has no room for is
/// retried until the deadline. Returns the client ends, non-blocking.
pub fn connect_as(uid: u32, path: &Path, n: usize) -> Vec<std::os::fd::OwnedFd> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: a raw syscall changing this thread's credentials only; the saved uid stays
        // 0, and the thread ends without running anything else.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, -1i64, i64::from(uid), -1i64) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        let addr = UnixAddr::new(&path).expect("socket address");
        let end = Instant::now() + DEADLINE;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .expect("socket");
            match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
                Ok(()) => out.push(fd),
                Err(nix::errno::Errno::EAGAIN) => {
                    assert!(
                        Instant::now() < end,
                        "the listen queue stayed full: {} of {n} connected",
                        out.len()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("connect {}: {e}", path.display()),
            }
        }
        out
    })
    .join()
    .expect("connecting thread")
}

/// Whether the other end has closed the connection `fd` (non-blocking): whatever it sent
/// first is read and dropped.
pub fn closed_by_peer(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    loop {
        match nix::sys::socket::recv(
            fd.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(nix::errno::Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
}

/// A tmpfs mounted on a directory for one test (root only), unmounted (lazily: the daemon
/// may still be closing its files) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`) with `mode` on `dir`, creating `dir`.
    pub fn mount(dir: &Path, size: &str, mode: &str) -> Self {
        fs::create_dir_all(dir).expect("mkdir the mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode={mode}"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until its file system is full (to the last byte).
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut f = fs::File::create(path).expect("create the filler");
    for chunk in [64 * 1024, 512, 1] {
        let zeros = vec![0u8; chunk];
        while f.write_all(&zeros).is_ok() {}
    }
}

/// The soft and hard descriptor limits ("Max open files") of process `pid`, from
/// `/proc/PID/limits`, as written there (a number or `unlimited`).
pub fn nofile_limits(pid: u32) -> (String, String) {
    proc_limit(pid, "Max open files")
}

/// A system user created for one test (`useradd --system --no-create-home`, shell
/// `/bin/sh`, home `/nonexistent`), member of a supplementary group created with it; both
/// deleted on drop, also when the test fails. Needs root and `useradd`/`groupadd` (Debian
/// package `passwd`); without them it panics saying so.
pub struct TestUser {
    /// The user's name, which is also its supplementary group's name with a `g` prefix.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid (its own user-private group).
    pub gid: u32,
    /// The gid of its supplementary group.
    pub extra_gid: u32,
}

/// `useradd` and friends lock `/etc/passwd`: one at a time in this process.
static ACCOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs an account tool (`useradd`, `groupadd`, `userdel`, `groupdel`), retrying while
/// another process holds the account files' lock (exit code 10); the failure otherwise.
fn account_tool(tool: &str, args: &[&str]) -> Result<(), String> {
    let _one = ACCOUNTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut last = String::new();
    let done = wait_for_opt(DEADLINE, || {
        let out = match Command::new(tool).args(args).output() {
            Ok(out) => out,
            Err(e) => {
                last = format!(
                    "cannot run {tool} ({e}): install the Debian package `passwd` (useradd, \
                     groupadd, userdel, groupdel)"
                );
                return Some(false);
            }
        };
        if out.status.success() {
            return Some(true);
        }
        last = format!(
            "{tool} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // 10: cannot lock the account files; anything else will not get better.
        (out.status.code() != Some(10)).then_some(false)
    });
    match done {
        Some(true) => Ok(()),
        _ => Err(last),
    }
}

/// The numeric id `id FLAG NAME` prints (`-u`, `-g`).
fn id_of(flag: &str, name: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, name])
        .output()
        .expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id {flag} {name}: {out:?}"))
}

impl TestUser {
    /// Creates the user and its supplementary group, with names unique to this test.
    pub fn create() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sdt{}x{n}", std::process::id());
        let group = format!("g{name}");
        account_tool("groupadd", &["--system", &group]).unwrap_or_else(|e| panic!("{e}"));
        let created = account_tool(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/bin/sh",
                "--groups",
                &group,
                &name,
            ],
        );
        if let Err(e) = created {
            let _ = account_tool("groupdel", &[&group]);
            panic!("{e}");
        }
        Self {
            uid: id_of("-u", &name),
            gid: id_of("-g", &name),
            extra_gid: nix::unistd::Group::from_name(&group)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .unwrap_or_else(|| panic!("group {group} was just created")),
            name,
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = account_tool("userdel", &[&self.name]);
        let _ = account_tool("groupdel", &[&format!("g{}", self.name)]);
    }
}

/// The `Uid:`/`Gid:`/`Groups:` line of `/proc/PID/status` (real, effective, saved, fs ids;
/// the supplementary groups), as written there.
pub fn proc_status_line(pid: u32, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {key}: line in /proc/{pid}/status"))
}

/// The soft and hard limits of the `/proc/PID/limits` line that starts with `name` (`Max
/// processes`), as written there (a number or `unlimited`).
pub fn proc_limit(pid: u32, name: &str) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name:?} line in /proc/{pid}/limits"));
    let rest = line[name.len()..].split_whitespace().collect::<Vec<_>>();
    (rest[0].to_owned(), rest[1].to_owned())
}

impl Env {
    /// Like [`Self::start`], with the daemon running as `uid`:`gid` (no supplementary
    /// groups) instead of root. Its `state`, `logs` and `run` directories are created first,
    /// owned by it (the config directory stays root's, which it may not write).
    pub fn start_as(&self, uid: u32, gid: u32) -> Daemon {
        use std::os::unix::process::CommandExt;
        for dir in ["state", "logs", "run"] {
            let path = self.path(dir);
            fs::create_dir_all(&path).expect("create a daemon directory");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
            nix::unistd::chown(
                &path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .expect("chown a daemon directory");
        }
        let mut cmd = Command::new(scriptd_bin());
        cmd.uid(uid).gid(gid);
        self.start_command(cmd)
    }

    /// Starts `cmd` (a `scriptd` binary, with whatever the caller set up) on this config,
    /// logging to `daemon.log` at `SCRIPTD_LOG=debug` unless `cmd` sets it, and waits until
    /// `ctl status` answers.
    pub fn start_command(&self, mut cmd: Command) -> Daemon {
        let log = fs::File::create(self.path("daemon.log")).expect("daemon log");
        if !cmd.get_envs().any(|(k, _)| k == "SCRIPTD_LOG") {
            cmd.env("SCRIPTD_LOG", "debug");
        }
        let child = cmd
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn scriptd");
        let d = Daemon {
            child: Some(child),
            socket: self.socket(),
            log: self.path("daemon.log"),
        };
        wait_for("the daemon to answer `ctl status`", DEADLINE, || {
            (d.ctl(&["status"]).code == 0).then_some(())
        });
        d
    }
}

// ------------------------------------------------------------------ metrics and Prometheus

/// The path of `program` on `PATH`; fails the test naming the Debian package to install
/// when it is missing (`.ci/run` installs it), so a missing component never passes.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed: this test needs it; install the Debian package \
             {package} (`apt-get install {package}`, which .ci/run does)"
        )
    })
}

/// The address the daemon serves `/metrics` on (`daemon.metrics: 127.0.0.1:0` picks a free
/// port), from its log.
pub fn metrics_address(d: &Daemon) -> String {
    wait_for("the daemon to log its metrics address", DEADLINE, || {
        let log = d.log_text();
        let at = log.find("serving GET /metrics addr=")?;
        let rest = &log[at + "serving GET /metrics addr=".len()..];
        Some(rest.split_whitespace().next()?.to_owned())
    })
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into()
}

/// `METHOD url` (GET or POST) with an optional `Accept`: the status, content type and body.
pub fn http(method: &str, url: &str, accept: Option<&str>) -> (u16, String, String) {
    let agent = http_agent();
    let response = match method {
        "GET" => {
            let mut req = agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            req.call()
        }
        "POST" => agent.post(url).send_empty(),
        other => panic!("http: method {other} is not supported by the harness"),
    };
    let mut r = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
    (r.status().as_u16(), content_type, body)
}

/// The value of the sample `series` (`name{labels}` exactly as exposed) in a text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A Prometheus server (Debian's `prometheus`) of the test's own: its config, data and log
/// in a temp dir, on a free loopback port, scraping `target` every second. Killed on drop.
pub struct Prometheus {
    child: Child,
    /// Its HTTP address (`127.0.0.1:PORT`).
    pub address: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts it and waits until its API answers.
    pub fn start(target: &str) -> Self {
        let bin = require_program("prometheus", "prometheus");
        let dir = tempfile::Builder::new()
            .prefix("scriptd-prometheus")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - \
                 job_name: scriptd\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        // A free port: bound, then released for Prometheus.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = fs::File::create(dir.path().join("prometheus.log")).expect("prometheus log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let p = Self {
            child,
            address,
            dir,
        };
        wait_for("Prometheus to answer", Duration::from_secs(30), || {
            let url = format!("http://{}/-/ready", p.address);
            let ready = http_agent().get(&url).call().ok()?;
            (ready.status().as_u16() == 200).then_some(())
        });
        p
    }

    /// The value of the instant query `q` (its first series), if it has one now.
    pub fn query(&self, q: &str) -> Option<f64> {
        let url = format!("http://{}/api/v1/query", self.address);
        let mut r = http_agent().get(&url).query("query", q).call().ok()?;
        let body: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test PKI in a directory: a CA (`NAME-ca.pem`), a server certificate for `localhost`
/// and `127.0.0.1`, and client certificates by name, generated with `rcgen`. Keys are
/// written mode 0600 (the daemon refuses a key others can read).
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
}

impl Pki {
    /// A new CA called `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        fs::create_dir_all(dir).expect("pki dir");
        let ca = dir.join(format!("{name}-ca.pem"));
        fs::write(&ca, cert.pem()).expect("write the CA");
        Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            issuer: rcgen::Issuer::new(params, key),
            ca,
        }
    }

    /// A certificate with common name `cn` and subject alternative names `sans` (IP
    /// addresses or DNS names), signed by this CA: its certificate and key files.
    pub fn issue(
        &self,
        cn: &str,
        sans: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let base = format!("{}-{cn}", self.name);
        let (cert_path, key_path) = (
            self.dir.join(format!("{base}.pem")),
            self.dir.join(format!("{base}.key")),
        );
        fs::write(&cert_path, cert.pem()).expect("write certificate");
        fs::write(&key_path, key.serialize_pem()).expect("write key");
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).expect("chmod key");
        (cert_path, key_path)
    }

    /// The daemon's certificate and key (`localhost`, `127.0.0.1`).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        self.issue(
            "scriptd",
            &["localhost", "127.0.0.1"],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        self.issue(cn, &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// `daemon.listen` lines (under `daemon:`) for a TCP listener on 127.0.0.1:`port` with
    /// a fresh server certificate, client certificates signed by this CA.
    pub fn listen_section(&self, port: u16) -> String {
        let (cert, key) = self.server();
        format!(
            "  listen:\n    tcp: 127.0.0.1:{port}\n    tls:\n      cert: {}\n      key: {}\n      \
             client_ca: {}\n",
            cert.display(),
            key.display(),
            self.ca.display()
        )
    }
}

/// A loopback TCP port nobody listens on right now (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A `ctl` user's home for contexts: `ctl` runs with `XDG_CONFIG_HOME` in a temp dir, in a
/// directory without a `scriptd.yaml`, with no `SCRIPTD_*` variables.
pub struct ContextHome {
    /// The temp dir (`XDG_CONFIG_HOME`, and the working directory).
    pub dir: tempfile::TempDir,
}

impl Default for ContextHome {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextHome {
    /// An empty home.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("scriptd-ctx")
            .tempdir()
            .expect("temp dir");
        Self { dir }
    }

    /// The command `ctl ARGS` with this home's contexts, not started (for a follower).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ctl_bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env_remove("SCRIPTD_SOCKET")
            .env_remove("SCRIPTD_CONFIG")
            .env_remove("SCRIPTD_CONTEXT");
        cmd
    }

    /// `ctl ARGS` with this home's contexts.
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.command(args).output().expect("run ctl").into()
    }

    /// `ctl ARGS`, which must succeed; its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let r = self.ctl(args);
        assert_eq!(r.code, 0, "ctl {args:?} failed: {}", r.stderr);
        r.stdout
    }

    /// `ctl context add NAME --endpoint https://127.0.0.1:PORT --ca CA [--cert C --key K]`.
    pub fn add_tls(&self, name: &str, port: u16, ca: &Path, client: Option<&(PathBuf, PathBuf)>) {
        let endpoint = format!("https://127.0.0.1:{port}");
        let mut args = vec![
            "context".to_owned(),
            "add".into(),
            name.into(),
            "--endpoint".into(),
            endpoint,
            "--ca".into(),
            ca.display().to_string(),
        ];
        if let Some((cert, key)) = client {
            args.extend([
                "--cert".into(),
                cert.display().to_string(),
                "--key".into(),
                key.display().to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctl_ok(&args);
    }
}

/// A single-node etcd on loopback (Debian's `etcd-server`): free ports, a temp data dir,
/// started and waited for with a deadline, stopped by pid on drop. Driven with `etcdctl`
/// (Debian's `etcd-client`). A missing binary fails the test, naming the package.
pub struct Etcd {
    child: Option<Child>,
    /// The data dir (kept across [`Etcd::restart`]).
    pub data: tempfile::TempDir,
    /// The client URL, `http://127.0.0.1:PORT` (`https://` with [`Etcd::start_tls`]).
    pub url: String,
    peer: String,
    /// More flags for etcd (TLS) and for etcdctl (its CA, certificate, user).
    args: Vec<String>,
    ctl_args: Vec<String>,
    /// The etcdctl command that answers once etcd is up.
    ready: &'static [&'static str],
}

/// `bin`'s path, or a failure naming the Debian package that has it.
fn etcd_tool(bin: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{bin}` is not installed: the etcd tests need a real etcd; install it with \
         `apt-get install -y {package}` (.ci/run does)"
    )
}

impl Etcd {
    /// Starts a fresh single-node etcd and waits until it answers.
    pub fn start() -> Self {
        let data = tempfile::Builder::new()
            .prefix("scriptd-etcd")
            .tempdir()
            .expect("etcd data dir");
        let mut etcd = Self {
            child: None,
            data,
            url: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            args: Vec::new(),
            ctl_args: Vec::new(),
            ready: &["endpoint", "health"],
        };
        etcd.spawn();
        etcd
    }

    fn spawn(&mut self) {
        let bin = etcd_tool("etcd", "etcd-server");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new(bin)
            .args(["--name", "n1", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("n1={}", self.peer)])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        wait_for("etcd to answer", DEADLINE, || self.ctl(self.ready).ok());
    }

    /// The etcd process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Runs `etcdctl --endpoints URL ARGS`: its stdout, or its stderr as the error.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(etcd_tool("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "--command-timeout", "3s"])
            .args(&self.ctl_args)
            .args(args)
            .output()
            .expect("run etcdctl");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            Err(text(&out.stderr))
        }
    }

    /// Puts `value` at `key`; returns the store's revision after it (the key's mod revision).
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let out = self
            .ctl(&["put", "-w", "json", "--", key, value])
            .unwrap_or_else(|e| panic!("etcdctl put {key}: {e}"));
        let doc: serde_json::Value = serde_json::from_str(&out).expect("etcdctl put JSON");
        doc["header"]["revision"].as_i64().expect("a revision")
    }

    /// The value of `key` and its mod revision.
    pub fn get(&self, key: &str) -> Option<(String, i64)> {
        let out = self
            .ctl(&["get", "-w", "json", "--", key])
            .unwrap_or_else(|e| panic!("etcdctl get {key}: {e}"));
        let doc: serde_json::Value = serde_json::from_str(&out).expect("etcdctl get JSON");
        let kv = doc["kvs"].get(0)?;
        let value = kv["value"].as_str().expect("a base64 value");
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value)
            .expect("base64 value");
        Some((
            String::from_utf8(bytes).expect("UTF-8 value"),
            kv["mod_revision"].as_i64().expect("a mod revision"),
        ))
    }

    /// Compacts the store at `revision`.
    pub fn compact(&self, revision: i64) {
        self.ctl(&["compact", &revision.to_string()])
            .unwrap_or_else(|e| panic!("etcdctl compact: {e}"));
    }

    /// Sends `sig` to etcd (SIGSTOP freezes it: connections stay open, nothing answers).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal etcd");
    }

    /// Stops etcd (SIGKILL, by pid) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops etcd and starts it again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The bootstrap file's `daemon.source` lines (under [`DAEMON_SECTION`]) for `key`.
    pub fn source_lines(&self, key: &str) -> String {
        format!(
            "  source:\n    etcd:\n      endpoints: [\"{}\"]\n      key: {key}\n",
            self.url
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen etcd must be woken to die by anything but SIGKILL; SIGKILL needs not.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        }
        self.stop();
    }
}

impl Etcd {
    /// Starts a fresh single-node etcd serving clients over TLS only (`https://`), with a
    /// server certificate of `pki` (`localhost`, `127.0.0.1`); with `client_cert_auth`,
    /// clients need a certificate signed by `pki`'s CA (`--client-cert-auth`). `etcdctl`
    /// gets a client certificate `etcdctl`.
    pub fn start_tls(pki: &Pki, client_cert_auth: bool) -> Self {
        let data = tempfile::Builder::new()
            .prefix("scriptd-etcd")
            .tempdir()
            .expect("etcd data dir");
        let (cert, key) = pki.server();
        let (ctl_cert, ctl_key) = pki.client("etcdctl");
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--cert-file".to_owned(),
            path(&cert),
            "--key-file".into(),
            path(&key),
        ];
        if client_cert_auth {
            args.extend([
                "--trusted-ca-file".into(),
                path(&pki.ca),
                "--client-cert-auth".into(),
            ]);
        }
        let mut etcd = Self {
            child: None,
            data,
            url: format!("https://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            args,
            ctl_args: vec![
                "--cacert".into(),
                path(&pki.ca),
                "--cert".into(),
                path(&ctl_cert),
                "--key".into(),
                path(&ctl_key),
            ],
            ready: &["endpoint", "health"],
        };
        etcd.spawn();
        etcd
    }

    /// Adds a user `root` with `password` and enables authentication; `etcdctl` then
    /// authenticates as root.
    pub fn enable_auth(&mut self, password: &str) {
        let user = format!("root:{password}");
        for args in [&["user", "add", &user][..], &["auth", "enable"][..]] {
            self.ctl(args)
                .unwrap_or_else(|e| panic!("etcdctl {args:?}: {e}"));
        }
        self.ctl_args.extend(["--user".to_owned(), user]);
    }
}

/// The etcd source in `ctl status --output json` of `d`.
pub fn etcd_status(d: &Daemon) -> ctl::output::EtcdJson {
    d.status().etcd.expect("status shows the etcd source")
}

/// The pid of service `name` of `d` once it runs `sleep {secs}`.
pub fn running_sleep(d: &Daemon, name: &str, secs: u32) -> u32 {
    let want = format!("sleep {secs}");
    let s = d.wait_script(name, &format!("running `{want}`"), |s| {
        s.pid.is_some_and(|p| cmdline(p).contains(&want))
    });
    s.pid.unwrap_or_default()
}

/// A TCP proxy on a free loopback port to `target` (`HOST:PORT`): a second endpoint for the
/// same server, which [`FreezableProxy::freeze`] turns into a frozen one (connections stay
/// open, nothing passes either way, as with a stopped server). Its threads end on drop.
pub struct FreezableProxy {
    /// The port it listens on.
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// (frozen, closed)
    flags: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl ProxyState {
    /// Waits while frozen; false once closed.
    fn pass(&self) -> bool {
        let mut flags = self.flags.lock().expect("proxy lock");
        while flags.0 && !flags.1 {
            flags = self.changed.wait(flags).expect("proxy lock");
        }
        !flags.1
    }

    fn closed(&self) -> bool {
        self.flags.lock().expect("proxy lock").1
    }
}

impl FreezableProxy {
    /// Starts forwarding to `target`.
    pub fn start(target: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = std::sync::Arc::new(ProxyState::default());
        let (target, shared) = (target.to_owned(), state.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.closed() {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, std::net::TcpStream::connect(&target))
                else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (Ok(server), Ok(client)),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let shared = shared.clone();
                    std::thread::spawn(move || pump(from, to, &shared));
                }
            }
        });
        Self { port, state }
    }

    /// The proxy's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on nothing passes, on open connections and new ones.
    pub fn freeze(&self) {
        self.state.flags.lock().expect("proxy lock").0 = true;
        self.state.changed.notify_all();
    }
}

/// Copies `from` to `to` while the proxy lets it.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, state: &ProxyState) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !state.pass() || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.state.flags.lock().expect("proxy lock").1 = true;
        self.state.changed.notify_all();
        // Wakes the accept loop, which then sees it is closed.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Etcd {
    /// A second member of this (plaintext, single-node) etcd's cluster, added as a learner:
    /// it accepts connections and keeps a copy of the data, but refuses every linearizable
    /// read and every watch ("rpc not supported for learner"), an endpoint that connects and
    /// does not serve.
    pub fn add_learner(&self) -> Etcd {
        let peer = format!("http://127.0.0.1:{}", free_port());
        self.ctl(&[
            "member",
            "add",
            "n2",
            "--learner",
            &format!("--peer-urls={peer}"),
        ])
        .unwrap_or_else(|e| panic!("etcdctl member add --learner: {e}"));
        let data = tempfile::Builder::new()
            .prefix("scriptd-etcd")
            .tempdir()
            .expect("etcd data dir");
        let mut learner = Self {
            child: None,
            data,
            url: format!("http://127.0.0.1:{}", free_port()),
            // The flags below come after the ones `spawn` gives every member: they win.
            args: vec![
                "--name".into(),
                "n2".into(),
                "--initial-cluster".into(),
                format!("n1={},n2={peer}", self.peer),
                "--initial-cluster-state".into(),
                "existing".into(),
            ],
            peer,
            ctl_args: Vec::new(),
            // A learner refuses `endpoint health`'s read; its status answers.
            ready: &["endpoint", "status"],
        };
        learner.spawn();
        learner
    }
}

/// Peak resident memory of a process (kB), from /proc/PID/status.
pub fn vm_hwm_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

impl ContextHome {
    /// One daemon with the watcher off per body in `bodies` (started in parallel), each added
    /// to this home as context `{prefix}-1`, `{prefix}-2`, ... over its Unix socket.
    pub fn unix_fleet(&self, prefix: &str, bodies: Vec<String>) -> Vec<(Env, Daemon)> {
        let fleet: Vec<(Env, Daemon)> = bodies
            .into_iter()
            .map(|body| {
                std::thread::spawn(move || {
                    let env = Env::manual(&body);
                    let d = env.start();
                    (env, d)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("a daemon started"))
            .collect();
        for (i, (_, d)) in fleet.iter().enumerate() {
            self.ctl_ok(&[
                "context",
                "add",
                &format!("{prefix}-{}", i + 1),
                "--endpoint",
                &format!("unix://{}", d.socket.display()),
            ]);
        }
        fleet
    }
}

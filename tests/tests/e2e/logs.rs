//! Logs end to end: a million lines (all in the file, in order, gapless; a fast follower sees
//! every one; a deliberately slow one gets skip markers that add up), the seam between
//! backlog and live lines, rotation while following, `--after-seq` across rotated files,
//! a 50 MB line with the daemon's memory bounded, invalid UTF-8 and `\r\n`, run markers,
//! sequence numbers across daemon restarts, filters, and `ctl logs -f | head`.
//!
//! Every wait polls with a deadline, or reads a follower that a watchdog kills at its
//! deadline; nothing relies on a bare sleep (the slow follower sleeps on purpose: being slow
//! is its job). No assertion depends on timing.

use ctl::logs::LogLineJson;
use scriptd_e2e::{vm_hwm_kb, wait_for, Daemon, Env, DEADLINE};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Deadline for the big runs (a million lines through a debug build).
const LONG: Duration = Duration::from_secs(90);

// ------------------------------------------------------------------ helpers

/// One record of a script's log file: `TIME SEQ RUN STREAM[+] TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    seq: u64,
    run: u64,
    stream: String,
    text: String,
}

fn parse_rec(line: &str) -> Rec {
    let mut p = line.splitn(5, ' ');
    let _time = p.next().expect("time field");
    let seq = p
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("seq in {line:?}"));
    let run = p
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("run in {line:?}"));
    let stream = p
        .next()
        .unwrap_or_else(|| panic!("stream in {line:?}"))
        .to_owned();
    let text = p.next().unwrap_or("").to_owned();
    Rec {
        seq,
        run,
        stream,
        text,
    }
}

/// The log files of `script`, oldest first: `NAME.log.K` … `NAME.log.1`, `NAME.log`.
fn log_files(env: &Env, script: &str) -> Vec<std::path::PathBuf> {
    let base = env.path(&format!("logs/{script}.log"));
    let mut files: Vec<_> = (1..)
        .map(|i| env.path(&format!("logs/{script}.log.{i}")))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(base);
    files
}

/// Every record of `script`'s log files, oldest first.
fn records(env: &Env, script: &str) -> Vec<Rec> {
    let mut out = Vec::new();
    for f in log_files(env, script) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        // The daemon may be writing the file: a last line without its newline is not
        // complete yet (and may end inside a character).
        let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8(bytes[..complete_len].to_vec()).expect("log files are UTF-8");
        out.extend(text.lines().map(parse_rec));
    }
    out
}

/// Asserts records have gapless, growing sequence numbers.
fn assert_gapless(recs: &[Rec]) {
    for w in recs.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "gap or repeat between {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

/// Waits until `script`'s run number `runs` has ended.
fn wait_runs(d: &Daemon, script: &str, runs: u64, deadline: Duration) {
    wait_for(&format!("{script}: run {runs} to end"), deadline, || {
        let s = d.script(script);
        (s.run_count >= runs && s.last_exit.is_some() && s.pid.is_none()).then_some(())
    });
}

/// A `ctl logs` process whose stdout the test reads; a watchdog kills it at its deadline so
/// a missing line fails the test instead of hanging it.
struct Follower {
    child: Child,
    out: BufReader<ChildStdout>,
    watchdog: Option<mpsc::Sender<()>>,
}

impl Follower {
    fn start(d: &Daemon, args: &[&str], deadline: Duration) -> Self {
        let mut child = d
            .ctl_command(&["logs"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ctl logs");
        let out = BufReader::with_capacity(1 << 16, child.stdout.take().expect("stdout piped"));
        let (tx, rx) = mpsc::channel::<()>();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        std::thread::spawn(move || {
            if rx.recv_timeout(deadline) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        Self {
            child,
            out,
            watchdog: Some(tx),
        }
    }

    /// The next line of output, without its newline; `None` at the end.
    fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.out.read_line(&mut s).expect("read ctl output") {
            0 => None,
            _ => {
                if s.ends_with('\n') {
                    s.pop();
                }
                Some(s)
            }
        }
    }

    /// The next JSON record, parsed with the strict schema.
    fn record(&mut self) -> Option<LogLineJson> {
        self.line().map(|l| {
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))
        })
    }

    /// Stops it and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.watchdog.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_records(d: &Daemon, args: &[&str]) -> Vec<LogLineJson> {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    d.ctl_ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

// ------------------------------------------------------------------ a million lines

#[test]
fn a_million_lines_reach_the_file_in_order_and_a_fast_follower_sees_every_one() {
    // The file keeps the whole run (one file), so a follower that reads fast can always
    // catch up: it must not miss a line.
    let env = Env::new(
        "scripts:\n  big:\n    command: \"seq 1 1000000\"\n    enabled: false\n    log: { max_bytes: 512MiB, keep: 1 }\n",
    );
    let d = env.start();
    // Started before the run; `-n` large so it also gets lines written before it attached.
    let mut f = Follower::start(&d, &["big", "-f", "-n", "2000000", "--raw"], LONG);
    d.ctl_ok(&["run", "big"]);
    for want in 1..=1_000_000u64 {
        let got = f
            .line()
            .unwrap_or_else(|| panic!("follower ended before line {want}"));
        assert_eq!(
            got,
            want.to_string(),
            "follower: line {want} lost or out of order"
        );
    }
    let err = f.stop();
    assert!(
        !err.contains("skipped"),
        "a fast follower was told it skipped lines: {err}"
    );

    wait_runs(&d, "big", 1, LONG);
    let recs = records(&env, "big");
    assert_eq!(
        recs.len(),
        1_000_002,
        "1M lines plus the start and end markers"
    );
    assert_gapless(&recs);
    assert_eq!(recs[0].seq, 1);
    assert_eq!((recs[0].stream.as_str(), recs[0].run), ("sys", 1));
    assert!(recs[0].text.contains("started"), "{:?}", recs[0]);
    for (i, r) in recs[1..=1_000_000].iter().enumerate() {
        assert_eq!(
            (r.stream.as_str(), r.text.as_str()),
            ("out", (i + 1).to_string().as_str())
        );
    }
    let last = &recs[1_000_001];
    assert_eq!(last.stream, "sys");
    assert!(last.text.contains("ended: exit code 0"), "{last:?}");
}

/// A disabled script `name` whose run waits for the file `go` in the test dir, then runs
/// `then`, with the log settings `log` (`{ max_bytes: .., keep: .. }`). Starts the daemon, a
/// JSON follower of `name` with a backlog of `-n backlog`, and the run; reads the run's start
/// marker (seq 1) and then lets the flood go (creates `go`). The follower sees every line the
/// run writes, from the start marker on, as they come.
fn gated_run_followed(name: &str, then: &str, log: &str, backlog: &str) -> (Env, Daemon, Follower) {
    let env = Env::new("");
    let go = env.path("go");
    let command = format!(
        "while [ ! -e {} ]; do sleep 0.01; done; exec {then}",
        go.display()
    );
    env.set_body(&format!(
        "scripts:\n  {name}:\n    command: \"{command}\"\n    enabled: false\n    log: {log}\n"
    ));
    let d = env.start();
    let mut f = Follower::start(&d, &[name, "-f", "-n", backlog, "--output", "json"], LONG);
    d.ctl_ok(&["run", name]);
    let first = f.record().expect("the run's start marker");
    assert_eq!(
        (first.seq, first.stream.as_str()),
        (1, "system"),
        "{first:?}"
    );
    std::fs::write(&go, "").expect("create go file");
    (env, d, f)
}

#[test]
fn a_slow_follower_gets_skip_markers_that_add_up() {
    // Small files: lines rotated out before the slow follower reads them are skipped.
    let (_env, d, mut f) = gated_run_followed(
        "slow",
        "seq 1 1000000",
        "{ max_bytes: 1MiB, keep: 1 }",
        "2000000",
    );
    // The start marker (seq 1) is read.
    let (mut expect, mut seen, mut skipped, mut markers) = (2, 1u64, 0u64, 0u64);
    let (mut reads, mut running) = (0u64, true);
    let last_seq = loop {
        let r = f
            .record()
            .expect("the follower ended before the run's end marker");
        reads += 1;
        // Slow on purpose while the script runs: 50 ms every 100 records.
        if running && reads % 100 == 0 {
            running = d.script("slow").pid.is_some();
            if running {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if r.skipped > 0 {
            assert_eq!(r.stream, "system");
            expect += r.skipped;
            skipped += r.skipped;
            markers += 1;
            continue;
        }
        assert_eq!(r.seq, expect, "gap or repeat not covered by a skip marker");
        expect = r.seq + 1;
        seen += 1;
        if r.stream == "system" && r.text.contains("ended") {
            break r.seq;
        }
    };
    drop(f);
    eprintln!("slow follower: {seen} lines seen, {skipped} skipped in {markers} markers");
    assert!(markers > 0, "the slow follower never got a skip marker");
    assert_eq!(
        seen + skipped,
        last_seq,
        "lines seen + skipped != lines written"
    );
    assert_eq!(last_seq, 1_000_002);
}

// ------------------------------------------------------------------ seam and rotation

#[test]
fn backlog_and_live_lines_meet_without_gap_or_repeat() {
    // A small ring and small files: backlogs come from memory, from files, or both, and
    // the files rotate while the followers read.
    let env = Env::with_scripts(&[(
        "count",
        "exec python3 -u -c 'import time\nfor i in range(1, 10**8):\n    print(i)\n    time.sleep(0.0003)\n'",
        "    restart: never\n    max_log_lines: 100\n    log: { max_bytes: 64KiB, keep: 50 }\n",
    )]);
    let d = env.start();
    wait_for("3000 lines in the log", LONG, || {
        (records(&env, "count").len() >= 3000).then_some(())
    });
    for n in ["50", "100", "2500"] {
        let mut f = Follower::start(&d, &["count", "-f", "-n", n, "--output", "json"], LONG);
        let first = f.record().expect("a first record");
        assert_eq!(first.skipped, 0);
        let mut prev = first;
        // Backlog (n lines) and well past it into live lines.
        for _ in 0..4000 {
            let r = f.record().expect("the follower ended early");
            assert_eq!(r.skipped, 0, "-n {n}: a skip marker");
            assert_eq!(
                r.seq,
                prev.seq + 1,
                "-n {n}: gap or repeat after seq {}",
                prev.seq
            );
            if let (Ok(a), Ok(b)) = (prev.text.parse::<u64>(), r.text.parse::<u64>()) {
                assert_eq!(b, a + 1, "-n {n}: text out of order at seq {}", r.seq);
            }
            prev = r;
        }
    }
    assert!(
        log_files(&env, "count").len() > 3,
        "the log should have rotated while the followers read"
    );
}

#[test]
fn a_follower_loses_nothing_across_rotation() {
    let (env, _d, mut f) = gated_run_followed(
        "rot",
        "seq 1 200000",
        "{ max_bytes: 64KiB, keep: 500 }",
        "1000000",
    );
    // The start marker (seq 1) is read.
    let mut expect_seq = 2;
    let mut expect_text = 1u64;
    loop {
        let r = f
            .record()
            .expect("the follower ended before the end marker");
        assert_eq!(r.skipped, 0, "a skip marker: {r:?}");
        assert_eq!(r.seq, expect_seq, "gap or repeat");
        expect_seq += 1;
        if r.stream == "stdout" {
            assert_eq!(r.text, expect_text.to_string());
            expect_text += 1;
        } else if r.text.contains("ended") {
            break;
        }
    }
    assert_eq!(expect_text, 200_001);
    let files = log_files(&env, "rot");
    assert!(
        files.len() > 20,
        "expected many rotated files, got {}",
        files.len()
    );
    let recs = records(&env, "rot");
    assert_eq!(recs.len(), 200_002);
    assert_gapless(&recs);
}

#[test]
fn after_seq_resumes_exactly_across_rotated_files() {
    let env = Env::new(
        "scripts:\n  res:\n    command: \"seq 1 3000\"\n    enabled: false\n    max_log_lines: 10\n    log: { max_bytes: 4KiB, keep: 100 }\n  gone:\n    command: \"seq 1 3000\"\n    enabled: false\n    max_log_lines: 10\n    log: { max_bytes: 4KiB, keep: 2 }\n",
    );
    let d = env.start();
    d.ctl_ok(&["run", "res"]);
    d.ctl_ok(&["run", "gone"]);
    wait_runs(&d, "res", 1, DEADLINE);
    wait_runs(&d, "gone", 1, DEADLINE);
    assert!(
        log_files(&env, "res").len() > 10,
        "the log should span many rotated files"
    );

    let recs = json_records(&d, &["res", "--after-seq", "100"]);
    let seqs: Vec<u64> = recs.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (101..=3002).collect::<Vec<_>>());
    assert_eq!(
        recs[0].text, "100",
        "seq 101 is the 100th line (seq 1 is the start marker)"
    );
    assert!(recs.iter().all(|r| r.schema == 1 && r.skipped == 0));

    // With -n: the last N of those.
    let seqs: Vec<u64> = json_records(&d, &["res", "--after-seq", "100", "-n", "5"])
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (2998..=3002).collect::<Vec<_>>());

    // -n beyond the ring reads the files.
    let seqs: Vec<u64> = json_records(&d, &["res", "-n", "1500"])
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1503..=3002).collect::<Vec<_>>());

    // Resuming after lines that were rotated away: one marker says how many are gone.
    let recs = json_records(&d, &["gone", "--after-seq", "10"]);
    let marker = &recs[0];
    assert!(
        marker.skipped > 0,
        "expected a skip marker first: {marker:?}"
    );
    assert_eq!(recs[1].seq, 11 + marker.skipped);
    let seqs: Vec<u64> = recs[1..].iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (11 + marker.skipped..=3002).collect::<Vec<_>>());
}

// ------------------------------------------------------------------ adversarial output

#[test]
fn a_50_mb_line_is_split_and_the_daemon_memory_stays_bounded() {
    let env = Env::new(
        "scripts:\n  huge:\n    command: \"head -c 50000000 /dev/zero | tr '\\\\0' x\"\n    enabled: false\n    log: { max_bytes: 1GiB, keep: 1 }\n",
    );
    let d = env.start();
    let before = vm_hwm_kb(d.pid());
    d.ctl_ok(&["run", "huge"]);
    wait_runs(&d, "huge", 1, LONG);
    let after = vm_hwm_kb(d.pid());
    let growth_mb = after.saturating_sub(before) / 1024;
    eprintln!("daemon VmHWM: {before} kB before, {after} kB after the 50 MB line");
    // The line buffer of a script holds at most 4 MiB; the rest is read buffers.
    assert!(
        growth_mb < 12,
        "daemon peak RSS grew by {growth_mb} MB for a 50 MB line ({before} kB -> {after} kB)"
    );

    let recs = records(&env, "huge");
    let pieces: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.stream.starts_with("out"))
        .collect();
    let total: usize = pieces.iter().map(|r| r.text.len()).sum();
    assert_eq!(total, 50_000_000, "the line's bytes, all of them");
    assert!(pieces
        .iter()
        .all(|r| r.text.len() <= 64 * 1024 && r.text.bytes().all(|b| b == b'x')));
    let (last, rest) = pieces.split_last().expect("pieces");
    assert_eq!(
        last.stream, "out",
        "the last piece ends the line (partial line flushed at exit)"
    );
    assert!(
        rest.iter().all(|r| r.stream == "out+"),
        "every other piece is marked continued"
    );
    assert_eq!(pieces.len(), 50_000_000usize.div_ceil(64 * 1024));

    // --raw joins the pieces again.
    let raw = d.ctl_ok(&["logs", "huge", "-n", "2", "--raw"]);
    assert!(
        raw.ends_with("x\n") && !raw.trim_end().contains('\n'),
        "one raw line"
    );
}

#[test]
fn invalid_utf8_crlf_binary_and_a_partial_last_line() {
    let env = Env::with_scripts(&[(
        "junk",
        "printf 'caf\\303\\251 ok\\r\\n'\nprintf 'bad \\377\\376 bytes\\r\\n'\nprintf 'lone\\rcr\\n'\nprintf '\\001\\002junk\\033[31m\\n'\nprintf 'to stderr\\r\\n' >&2\nprintf 'partial'",
        "    enabled: false\n",
    )]);
    let d = env.start();
    d.ctl_ok(&["run", "junk"]);
    wait_runs(&d, "junk", 1, DEADLINE);
    let recs = json_records(&d, &["junk", "-n", "100"]);
    let out: Vec<&str> = recs
        .iter()
        .filter(|r| r.stream == "stdout")
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(
        out,
        vec![
            "café ok",
            "bad \u{FFFD}\u{FFFD} bytes",
            "lone\rcr",
            "\u{1}\u{2}junk\u{1b}[31m",
            "partial"
        ]
    );
    let err: Vec<&str> = recs
        .iter()
        .filter(|r| r.stream == "stderr")
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(err, vec!["to stderr"]);

    // People see control characters escaped, and stderr marked.
    let text = d.ctl_ok(&["logs", "junk", "-n", "100"]);
    assert!(text.contains(" out | \\x01\\x02junk\\x1b[31m\n"), "{text}");
    assert!(text.contains(" out | lone\\x0dcr\n"), "{text}");
    assert!(text.contains(" err | to stderr\n"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no raw escape reaches the terminal: {text}"
    );
    // --raw gives the bytes back as text.
    let raw = d.ctl_ok(&["logs", "junk", "-n", "100", "--raw", "--stream", "stdout"]);
    assert!(
        raw.contains("\u{1}\u{2}junk\u{1b}[31m\n") && raw.ends_with("partial\n"),
        "{raw:?}"
    );
}

// ------------------------------------------------------------------ markers, restarts, filters

#[test]
fn run_markers_filters_and_sequence_across_daemon_restarts() {
    let env = Env::new(
        "scripts:\n  mix:\n    command: \"echo out-$RANDOM; echo err-line >&2; exit 3\"\n    enabled: false\n  slowpoke:\n    command: \"echo going; sleep 30\"\n    interval: 1h\n    timeout: 300ms\n",
    );
    let mut d = env.start();
    d.ctl_ok(&["run", "mix"]);
    wait_runs(&d, "mix", 1, DEADLINE);
    d.ctl_ok(&["run", "mix"]);
    wait_runs(&d, "mix", 2, DEADLINE);
    wait_runs(&d, "slowpoke", 1, DEADLINE);

    let recs = json_records(&d, &["mix", "-n", "100"]);
    assert_eq!(recs.len(), 8, "{recs:?}");
    let sys: Vec<&str> = recs
        .iter()
        .filter(|r| r.stream == "system")
        .map(|r| r.text.as_str())
        .collect();
    assert!(
        sys[0].starts_with("run 1 started") && sys[1].starts_with("run 1 ended: exit code 3"),
        "{sys:?}"
    );
    assert!(
        sys[2].starts_with("run 2 started") && sys[3].starts_with("run 2 ended: exit code 3"),
        "{sys:?}"
    );
    let slow = json_records(&d, &["slowpoke", "--stream", "system"]);
    assert!(
        slow.iter().any(|r| r.text.contains("timed out")),
        "{slow:?}"
    );
    assert!(
        slow.iter()
            .any(|r| r.text.contains("ended") && r.text.contains("timed out")),
        "{slow:?}"
    );

    // Filters.
    let err = json_records(&d, &["mix", "--stream", "stderr"]);
    assert_eq!(err.len(), 2);
    assert!(err
        .iter()
        .all(|r| r.stream == "stderr" && r.text == "err-line"));
    let run2 = json_records(&d, &["mix", "--run", "2"]);
    assert_eq!(run2.len(), 4);
    assert!(run2.iter().all(|r| r.run_id == 2));
    assert_eq!(json_records(&d, &["mix", "--since", "1h"]).len(), 8);
    assert_eq!(json_records(&d, &["mix", "-n", "3"]).len(), 3);
    assert_eq!(json_records(&d, &["mix", "-n", "0"]).len(), 0);
    let table = d.ctl_ok(&["logs", "mix", "-n", "3"]);
    assert!(table.lines().all(|l| l.contains(" | ")), "{table}");
    assert!(table.contains(" err | err-line"), "{table}");
    let missing = d.ctl(&["logs", "nope"]);
    assert_eq!(missing.code, 4, "unknown script: {missing:?}");

    // Sequence numbers go on after a daemon restart.
    let last = recs.last().expect("records").seq;
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    let d = env.start();
    d.ctl_ok(&["run", "mix"]);
    wait_for("the third run to end", DEADLINE, || {
        let s = d.script("mix");
        (s.last_exit.is_some() && s.pid.is_none()).then_some(())
    });
    let after = json_records(&d, &["mix", "--after-seq", &last.to_string()]);
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(
        after[0].seq,
        last + 1,
        "sequence resumes after the daemon restart"
    );
    let recs = records(&env, "mix");
    assert_gapless(&recs);
}

#[test]
fn a_follower_follows_restarts_and_a_closed_pipe_ends_it_quietly() {
    let env = Env::with_scripts(&[(
        "tick",
        "exec python3 -u -c 'import time\nfor i in range(1, 10**8):\n    print(\"tick\", i)\n    time.sleep(0.01)\n'",
        "    restart: never\n",
    )]);
    let d = env.start();
    let mut f = Follower::start(&d, &["tick", "-f", "-n", "0", "--output", "json"], LONG);
    // Wait for a live line, then restart the script twice; the same follower sees it all.
    let first = f.record().expect("a live line");
    for _ in 0..2 {
        d.ctl_ok(&["restart", "tick"]);
    }
    let mut prev = first.seq;
    let mut starts = 0;
    while starts < 2 {
        let r = f.record().expect("the follower ended");
        assert_eq!(r.seq, prev + 1, "gap or repeat across a restart");
        prev = r.seq;
        if r.stream == "system" && r.text.contains("started") {
            starts += 1;
        }
    }
    // One more line from the new run.
    let next = f.record().expect("a line from the restarted run");
    assert_eq!(next.seq, prev + 1);
    drop(f);

    // `ctl logs -f tick | head -n 5`: ctl exits 0, quietly, once the reader is gone.
    let mut child = d
        .ctl_command(&["logs", "tick", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl logs -f");
    {
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        for _ in 0..5 {
            let mut line = String::new();
            assert!(out.read_line(&mut line).expect("read") > 0);
        }
    } // the read end closes here, like `head` exiting
    let status = wait_for("ctl to exit after its reader left", DEADLINE, || {
        child.try_wait().expect("try_wait")
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert_eq!(err, "", "quiet on a closed pipe");
}

#[test]
fn log_settings_change_live() {
    let body = "scripts:\n  live:\n    command: \"seq 1 2000\"\n    enabled: false\n    max_log_lines: 10\n";
    let env = Env::new(body);
    let d = env.start();
    d.ctl_ok(&["run", "live"]);
    wait_runs(&d, "live", 1, DEADLINE);
    assert_eq!(
        log_files(&env, "live").len(),
        1,
        "no rotation with the default max_bytes"
    );

    let version = d.status().running_version;
    env.set_body(&format!("{body}    log: {{ max_bytes: 4KiB, keep: 20 }}\n"));
    wait_for("the reload to apply", DEADLINE, || {
        (d.status().running_version > version).then_some(())
    });
    d.ctl_ok(&["run", "live"]);
    wait_runs(&d, "live", 2, DEADLINE);
    let files = log_files(&env, "live");
    assert!(
        files.len() > 10,
        "the new max_bytes applies at once: {} files",
        files.len()
    );
    assert!(files.len() <= 21, "and the new keep: {} files", files.len());
    let recs = records(&env, "live");
    assert_gapless(&recs);
    assert_eq!(recs.last().map(|r| r.seq), Some(4004));
}

// ------------------------------------------------------------------ filters and resumes

#[test]
fn since_leaves_out_older_lines_in_the_files() {
    // Two runs from "two hours ago" are already in the log file when the daemon starts; the
    // new run's lines are the only ones younger than an hour.
    let env = Env::new("scripts:\n  aged:\n    command: \"echo fresh\"\n    enabled: false\n");
    std::fs::create_dir_all(env.path("logs")).expect("mkdir logs");
    let old = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() - Duration::from_secs(2 * 3600),
    );
    std::fs::write(
        env.path("logs/aged.log"),
        format!("{old} 1 1 sys run 1 started\n{old} 2 1 out stale\n{old} 3 1 sys run 1 ended: exit code 0 after 1ms\n"),
    )
    .expect("write an old log");
    let d = env.start();
    d.ctl_ok(&["run", "aged"]);
    wait_runs(&d, "aged", 1, DEADLINE);

    let recent = json_records(&d, &["aged", "--since", "1h"]);
    let texts: Vec<&str> = recent.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(recent.len(), 3, "only the new run: {texts:?}");
    assert_eq!(recent[0].seq, 4, "the sequence goes on after the old lines");
    assert_eq!(recent[0].run_id, 2, "so do run ids");
    assert_eq!(texts[1], "fresh");
    assert!(recent.iter().all(|r| r.text != "stale"));
    // Without --since the old lines are there, from the file.
    let all = json_records(&d, &["aged", "-n", "100"]);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    // A cutoff older than every line keeps them all.
    assert_eq!(json_records(&d, &["aged", "--since", "3h"]).len(), 6);
}

#[test]
fn a_follower_resumes_after_a_sequence_number_and_follows_on() {
    let env = Env::new(
        "scripts:\n  tick:\n    command: \"seq 1 100\"\n    enabled: false\n  selfkill:\n    command: \"echo bye; kill -KILL $$\"\n    enabled: false\n",
    );
    let d = env.start();
    d.ctl_ok(&["run", "tick"]);
    wait_runs(&d, "tick", 1, DEADLINE);
    // Run 1 is seq 1 (start) .. 102 (end). Resume after 50, then follow into run 2.
    let mut f = Follower::start(
        &d,
        &["tick", "-f", "--after-seq", "50", "--output", "json"],
        LONG,
    );
    let mut expect = 51;
    loop {
        let r = f.record().expect("the follower ended early");
        assert_eq!(r.skipped, 0, "{r:?}");
        assert_eq!(r.seq, expect, "gap or repeat");
        expect += 1;
        if r.seq == 102 {
            assert!(r.text.starts_with("run 1 ended"), "{r:?}");
            break;
        }
    }
    d.ctl_ok(&["run", "tick"]);
    loop {
        let r = f.record().expect("the follower ended before run 2 ended");
        assert_eq!(r.seq, expect, "gap or repeat in live lines");
        expect += 1;
        if r.stream == "system" && r.text.starts_with("run 2 ended") {
            break;
        }
    }
    assert_eq!(expect, 205, "run 2 is seq 103..=204");

    // A run killed by a signal says so in its end marker.
    d.ctl_ok(&["run", "selfkill"]);
    wait_runs(&d, "selfkill", 1, DEADLINE);
    let sys = json_records(&d, &["selfkill", "--stream", "system"]);
    assert!(
        sys.iter()
            .any(|r| r.text.starts_with("run 1 ended: signal SIGKILL")),
        "{sys:?}"
    );
}

#[test]
fn a_stalled_follower_catches_up_from_rotated_files_without_losing_a_line() {
    // The follower reads nothing until the run is over: by then memory holds only the last
    // 32K lines (the follow window), so it must read what it missed from the rotated files.
    // Many small files keep every line, so it gets no skip marker.
    let (_env, d, mut f) = gated_run_followed(
        "lag",
        "seq 1 200000",
        "{ max_bytes: 64KiB, keep: 1000 }",
        "1000000",
    );
    wait_runs(&d, "lag", 1, LONG);
    let mut expect = 2u64;
    let mut text = 1u64;
    loop {
        let r = f
            .record()
            .expect("the follower ended before the end marker");
        assert_eq!(
            r.skipped, 0,
            "a skip marker although the files hold every line: {r:?}"
        );
        assert_eq!(r.seq, expect, "gap or repeat");
        expect += 1;
        if r.stream == "stdout" {
            assert_eq!(r.text, text.to_string());
            text += 1;
        } else if r.text.contains("ended") {
            break;
        }
    }
    assert_eq!(text, 200_001, "every line");
}

#[test]
fn output_held_open_by_an_escaped_process_still_ends_with_the_partial_line() {
    // The script leaves a process in a session of its own (out of the reach of the group
    // kill) that keeps stdout open: the run's output is read until a bound after the run
    // ended, its partial last line included, and the log says reading stopped.
    let marker = &scriptd_e2e::unique_marker("30.4242");
    // The run waits until the escaped process has left its group (before that, the group
    // kill at the run's end would take it along).
    let env = Env::with_scripts(&[(
        "leaky",
        &format!(
            "printf 'no newline'\nsetsid sh -c 'touch escaped; exec sleep {marker}' &\n\
             while [ ! -e escaped ]; do sleep 0.01; done\nexit 0"
        ),
        "    enabled: false\n",
    )]);
    let d = env.start();
    d.ctl_ok(&["run", "leaky"]);
    let recs = wait_for("the run's end marker", LONG, || {
        let recs = records(&env, "leaky");
        recs.iter()
            .any(|r| r.stream == "sys" && r.text.starts_with("run 1 ended"))
            .then_some(recs)
    });
    for pid in scriptd_e2e::pids_with_marker(marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let texts: Vec<(&str, &str)> = recs
        .iter()
        .map(|r| (r.stream.as_str(), r.text.as_str()))
        .collect();
    assert!(texts.contains(&("out", "no newline")), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|(s, t)| *s == "sys" && t.starts_with("stopped reading stdout")),
        "{texts:?}"
    );
    assert_gapless(&recs);
}

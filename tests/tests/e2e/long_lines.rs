//! Over-long lines end to end: a line longer than `log.max_line_bytes` streams through the
//! daemon in pieces, each read straight into the block it becomes: a follower attached
//! before the line gets every piece, in order, while the line is still being written, and
//! the file holds the same pieces; the lines around it (one ending in `\r\n`) come whole.
//!
//! A 50 MiB line without a newline adds under 2 MB to the daemon's peak RSS: pieces take at
//! most 256 KiB of the script's lines in memory.
//!
//! The script waits for files the test creates (no sleeps in the test); no assertion
//! depends on timing.

use ctl::logs::LogLineJson;
use scriptd_e2e::{vm_hwm_kb, wait_for, Daemon, Env, Follower, DEADLINE};
use std::time::Duration;

/// How long a follower may take to print its next record.
const NEXT: Duration = Duration::from_secs(30);

fn record(f: &Follower) -> LogLineJson {
    let line = f
        .next_line(NEXT)
        .unwrap_or_else(|e| panic!("the follower printed nothing more ({e})"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
}

/// The records of `script`'s log file as (seq, stream field, text).
fn file_records(env: &Env, script: &str) -> Vec<(u64, String, String)> {
    let text = std::fs::read_to_string(env.path(&format!("logs/{script}.log"))).expect("log");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(5, ' ').collect();
            assert_eq!(f.len(), 5, "record {l:?}");
            (f[1].parse().expect("seq"), f[3].to_owned(), f[4].to_owned())
        })
        .collect()
}

fn started(env: &Env) -> Daemon {
    let d = env.start();
    d.ctl_ok(&["run", "long"]);
    d
}

#[test]
fn a_long_line_reaches_a_follower_in_pieces_in_order_while_it_is_written() {
    // The line: the numbers 1..=100000 with no separator (488,895 bytes, every piece
    // different); its first half is written, then the script waits for `half`, then writes
    // the rest and its newline, then one line ending in `\r\n`.
    let env = Env::new("");
    let (go, half) = (env.path("go"), env.path("half"));
    let command = format!(
        "while [ ! -e {go} ]; do sleep 0.01; done; echo before; seq -s '' 1 50000 | tr -d '\\\\n'; \
         while [ ! -e {half} ]; do sleep 0.01; done; printf %s \\\"$(seq -s '' 50001 100000)\\\"; \
         echo; printf 'after\\\\r\\\\n'",
        go = go.display(),
        half = half.display(),
    );
    env.set_body(&format!(
        "scripts:\n  long:\n    command: \"{command}\"\n    enabled: false\n    log: {{ max_line_bytes: 4KiB, max_bytes: 1GiB, keep: 1 }}\n"
    ));
    let want: String = (1..=100_000).map(|i: u32| i.to_string()).collect();
    let first_half: usize = (1..=50_000).map(|i: u32| i.to_string().len()).sum();

    let d = started(&env);
    let f = Follower::start(&d, &["logs", "long", "-f", "-n", "1", "--output", "json"]);
    let start = record(&f);
    assert_eq!(
        (start.stream.as_str(), start.seq),
        ("system", 1),
        "{start:?}"
    );
    std::fs::write(&go, "").expect("create go");
    let before = record(&f);
    assert_eq!((before.text.as_str(), before.continued), ("before", false));

    // Pieces of the first half arrive before the line is complete.
    let mut joined = String::new();
    let mut seq = before.seq;
    let mut pieces = 0;
    while joined.len() + 4096 <= first_half {
        let r = record(&f);
        assert_eq!(r.seq, seq + 1, "in order, none missed: {r:?}");
        seq = r.seq;
        assert!(r.continued, "a piece of the unfinished line: {r:?}");
        assert!(r.text.len() <= 4096, "a piece longer than the cap");
        joined.push_str(&r.text);
        pieces += 1;
    }
    assert!(
        want.starts_with(&joined),
        "the pieces so far are the line's start"
    );
    std::fs::write(&half, "").expect("create half");
    let end = loop {
        let r = record(&f);
        assert_eq!(r.seq, seq + 1, "in order, none missed: {r:?}");
        seq = r.seq;
        assert!(r.text.len() <= 4096, "a piece longer than the cap");
        joined.push_str(&r.text);
        pieces += 1;
        if !r.continued {
            break r;
        }
    };
    assert_eq!(
        joined.len(),
        want.len(),
        "the whole line, no byte more or less"
    );
    assert!(joined == want, "the pieces join into the line, in order");
    assert_eq!(pieces, want.len().div_ceil(4096));
    let after = record(&f);
    assert_eq!(
        (after.seq, after.text.as_str(), after.continued),
        (end.seq + 1, "after", false),
        "the `\\r` of `\\r\\n` is dropped"
    );
    drop(f);

    // The file holds the same records: every piece but the last marked `out+`.
    let recs = file_records(&env, "long");
    let out: Vec<_> = recs.iter().filter(|r| r.1 != "sys").collect();
    assert_eq!(out.first().map(|r| r.2.as_str()), Some("before"));
    assert_eq!(out.last().map(|r| r.2.as_str()), Some("after"));
    let line = &out[1..out.len() - 1];
    assert_eq!(line.len(), pieces);
    assert!(line[..pieces - 1].iter().all(|r| r.1 == "out+"));
    assert_eq!(line[pieces - 1].1, "out");
    assert!(line.iter().map(|r| r.2.as_str()).collect::<String>() == want);
    assert!(
        recs.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "gapless in the file"
    );

    // `--raw` joins the pieces back into one line.
    let raw = d.ctl_ok(&["logs", "long", "-n", "1000", "--raw"]);
    assert!(
        raw == format!("before\n{want}\nafter\n"),
        "raw output: {} bytes",
        raw.len()
    );
}

/// Waits until the `runs`-th run of `script` has ended.
fn wait_run_end(d: &Daemon, script: &str, runs: u64) {
    wait_for(&format!("{script}: run {runs} to end"), DEADLINE, || {
        let s = d.script(script);
        (s.run_count >= runs && s.last_exit.is_some() && s.pid.is_none()).then_some(())
    });
}

#[test]
fn a_50_mib_line_adds_under_2_mb_to_the_daemon_peak_rss() {
    // `warm` takes the same paths first (a 1 MB line: spawn, pipes, pieces, file), so the
    // code pages a first run touches are already resident; `huge` then adds what the line
    // itself costs. Before pieces were capped, the 4 MiB of lines in memory filled with them.
    let env = Env::new(
        "scripts:\n  warm:\n    command: \"head -c 1048576 /dev/zero | tr '\\\\0' x\"\n    enabled: false\n  huge:\n    command: \"head -c 52428800 /dev/zero | tr '\\\\0' x\"\n    enabled: false\n    log: { max_bytes: 1GiB, keep: 1 }\n",
    );
    let d = env.start();
    d.ctl_ok(&["run", "warm"]);
    wait_run_end(&d, "warm", 1);
    let before = vm_hwm_kb(d.pid());
    d.ctl_ok(&["run", "huge"]);
    wait_run_end(&d, "huge", 1);
    let after = vm_hwm_kb(d.pid());
    eprintln!("daemon VmHWM: {before} kB before, {after} kB after the 50 MiB line");
    assert!(
        after.saturating_sub(before) < 2048,
        "daemon peak RSS grew by {} kB for a 50 MiB line ({before} kB -> {after} kB)",
        after.saturating_sub(before)
    );
    let text = std::fs::read_to_string(env.path("logs/huge.log")).expect("log");
    let bytes: usize = text
        .lines()
        .filter_map(|l| l.splitn(5, ' ').nth(4).filter(|_| !l.contains(" sys ")))
        .map(str::len)
        .sum();
    assert_eq!(bytes, 52_428_800, "every byte of the line in the file");
}

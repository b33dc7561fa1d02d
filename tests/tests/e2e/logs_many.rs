//! `ctl logs [-f] NAME|GLOB...` over several scripts, as a shell script would use it: the
//! backlogs merged by time, live lines in the order they come, each with the script's name
//! (a first column in the table, `script` in JSON), nothing lost or repeated at the seam;
//! `--until-match` ends at the first match in any of them; `--run` or `--after-seq` with
//! several is a usage error (2), a name or glob that selects nothing is 4; one name keeps
//! the output of one script.

use ctl::logs::LogLineJson;
use scriptd_e2e::{Daemon, Env, Follower, DEADLINE};

/// Services `w-1`, `w-2` and `other`: each prints `NAME backlog` once the file
/// `start-NAME` exists, then `NAME live` once `go-NAME` exists, then sleeps.
fn env() -> Env {
    let body = |name: &str| {
        let wait = |file: &str| format!("while [ ! -e {file} ]; do sleep 0.01; done\n");
        format!(
            "{}echo '{name} backlog'\n{}echo '{name} live'\nexec sleep 60",
            wait(&format!("start-{name}")),
            wait(&format!("go-{name}")),
        )
    };
    let settings = "    restart: never\n";
    Env::with_scripts(&[
        ("w-1", &body("w-1"), settings),
        ("w-2", &body("w-2"), settings),
        ("other", &body("other"), settings),
    ])
}

/// Starts the daemon and has the scripts print their backlog lines in this order, each
/// once the one before is in the daemon's log: `other`, `w-2`, `w-1`.
fn started(env: &Env) -> Daemon {
    let d = env.start();
    for name in ["other", "w-2", "w-1"] {
        env.write(&format!("start-{name}"), "");
        scriptd_e2e::wait_for(&format!("{name}'s first line"), DEADLINE, || {
            d.ctl(&["logs", name])
                .stdout
                .contains(&format!("{name} backlog"))
                .then_some(())
        });
    }
    d
}

fn parse(line: &str) -> LogLineJson {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("log line does not parse ({e}): {line}"))
}

/// `(script, text)` of a JSON line.
fn named(l: &LogLineJson) -> (String, String) {
    (l.script.clone().unwrap_or_default(), l.text.clone())
}

#[test]
fn lines_of_several_scripts_interleave_with_their_names() {
    let env = env();
    let d = started(&env);
    let f = Follower::start(
        &d,
        &[
            "logs", "-f", "--stream", "stdout", "-o", "json", "w-*", "other",
        ],
    );
    let next = || parse(&f.next_line(DEADLINE).expect("a log line"));
    // The backlog in order of time, not in the order named.
    let backlog: Vec<LogLineJson> = (0..3).map(|_| next()).collect();
    assert_eq!(
        backlog.iter().map(named).collect::<Vec<_>>(),
        [
            ("other".into(), "other backlog".into()),
            ("w-2".into(), "w-2 backlog".into()),
            ("w-1".into(), "w-1 backlog".into()),
        ]
    );
    // Live lines as they come; none of the backlog again.
    for name in ["w-2", "other", "w-1"] {
        env.write(&format!("go-{name}"), "");
        assert_eq!(named(&next()), (name.into(), format!("{name} live")));
    }
    drop(f);

    // The table: a name column first, padded to the longest name.
    let r = d.ctl(&["logs", "--stream", "stdout", "other", "w-1"]);
    assert_eq!(r.code, 0, "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{r:?}");
    for (line, (name, text)) in lines.iter().zip([
        ("other", "other backlog"),
        ("w-1  ", "w-1 backlog"),
        ("other", "other live"),
        ("w-1  ", "w-1 live"),
    ]) {
        assert!(
            line.starts_with(&format!("{name} ")) && line.ends_with(&format!("out | {text}")),
            "{line:?} in {r:?}"
        );
    }

    // One name: the output of one script, no name.
    let r = d.ctl(&["logs", "-o", "json", "--stream", "stdout", "w-1"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("\"script\""), "{r:?}");
    assert_eq!(r.stdout.lines().count(), 2, "{r:?}");
}

#[test]
fn until_match_ends_at_the_first_match_in_any_script_and_bad_combinations_are_refused() {
    let env = env();
    let d = started(&env);
    let f = Follower::start(
        &d,
        &[
            "logs",
            "-f",
            "--stream",
            "stdout",
            "--until-match",
            "live$",
            "w-1",
            "other",
        ],
    );
    // The backlog has no match; `other live` matches whether it comes before the follow
    // began (then it is in the backlog) or after.
    env.write("go-other", "");
    let (code, lines) = f.wait_exit("ctl logs --until-match to end at the match");
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("other ") && l.ends_with("| other live")),
        "{lines:?}"
    );

    for (args, code) in [
        (&["logs", "--run", "1", "w-1", "w-2"][..], 2),
        (&["logs", "--run", "1", "w-*"][..], 2),
        (&["logs", "--after-seq", "1", "w-1", "other"][..], 2),
        (&["logs", "w-1", "nosuch"][..], 4),
        (&["logs", "-f", "x-*"][..], 4),
    ] {
        let r = d.ctl(args);
        assert_eq!(r.code, code, "ctl {args:?}: {r:?}");
    }
}

//! The limits scripts start with: the daemon raises its own soft descriptor limit
//! (`RLIMIT_NOFILE`) to the hard one, and gives scripts back the soft limit it was started
//! with (a program that uses `select()` breaks on descriptors past 1,023).

use scriptd_e2e::{nofile_limits, wait_for, Env, DEADLINE};
use std::fs;

#[test]
fn scripts_get_the_soft_descriptor_limit_the_daemon_was_started_with() {
    let env = Env::new("");
    let out = env.path("limits.txt");
    let script = env.script(
        "limits.sh",
        &format!(
            "echo \"$(ulimit -Sn) $(ulimit -Hn)\" > {0}.tmp && mv {0}.tmp {0}\nexec sleep 600",
            out.display()
        ),
    );
    env.set_body(&format!(
        "scripts:\n  limits:\n    command: [\"{}\"]\n    restart: never\n",
        script.display()
    ));
    // As `prlimit --nofile=1024:4096 scriptd ...`.
    let d = env.start_with_nofile(1024, 4096, &[]);
    assert_eq!(
        nofile_limits(d.pid()),
        ("4096".to_owned(), "4096".to_owned()),
        "the daemon raised its own soft limit"
    );
    let seen = wait_for("the script to write its limits", DEADLINE, || {
        fs::read_to_string(&out).ok().filter(|t| !t.is_empty())
    });
    assert_eq!(
        seen.trim(),
        "1024 4096",
        "the script gets the soft limit the daemon was started with, and the hard one"
    );
}

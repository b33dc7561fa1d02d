//! Shell completion as a shell runs it: bash sources `ctl completions bash`, and each TAB
//! calls `ctl` back, which offers subcommands and options from its own definition (hidden
//! ones never), script names and version numbers from the running daemon, and quietly
//! nothing from a daemon it cannot reach.

use scriptd_e2e::{ctl_bin, Env};
use std::path::Path;
use std::process::Command;

/// What bash's completion offers for `ctl WORDS… CURRENT<TAB>`, and its stderr.
fn complete(socket: &Path, words: &[&str], current: &str) -> (Vec<String>, String) {
    let bin_dir = ctl_bin().parent().expect("ctl's directory").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut all: Vec<&str> = vec!["ctl"];
    all.extend_from_slice(words);
    all.push(current);
    let quoted: Vec<String> = all.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source <(ctl completions bash)\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         COMP_TYPE=9\n\
         _clap_complete_ctl ctl '{current}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        words = quoted.join(" "),
        cword = all.len() - 1,
        prev = all[all.len() - 2],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .env("PATH", path)
        .env("SCRIPTD_SOCKET", socket)
        .env_remove("SCRIPTD_CONFIG")
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash failed: {out:?}");
    let offered = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    (offered, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bash_completion_offers_commands_script_names_and_versions() {
    let env = Env::new(
        "scripts:\n  web-a:\n    command: \"sleep 30\"\n  worker:\n    command: \"sleep 30\"\n",
    );
    let d = env.start();
    d.wait_script("web-a", "running", |s| s.state == "running");

    let (offered, stderr) = complete(&env.socket(), &[], "");
    for cmd in ["status", "reload", "start", "rollback", "logs"] {
        assert!(
            offered.iter().any(|o| o == cmd),
            "{cmd}: {offered:?} {stderr}"
        );
    }
    assert!(!offered.iter().any(|o| o == "man"), "hidden: {offered:?}");

    let (offered, _) = complete(&env.socket(), &["start"], "");
    assert!(offered.iter().any(|o| o == "web-a"), "{offered:?}");
    assert!(offered.iter().any(|o| o == "worker"), "{offered:?}");
    let (offered, _) = complete(&env.socket(), &["logs"], "w");
    assert_eq!(offered, ["web-a", "worker"]);
    let (offered, _) = complete(&env.socket(), &["restart", "web-a"], "wo");
    assert_eq!(offered, ["worker"], "several names: the next one too");

    // A save makes version 2: both are offered where a version is named.
    env.set_body(
        "scripts:\n  web-a:\n    command: \"sleep 31\"\n  worker:\n    command: \"sleep 30\"\n",
    );
    d.wait_script("web-a", "restarted by version 2", |_| {
        d.status().running_version == 2
    });
    let (offered, _) = complete(&env.socket(), &["rollback"], "");
    assert!(
        offered.iter().any(|o| o == "1") && offered.iter().any(|o| o == "2"),
        "{offered:?}"
    );
    let (offered, _) = complete(&env.socket(), &["history", "show"], "");
    assert!(offered.iter().any(|o| o == "2"), "{offered:?}");
}

#[test]
fn an_unreachable_daemon_means_no_names_and_no_noise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (offered, stderr) = complete(&dir.path().join("nothing.sock"), &["start"], "");
    assert!(
        offered.iter().all(|o| o.starts_with('-')),
        "only options: {offered:?}"
    );
    assert!(stderr.is_empty(), "nothing on the terminal: {stderr}");
}

//! Preview a candidate, then apply exactly it, as a shell script drives `ctl`: `reload
//! --dry-run --file TARGET=CANDIDATE` (nothing written), `reload --file ... --plan ID`
//! (written into place and applied in one call, with the watcher on, which then finds the
//! running version and records nothing), a stale plan (exit 3, nothing written), a plan whose
//! files already run (exit 0), a malformed plan id (exit 2, no attempt), targets that are not
//! part of the config or not allowed, a failed apply that puts the files back, `rollback
//! --plan`, and `examples/ci-deploy.sh` run against a real daemon with a good and a bad
//! candidate. Every wait is on an event or a poll with a deadline.

use ctl::history::HistoryJson;
use ctl::output::ReloadJson;
use scriptd_e2e::{
    alive, ctl_bin, is_phase, read, wait_for, Daemon, Env, Events, Run, DAEMON_SECTION, DEADLINE,
};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// ------------------------------------------------------------------ helpers

/// A service `svc` that appends its `V` to `out.txt` at each start, then sleeps.
fn svc(v: &str) -> String {
    format!(
        "scripts:\n  svc:\n    command: \"echo $V >> out.txt; exec sleep 1000\"\n    env: {{ V: \"{v}\" }}\n"
    )
}

/// Candidate files, outside the config directory.
struct Candidates(tempfile::TempDir);

impl Candidates {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("candidate dir"))
    }

    /// Writes `content` to the candidate file `name`; returns its path.
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).expect("write candidate");
        path
    }
}

/// `TARGET=CANDIDATE`.
fn file_arg(target: &str, candidate: &Path) -> String {
    format!("{target}={}", candidate.display())
}

/// `ctl -o json ARGS` (reload or rollback): exit code and the document, parsed strictly.
fn json(d: &Daemon, args: &[&str]) -> (i32, ReloadJson) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let r = d.ctl(&all);
    let doc = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("`ctl {}` JSON does not parse ({e}): {r:?}", all.join(" ")));
    (r.code, doc)
}

/// `ctl history -o json`, parsed strictly.
fn history(d: &Daemon) -> HistoryJson {
    let r = d.ctl(&["history", "--limit", "100", "-o", "json"]);
    assert_eq!(r.code, 0, "ctl history failed: {}", r.stderr);
    serde_json::from_str(&r.stdout).expect("history JSON parses strictly")
}

/// `(version, source, result)` of every history entry, newest first.
fn entries(d: &Daemon) -> Vec<(Option<u64>, String, String)> {
    history(d)
        .entries
        .into_iter()
        .map(|e| (e.version, e.source, e.result))
        .collect()
}

fn wait_running(d: &Daemon, name: &str) -> u32 {
    d.wait_script(name, "running", |s| s.state == "running" && s.pid.is_some())
        .pid
        .expect("pid")
}

fn wait_version(d: &Daemon, v: u64) {
    wait_for(&format!("version {v} running"), DEADLINE, || {
        (d.status().running_version == v).then_some(())
    });
}

/// Runs `ctl ARGS` with `input` on its stdin.
fn ctl_with_stdin(d: &Daemon, args: &[&str], input: &str) -> Run {
    piped(d.ctl_command(args), input)
}

/// Runs `cmd` (a `ctl`) with `input` on its stdin.
fn piped(mut cmd: Command, input: &str) -> Run {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ctl output").into()
}

// ------------------------------------------------------------------ preview, apply, plans

#[test]
fn preview_then_apply_exactly_the_candidate_and_the_watcher_finds_nothing_to_do() {
    let env = Env::new(&svc("one"));
    let d = env.start();
    let pid = wait_running(&d, "svc");
    let mut ev = Events::follow(&d);
    let before = read(&env.config());
    let cands = Candidates::new();
    let text = format!("{DAEMON_SECTION}{}", svc("two"));
    let cand = cands.write("next.yaml", &text);
    let arg = file_arg("scriptd.yaml", &cand);

    let (code, dry) = json(&d, &["reload", "--dry-run", "--file", &arg]);
    assert_eq!(
        (code, dry.result.as_str(), dry.dry_run, dry.version),
        (0, "would-apply", true, 1),
        "{dry:?}"
    );
    let plan = dry.plan_id.clone().expect("a preview prints its plan id");
    assert!(
        dry.changes
            .iter()
            .any(|c| c.script == "svc" && c.field == "env.V"),
        "{dry:?}"
    );
    assert_eq!(read(&env.config()), before, "a preview wrote the file");
    assert_eq!(d.script("svc").pid, Some(pid), "a preview restarted svc");
    let table = d.ctl(&["reload", "--dry-run", "--file", &arg]);
    assert!(
        table
            .stdout
            .contains(&format!("ctl reload --file {arg} --plan {plan}")),
        "the table says how to apply exactly this candidate: {table:?}"
    );

    let (code, r) = json(&d, &["reload", "--file", &arg, "--plan", &plan]);
    assert_eq!(
        (code, r.result.as_str(), r.version, r.plan_id.as_deref()),
        (0, "applied", 2, Some(plan.as_str())),
        "{r:?}"
    );
    assert_eq!(read(&env.config()), text, "the candidate is on disk");
    let mode = std::fs::metadata(env.config())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "the file kept its mode");
    env.wait_file("out.txt", "one\ntwo\n");

    // The watcher saw the file written, read it, and found the running version.
    ev.wait("the watcher's reload finding nothing to do", |e| {
        is_phase(e, "unchanged") && e.source.as_deref() == Some("watch")
    });
    assert_eq!(
        entries(&d),
        [
            (Some(2), "ctl".to_owned(), "applied".to_owned()),
            (Some(1), "startup".to_owned(), "applied".to_owned()),
        ],
        "one attempt for the candidate, none for the watcher"
    );
    assert_eq!(d.status().sync, "in-sync");
    // The same preview now says the candidate is running, as the files on disk are.
    let (code, dry) = json(&d, &["reload", "--dry-run", "--file", &arg]);
    assert_eq!((code, dry.result.as_str()), (0, "unchanged"), "{dry:?}");
    let (_, disk) = d.reload(&["--dry-run"]);
    assert_eq!(
        disk.plan_id, dry.plan_id,
        "plan ids agree: candidate and disk"
    );
}

#[test]
fn a_stale_plan_writes_nothing_and_exits_3() {
    let env = Env::new(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    let cands = Candidates::new();
    let cand = cands.write("next.yaml", &format!("{DAEMON_SECTION}{}", svc("two")));
    let arg = file_arg("scriptd.yaml", &cand);
    let (_, dry) = json(&d, &["reload", "--dry-run", "--file", &arg]);
    let plan = dry.plan_id.expect("plan id");

    // Someone else saves meanwhile: the watcher applies it.
    env.set_body(&svc("three"));
    wait_version(&d, 2);
    let saved = read(&env.config());

    let (code, r) = json(&d, &["reload", "--file", &arg, "--plan", &plan]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "rejected", 2),
        "{r:?}"
    );
    assert!(
        r.message
            .as_deref()
            .is_some_and(|m| m.contains(&plan) && m.contains("stale")),
        "{r:?}"
    );
    assert_eq!(read(&env.config()), saved, "a stale plan wrote the file");
    assert_eq!(d.status().running_version, 2);
}

#[test]
fn a_plan_whose_files_already_run_exits_0_and_records_nothing() {
    let env = Env::new(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    let cands = Candidates::new();
    let cand = cands.write("next.yaml", &format!("{DAEMON_SECTION}{}", svc("two")));
    let arg = file_arg("scriptd.yaml", &cand);
    let (_, dry) = json(&d, &["reload", "--dry-run", "--file", &arg]);
    let plan = dry.plan_id.expect("plan id");

    // Applied without the plan (as another job would): the plan's files now run.
    let (code, r) = json(&d, &["reload", "--file", &arg]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "applied", 2),
        "{r:?}"
    );
    let before = entries(&d);

    for args in [
        vec!["reload", "--file", &arg, "--plan", &plan],
        vec!["reload", "--plan", &plan],
    ] {
        let (code, r) = json(&d, &args);
        assert_eq!(
            (code, r.result.as_str(), r.version),
            (0, "unchanged", 2),
            "{args:?}: {r:?}"
        );
        assert!(
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("already running")),
            "{r:?}"
        );
    }
    let text = d.ctl(&["reload", "--plan", &plan]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("already running"), "{text:?}");
    assert_eq!(entries(&d), before, "no attempt was recorded");
}

#[test]
fn a_malformed_plan_id_is_a_usage_error_and_no_attempt() {
    let env = Env::new(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    for args in [
        vec!["reload", "--plan", "latest"],
        vec!["reload", "--plan", "v1-XYZ"],
        vec!["rollback", "--plan", "v1"],
    ] {
        let r = d.ctl(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("is not a plan id"), "{args:?}: {r:?}");
    }
    let r = d.ctl(&["reload", "--file", "scriptd.yaml"]);
    assert_eq!(r.code, 2, "--file without =CANDIDATE: {r:?}");
    assert!(r.stderr.contains("TARGET=CANDIDATE"), "{r:?}");
    assert_eq!(
        entries(&d),
        [(Some(1), "startup".to_owned(), "applied".to_owned())],
        "nothing was recorded"
    );
}

#[test]
fn the_daemon_refuses_a_malformed_plan_id_itself_without_an_attempt() {
    use scriptd_common::proto;
    let env = Env::new(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    // Another client than ctl (which refuses first): the daemon's own check.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let codes = runtime.block_on(async {
        let mut c = ctl::client::connect(&d.socket).await.expect("connect");
        let reload = c
            .reload(proto::ReloadRequest {
                plan_id: "latest".into(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        let rollback = c
            .rollback(proto::RollbackRequest {
                plan_id: "v1-short".into(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        [reload, rollback].map(|s| (s.code(), s.message().contains("is not a plan id")))
    });
    assert_eq!(codes, [(tonic::Code::InvalidArgument, true); 2]);
    assert_eq!(
        entries(&d),
        [(Some(1), "startup".to_owned(), "applied".to_owned())],
        "nothing was recorded"
    );
}

// ------------------------------------------------------------------ targets

#[test]
fn a_new_included_file_from_stdin_and_targets_that_are_refused() {
    let body = format!("include: [\"conf.d/*.yaml\"]\n{}", svc("one"));
    // The watcher off: the symlink planted in conf.d below is itself an include file, which
    // the watcher would apply as version 3 on its own.
    let env = Env::manual(&body);
    let d = env.start();
    wait_running(&d, "svc");
    let web = "scripts:\n  web:\n    command: \"exec sleep 1000\"\n";

    let r = ctl_with_stdin(
        &d,
        &["-o", "json", "reload", "--file", "conf.d/web.yaml=-"],
        web,
    );
    let doc: ReloadJson = serde_json::from_str(&r.stdout).expect("reload JSON");
    assert_eq!(
        (r.code, doc.result.as_str(), doc.version),
        (0, "applied", 2),
        "{r:?}"
    );
    assert_eq!(read(&env.path("conf.d/web.yaml")), web);
    let mode = std::fs::metadata(env.path("conf.d/web.yaml"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "a new file is 0644");
    wait_running(&d, "web");

    let cands = Candidates::new();
    let cand = cands.write("x.yaml", "scripts: {}\n");
    // Not part of the config: no glob matches it (exit 3, an error at that file).
    let (code, r) = json(&d, &["reload", "--file", &file_arg("other/x.yaml", &cand)]);
    assert_eq!((code, r.result.as_str()), (3, "invalid"), "{r:?}");
    assert_eq!(r.errors[0].file, "other/x.yaml", "{r:?}");
    assert!(
        r.errors[0].message.contains("not part of the config"),
        "{r:?}"
    );
    assert!(!env.path("other").exists(), "nothing was written");
    // Outside the main file's directory: usage errors (exit 2), before any attempt.
    for target in ["../x.yaml", "conf.d/../../x.yaml", "/tmp/x.yaml"] {
        let r = d.ctl(&["reload", "--file", &file_arg(target, &cand)]);
        assert_eq!(r.code, 2, "{target}: {r:?}");
        assert!(r.stderr.contains(target), "{target}: {r:?}");
    }
    // A symlink is never written through (exit 3), and its target is left alone.
    env.write("victim.yaml", "scripts: {}\n");
    std::os::unix::fs::symlink("../victim.yaml", env.path("conf.d/link.yaml")).expect("symlink");
    let (code, r) = json(
        &d,
        &["reload", "--file", &file_arg("conf.d/link.yaml", &cand)],
    );
    assert_eq!(code, 3, "{r:?}");
    assert!(
        r.errors.iter().any(|e| e.message.contains("symbolic link")),
        "{r:?}"
    );
    assert_eq!(read(&env.path("victim.yaml")), "scripts: {}\n");
    // An invalid candidate: exit 3, the file on disk as it was.
    let bad = cands.write("bad.yaml", "scripts:\n  web:\n    comand: x\n");
    let (code, r) = json(
        &d,
        &["reload", "--file", &file_arg("conf.d/web.yaml", &bad)],
    );
    assert_eq!((code, r.result.as_str()), (3, "invalid"), "{r:?}");
    assert_eq!(read(&env.path("conf.d/web.yaml")), web);
    assert!(
        entries(&d).iter().all(|(v, _, _)| *v != Some(3)),
        "nothing refused was applied"
    );
}

#[test]
fn a_failed_apply_puts_the_files_back_and_the_watcher_records_nothing() {
    let body = format!("include: [\"conf.d/*.yaml\"]\n{}", svc("one"));
    let env = Env::new(&body);
    let d = env.start();
    let pid = wait_running(&d, "svc");
    let mut ev = Events::follow(&d);
    let before = read(&env.config());
    // Passes validation (an executable file), fails to spawn (its interpreter is missing).
    let bad = env.path("bad.sh");
    std::fs::write(&bad, "#!/nonexistent/interp\n").expect("write");
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cands = Candidates::new();
    let main = cands.write(
        "main.yaml",
        &format!("{before}  bad:\n    command: [\"{}\"]\n", bad.display()),
    );
    let extra = cands.write(
        "extra.yaml",
        "scripts:\n  extra:\n    command: \"exec sleep 1000\"\n",
    );

    let (code, r) = json(
        &d,
        &[
            "reload",
            "--file",
            &file_arg("scriptd.yaml", &main),
            "--file",
            &file_arg("conf.d/extra.yaml", &extra),
        ],
    );
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "failed-rolled-back", 1),
        "{r:?}"
    );
    assert!(
        r.message.as_deref().is_some_and(|m| m.contains("put back")),
        "{r:?}"
    );
    assert_eq!(read(&env.config()), before, "the main file is back");
    assert!(
        !env.path("conf.d/extra.yaml").exists(),
        "the new file is gone"
    );
    assert_eq!(d.script("svc").pid, Some(pid));
    assert!(alive(pid));
    ev.wait("the watcher's reload finding nothing to do", |e| {
        is_phase(e, "unchanged") && e.source.as_deref() == Some("watch")
    });
    let h = entries(&d);
    assert_eq!(
        h,
        [
            (None, "ctl".to_owned(), "failed-rolled-back".to_owned()),
            (Some(1), "startup".to_owned(), "applied".to_owned()),
        ],
        "the failed attempt only"
    );
}

#[test]
fn a_candidate_that_cannot_be_written_applies_nothing_and_writes_nothing() {
    let body = format!("include: [\"conf.d/*.yaml\"]\n{}", svc("one"));
    let env = Env::manual(&body);
    let d = env.start();
    let pid = wait_running(&d, "svc");
    let before = read(&env.config());
    // The file's directory cannot be created: a file sits where it should be.
    env.write("conf.d", "not a directory\n");
    let cands = Candidates::new();
    let main = cands.write("main.yaml", &before.replace("\"one\"", "\"two\""));
    let extra = cands.write("extra.yaml", "scripts: {}\n");
    let (code, r) = json(
        &d,
        &[
            "reload",
            "--file",
            &file_arg("scriptd.yaml", &main),
            "--file",
            &file_arg("conf.d/extra.yaml", &extra),
        ],
    );
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "failed-rolled-back", 1),
        "{r:?}"
    );
    assert!(
        r.message
            .as_deref()
            .is_some_and(|m| m.contains("could not be written") && m.contains("conf.d")),
        "{r:?}"
    );
    assert_eq!(read(&env.config()), before, "the main file was not written");
    let names: Vec<String> = std::fs::read_dir(env.dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("scriptd-candidate"))
        .collect();
    assert!(names.is_empty(), "temp files left: {names:?}");
    assert_eq!(d.script("svc").pid, Some(pid), "svc was touched");
}

#[test]
fn a_candidate_that_runs_already_rewrites_the_files_on_disk_that_differ() {
    let env = Env::manual(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    let running = read(&env.config());
    // An edit on disk that is not applied (the watcher is off).
    env.set_manual(&svc("pending"));
    let cands = Candidates::new();
    let cand = cands.write("same.yaml", &running);
    let (code, r) = json(&d, &["reload", "--file", &file_arg("scriptd.yaml", &cand)]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "unchanged", 1),
        "{r:?}"
    );
    assert!(
        r.message
            .as_deref()
            .is_some_and(|m| m.contains("rewritten")),
        "{r:?}"
    );
    assert_eq!(
        read(&env.config()),
        running,
        "the disk matches the running version"
    );
    assert_eq!(d.status().sync, "in-sync");
    assert_eq!(
        entries(&d)[0],
        (None, "ctl".to_owned(), "unchanged".to_owned()),
        "the rewrite is in the audit trail"
    );
}

// ------------------------------------------------------------------ rollback --plan

#[test]
fn rollback_applies_a_plan_only_while_it_matches() {
    let env = Env::new(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    let one = read(&env.config());
    env.set_body(&svc("two"));
    wait_version(&d, 2);

    let (code, dry) = json(&d, &["rollback", "--dry-run"]);
    assert_eq!((code, dry.version), (0, 2), "{dry:?}");
    let plan = dry.plan_id.expect("a rollback preview prints its plan id");
    let (code, r) = json(&d, &["rollback", "--plan", &plan]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (0, "applied", 3),
        "{r:?}"
    );
    assert_eq!(read(&env.config()), one);

    let (_, dry) = json(&d, &["rollback", "--dry-run", "2"]);
    let plan = dry.plan_id.expect("plan id");
    env.set_body(&svc("four"));
    wait_version(&d, 4);
    let (code, r) = json(&d, &["rollback", "--plan", &plan, "2"]);
    assert_eq!(
        (code, r.result.as_str(), r.version),
        (3, "rejected", 4),
        "{r:?}"
    );
    assert!(read(&env.config()).contains("four"), "nothing was written");
}

// ------------------------------------------------------------------ examples/ci-deploy.sh

/// Runs `examples/ci-deploy.sh TARGET CANDIDATE` against `d`.
fn ci_deploy(d: &Daemon, target: &str, candidate: &Path, settle: &str) -> Run {
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "examples/ci-deploy.sh needs python3: install it (apt-get install python3)"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ci-deploy.sh");
    Command::new("bash")
        .arg(script)
        .arg(target)
        .arg(candidate)
        .env("CTL", ctl_bin())
        .env("SCRIPTD_SOCKET", &d.socket)
        .env_remove("SCRIPTD_CONFIG")
        .env("SETTLE", settle)
        .output()
        .expect("run bash examples/ci-deploy.sh")
        .into()
}

#[test]
fn ci_deploy_example_deploys_a_good_candidate_and_rolls_back_a_bad_one() {
    let env = Env::new(&svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    let cands = Candidates::new();

    // A short verify window: the bad candidate's service is judged within 2 s.
    let good = format!("{DAEMON_SECTION}reload:\n  verify: 2s\n{}", svc("two"));
    let r = ci_deploy(&d, "scriptd.yaml", &cands.write("good.yaml", &good), "1");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("deployed: version 2"), "{r:?}");
    assert_eq!(d.status().running_version, 2);
    assert_eq!(read(&env.config()), good);
    env.wait_file("out.txt", "one\ntwo\n");

    // A service that exits at once: never ready, so the apply is not verified (and kept, the
    // default `reload.on_failure`): the script rolls back.
    let bad = format!("{good}  crash:\n    command: \"exit 1\"\n");
    let r = ci_deploy(&d, "scriptd.yaml", &cands.write("bad.yaml", &bad), "5");
    assert_eq!(r.code, 6, "{r:?}");
    assert!(r.stderr.contains("rolling back to version 2"), "{r:?}");
    let st = d.status();
    assert_eq!(
        st.running_version, 4,
        "the bad version 3, then the rollback"
    );
    assert!(
        st.scripts.iter().all(|s| s.name != "crash"),
        "the crashing service is gone: {st:?}"
    );
    assert_eq!(read(&env.config()), good, "the file on disk is back");
    let h = history(&d);
    let top = &h.entries[0];
    assert_eq!(
        (top.version, top.source.as_str(), top.rollback_to),
        (Some(4), "rollback", Some(2)),
        "{top:?}"
    );
}

// ------------------------------------------------------------------ who may

#[test]
#[cfg_attr(not(as_root), ignore = "needs root")]
fn previewing_a_candidate_needs_the_operate_role_like_applying_it() {
    use crate::access::{access_env, user, Clients};
    let access = [
        "{ user: 54331, role: read }",
        "{ user: 54332, role: operate }",
    ];
    let env = access_env(&access, &svc("one"));
    let d = env.start();
    wait_running(&d, "svc");
    let clients = Clients::new();
    let next = read(&env.config()).replace("\"one\"", "\"two\"");
    let (reader, operator) = (user(54331), user(54332));

    let r = clients.ctl(&d, &reader, &["reload", "--dry-run"]);
    assert_eq!(r.code, 0, "a reader previews the files on disk: {r:?}");
    for (args, call) in [
        (
            &["reload", "--dry-run", "--file", "scriptd.yaml=-"][..],
            "Diff of candidate files",
        ),
        (&["reload", "--file", "scriptd.yaml=-"], "Reload"),
    ] {
        let r = piped(clients.ctl_command(&d, &reader, args), &next);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains(&format!("{call} needs the operate role")),
            "{args:?}: {r:?}"
        );
    }
    assert_eq!(d.status().running_version, 1);

    let args = ["-o", "json", "reload", "--file", "scriptd.yaml=-"];
    let r = piped(clients.ctl_command(&d, &operator, &args), &next);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(read(&env.config()), next);
    let top = &history(&d).entries[0];
    assert_eq!((top.version, top.uid), (Some(2), Some(54332)), "{top:?}");
}

//! `cfg(as_root)` for the build scripts of the packages with root-only tests (this one and
//! `tests/`, which includes this file): set when the build runs with effective uid 0, so a
//! root-only test carries `#[cfg_attr(not(as_root), ignore = "needs root")]`, is listed as
//! ignored in a run as another user and runs in CI (root).

/// Declares `cfg(as_root)` and sets it when this process's effective uid is 0. Runs again
/// when `USER` changes (`sudo cargo test` in a target directory built as a user).
pub fn emit() {
    println!("cargo::rustc-check-cfg=cfg(as_root)");
    println!("cargo::rerun-if-env-changed=USER");
    if effective_uid() == Some(0) {
        println!("cargo::rustc-cfg=as_root");
    }
}

/// The effective uid, from the `Uid:` line of `/proc/self/status` (real, effective, saved,
/// filesystem); `None` when it cannot be read, which counts as not root.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

//! `scriptd(8)`: the command-line options from clap, then the configuration, the script
//! fields (from the field table), exit status, signals, environment and files. The tables
//! here are the one source: the README carries each of them as a Markdown table rendered by
//! [`markdown`], and `daemon/tests/check.rs` checks that it does and that the shipped
//! `packaging/man/scriptd.8` is what [`page`] renders, so the two cannot drift.

use scriptd_common::config;

/// One row: a name (code, signal, variable, path, key) and what it means. Text may quote
/// code in backticks.
pub type Row = (&'static str, &'static str);

/// Top-level keys of the main file.
pub const CONFIG_KEYS: &[Row] = &[
    (
        "daemon",
        "Settings of the daemon itself, read at start only: a reload that changes one is \
         rejected (restart the daemon to apply it).",
    ),
    (
        "daemon.socket",
        "The Unix socket `ctl` talks to (default `run/scriptd.sock`).",
    ),
    (
        "daemon.state_dir",
        "The history database and the daemon's lock (default `state`).",
    ),
    (
        "daemon.log_dir",
        "One log file per script, `NAME.log`, rotated by size (default `logs`).",
    ),
    (
        "daemon.debounce",
        "How long the watcher waits after the first file event before reloading (default \
         `50ms`).",
    ),
    (
        "daemon.watch",
        "`false`: edits apply only on `ctl reload` or SIGHUP (default `true`).",
    ),
    (
        "daemon.history_limit",
        "Versions kept in the history; the running one always is (default `100`).",
    ),
    (
        "daemon.access",
        "Who besides root and the daemon's user may use `ctl`: `{ user: NAME|UID, role: \
         read|operate }`, `{ group: NAME|GID, role: ... }`, and over TCP `{ cert: NAME, role: \
         ... }` (a client certificate's CN or DNS/URI SAN).",
    ),
    (
        "daemon.listen",
        "A TCP listener beside the socket, TLS mandatory and client certificates required: \
         `{ tcp: ADDR:PORT, tls: { cert: PEM, key: PEM, client_ca: PEM } }` (default: none).",
    ),
    (
        "daemon.metrics",
        "`IP:PORT` of the Prometheus endpoint `GET /metrics` (off by default; loopback is \
         the safe choice).",
    ),
    (
        "daemon.source.etcd",
        "The config comes from one etcd key: `{ endpoints: [http://HOST:PORT], key: KEY, \
         username: NAME, password_file: PATH }`, over TLS with `https://` endpoints and \
         `tls: { ca: PEM, cert: PEM, key: PEM }` (see etcd in the README); this file then \
         holds only `daemon:`.",
    ),
    (
        "include",
        "Globs of further files, relative to the main file's directory, each holding only a \
         `scripts:` map; never matching dotfiles.",
    ),
    (
        "defaults",
        "Script fields inherited by every script that does not set them.",
    ),
    (
        "scripts",
        "One entry per script, by name (letters, digits, `_`, `-`, `.`): see SCRIPT FIELDS.",
    ),
    (
        "reload",
        "How an applied reload is verified, live: `{ verify: DUR, on_failure: keep or \
         rollback }`. Every script the apply started or restarted must be ready (and healthy, \
         with a probe) within `verify` (default `30s`); with `rollback` the daemon puts the \
         previous version back when one is not (default `keep`).",
    ),
];

/// `scriptd`'s exit status.
pub const EXIT_STATUS: &[Row] = &[
    (
        "0",
        "A clean shutdown (SIGTERM, SIGINT), or `--check` of a valid config.",
    ),
    (
        "1",
        "Any other startup error: the config file cannot be read (a wrong path), another \
         daemon holds the socket or the state directory, something that is not a stale \
         socket sits at the socket path, other users could write `state_dir` or `log_dir`.",
    ),
    (
        "3",
        "The config is invalid (`--check`, or at startup: nothing is started). The unit does \
         not restart on it (`RestartPreventExitStatus=3`).",
    ),
];

/// Signals the daemon handles.
pub const SIGNALS: &[Row] = &[
    (
        "SIGHUP",
        "Reload the config, as `ctl reload` does; SIGHUPs that arrive while one is pending \
         coalesce into one more reload.",
    ),
    (
        "SIGTERM, SIGINT",
        "Stop every script with its own `stop_signal` and `stop_grace`, then exit 0.",
    ),
];

/// Environment variables the daemon reads or sets.
pub const ENVIRONMENT: &[Row] = &[
    (
        "SCRIPTD_CONFIG",
        "The main config file when `--config` is not given.",
    ),
    (
        "SCRIPTD_LOG",
        "The daemon's log filter: a level (`debug`) or `target=level,...` \
         (`scriptd::reload=debug`).",
    ),
    (
        "SCRIPTD_IDLE_TIMEOUT",
        "How long a connection with no call in flight stays open (default `60s`).",
    ),
    (
        "NOTIFY_SOCKET",
        "Set by systemd: the daemon sends READY, RELOADING and STOPPING; scripts do not \
         inherit it.",
    ),
    (
        "SCRIPTD_SCRIPT, SCRIPTD_RUN_ID",
        "Set in every script's environment: its name and the id of the run.",
    ),
];

/// Files of the packaged install.
pub const FILES: &[Row] = &[
    (
        "/etc/scriptd/scriptd.yaml",
        "The main config (used when neither `--config` nor `SCRIPTD_CONFIG` is given and \
         there is no `./scriptd.yaml`).",
    ),
    (
        "/etc/scriptd/scripts.d/*.yaml",
        "Included files, one `scripts:` map each.",
    ),
    ("/run/scriptd/scriptd.sock", "The socket `ctl` talks to."),
    (
        "/var/lib/scriptd/",
        "The history database (every version's files) and the state lock.",
    ),
    (
        "/var/log/scriptd/NAME.log",
        "Each script's log, rotated by size.",
    ),
    (
        "/usr/libexec/scriptd/scriptd-shim",
        "The process-group shim every script runs under.",
    ),
];

/// A Markdown table of `rows` under the two column headings.
pub fn markdown(headings: (&str, &str), rows: &[Row]) -> String {
    let mut out = format!("| {} | {} |\n| --- | --- |\n", headings.0, headings.1);
    for (name, text) in rows {
        out.push_str(&format!("| `{name}` | {text} |\n"));
    }
    out
}

/// A roff section of `.TP` paragraphs.
fn section(title: &str, intro: &str, rows: &[Row]) -> String {
    let mut out = format!(".SH \"{title}\"\n");
    if !intro.is_empty() {
        out.push_str(&format!("{}\n", roff(intro)));
    }
    for (name, text) in rows {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(name), roff(text)));
    }
    out
}

/// Backticks to bold, and the characters roff would take for its own escaped.
fn roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut bold = false;
    for c in text.chars() {
        match c {
            '`' => {
                out.push_str(if bold { "\\fR" } else { "\\fB" });
                bold = !bold;
            }
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    if out.starts_with(['.', '\'']) {
        out.insert_str(0, "\\&");
    }
    out
}

/// The whole page: clap's NAME, SYNOPSIS, DESCRIPTION and OPTIONS, then the sections above.
pub fn page(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).section("8").render(&mut page)?;
    let mut text = section(
        "CONFIGURATION",
        "One YAML main file plus included files; paths are relative to the main file's \
         directory. Saving a file applies it: validated, diffed, applied at the narrowest \
         scope, recorded as a version (see ctl(1) for reload, history, diff and rollback).",
        CONFIG_KEYS,
    );
    text.push_str(&config::fields::man_section());
    text.push_str(&section("EXIT STATUS", "", EXIT_STATUS));
    text.push_str(&section("SIGNALS", "", SIGNALS));
    text.push_str(&section("ENVIRONMENT", "", ENVIRONMENT));
    text.push_str(&section("FILES", "", FILES));
    text.push_str(".SH \"SEE ALSO\"\n\\fBctl\\fR(1), \\fBsystemd.service\\fR(5)\n");
    page.extend_from_slice(text.as_bytes());
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_escapes_and_bolds() {
        assert_eq!(roff("`ctl reload` -x"), "\\fBctl reload\\fR \\-x");
        assert_eq!(roff(".dot"), "\\&.dot");
        assert_eq!(roff("a\\b"), "a\\eb");
    }

    #[test]
    fn markdown_rows_quote_the_name() {
        assert_eq!(
            markdown(("a", "b"), &[("x", "y `z`")]),
            "| a | b |\n| --- | --- |\n| `x` | y `z` |\n"
        );
    }
}

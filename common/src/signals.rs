//! Signal names and numbers, for the whole project: `stop_signal` in the config, the
//! runner's exit messages and `ctl`'s output all name signals through here. The table is
//! nix's (the platform's numbers, `SIG` names); [`StopSignal`](crate::config::StopSignal)
//! is the subset a script may be stopped with.

use nix::sys::signal::Signal;

/// `SIGTERM` for 15; `None` for a number that is no signal on this platform.
pub fn name(number: i32) -> Option<&'static str> {
    Signal::try_from(number).ok().map(Signal::as_str)
}

/// The signal `text` names: `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse(text: &str) -> Option<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        return bare
            .parse::<i32>()
            .ok()
            .and_then(|n| Signal::try_from(n).ok());
    }
    Signal::iterator().find(|s| s.as_str().strip_prefix("SIG") == Some(bare))
}

/// How an exit by signal `number` is shown: `SIGTERM`, or `unknown` followed by the bare
/// number for a number that is no signal here.
pub fn describe(number: i32, unknown: &str) -> String {
    name(number).map_or_else(|| format!("{unknown}{number}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(name(15), Some("SIGTERM"));
        assert_eq!(name(9), Some("SIGKILL"));
        assert_eq!(name(0), None);
        assert_eq!(name(1000), None);
        for text in ["TERM", "SIGTERM", "term", "sigterm", " 15 "] {
            assert_eq!(parse(text), Some(Signal::SIGTERM), "{text}");
        }
        assert_eq!(parse("NOPE"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse(""), None);
        assert_eq!(describe(11, "signal "), "SIGSEGV");
        assert_eq!(describe(99, "signal "), "signal 99");
        assert_eq!(describe(99, ""), "99");
    }

    #[test]
    fn every_signal_round_trips() {
        for s in Signal::iterator() {
            assert_eq!(name(s as i32), Some(s.as_str()));
            assert_eq!(parse(s.as_str()), Some(s));
            assert_eq!(parse(&(s as i32).to_string()), Some(s));
        }
    }
}

//! Which events one `Events` follower asked for: script names or globs, script event kinds,
//! reload events. Applied in the daemon, so a follower of one script is not sent the whole
//! bus. Pure.

use scriptd_common::proto::{self, event::Kind, ScriptEventKind};

/// A request's filter that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// A script pattern is not a valid glob.
    #[error("bad script glob {pattern:?}: {reason}")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A kind value the daemon does not know.
    #[error("unknown script event kind {0} (this daemon knows 1 to {max})", max = max_kind())]
    Kind(i32),
}

/// The events a follower wants (see `EventsRequest`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Names or globs; empty: every script.
    scripts: Vec<glob::Pattern>,
    /// Script event kinds; empty: every kind (unless `reload` alone is set).
    kinds: Vec<ScriptEventKind>,
    /// Reload events asked for by kind.
    reload: bool,
}

/// The highest script event kind this daemon knows.
fn max_kind() -> i32 {
    (1..)
        .take_while(|k| ScriptEventKind::try_from(*k).is_ok())
        .last()
        .unwrap_or(0)
}

impl Filter {
    /// The filter of a request.
    pub fn from_request(r: &proto::EventsRequest) -> Result<Self, FilterError> {
        let scripts = r
            .scripts
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| FilterError::Glob {
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let kinds = r
            .kinds
            .iter()
            .map(|&k| {
                ScriptEventKind::try_from(k)
                    .ok()
                    .filter(|k| *k != ScriptEventKind::Unspecified)
                    .ok_or(FilterError::Kind(k))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scripts,
            kinds,
            reload: r.reload,
        })
    }

    /// Whether `e` goes to this follower; `missed` markers always do.
    pub fn matches(&self, e: &proto::Event) -> bool {
        let by_kind = !self.kinds.is_empty() || self.reload;
        match &e.kind {
            Some(Kind::Reload(_)) => {
                if by_kind {
                    self.reload
                } else {
                    self.scripts.is_empty()
                }
            }
            Some(Kind::Script(s)) => {
                let kind = ScriptEventKind::try_from(s.kind).unwrap_or_default();
                (!by_kind || self.kinds.contains(&kind))
                    && (self.scripts.is_empty()
                        || self.scripts.iter().any(|p| p.matches(&s.script)))
            }
            Some(Kind::Missed(_)) | None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(name: &str, kind: ScriptEventKind) -> proto::Event {
        proto::Event {
            kind: Some(Kind::Script(proto::ScriptEvent {
                script: name.into(),
                kind: kind as i32,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn reload() -> proto::Event {
        proto::Event {
            kind: Some(Kind::Reload(proto::ReloadEvent::default())),
            ..Default::default()
        }
    }

    fn missed() -> proto::Event {
        proto::Event {
            kind: Some(Kind::Missed(3)),
            ..Default::default()
        }
    }

    fn filter(scripts: &[&str], kinds: &[ScriptEventKind], reload: bool) -> Filter {
        Filter::from_request(&proto::EventsRequest {
            after_id: None,
            scripts: scripts.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            reload,
        })
        .expect("valid filter")
    }

    #[test]
    fn what_each_filter_lets_through() {
        use ScriptEventKind::{Exited, Started};
        let events = [
            ("web-1 started", script("web-1", Started)),
            ("web-1 exited", script("web-1", Exited)),
            ("db exited", script("db", Exited)),
            ("reload", reload()),
            ("missed", missed()),
        ];
        let table: [(Filter, &[&str]); 7] = [
            (
                filter(&[], &[], false),
                &[
                    "web-1 started",
                    "web-1 exited",
                    "db exited",
                    "reload",
                    "missed",
                ],
            ),
            (
                filter(&["web-*"], &[], false),
                &["web-1 started", "web-1 exited", "missed"],
            ),
            (filter(&["db"], &[], false), &["db exited", "missed"]),
            (
                filter(&[], &[Exited], false),
                &["web-1 exited", "db exited", "missed"],
            ),
            (filter(&[], &[], true), &["reload", "missed"]),
            (
                filter(&["web-1"], &[Exited], true),
                &["web-1 exited", "reload", "missed"],
            ),
            (filter(&["web"], &[], false), &["missed"]),
        ];
        for (f, want) in table {
            let got: Vec<&str> = events
                .iter()
                .filter(|(_, e)| f.matches(e))
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(got, want, "{f:?}");
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let bad_glob = Filter::from_request(&proto::EventsRequest {
            scripts: vec!["web-[".into()],
            ..Default::default()
        });
        assert!(
            matches!(bad_glob, Err(FilterError::Glob { ref pattern, .. }) if pattern == "web-["),
            "{bad_glob:?}"
        );
        for k in [0, 99] {
            let bad_kind = Filter::from_request(&proto::EventsRequest {
                kinds: vec![k],
                ..Default::default()
            });
            assert_eq!(bad_kind.err(), Some(FilterError::Kind(k)));
        }
        assert!(max_kind() >= ScriptEventKind::Stopped as i32);
    }
}

//! Where a resuming follower (`EventsRequest.after_id`) starts in the kept events, and what
//! its `missed` marker says. Pure.
//!
//! Ids: a daemon process numbers its events `base + 1, base + 2, …` where `base` is its start
//! time in microseconds, so the ids of an earlier process are all below `base` (unless the
//! clock went back, or that process published more than a thousand events per millisecond
//! over its whole life). The kept events are always the newest ones, with consecutive ids.

/// What the daemon's kept events look like at the moment a follower joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Ids of this process start after this.
    pub base: u64,
    /// Id of the oldest kept event; `None` when none was published yet.
    pub oldest: Option<u64>,
    /// Id of the newest published event (`base` when none was).
    pub newest: u64,
}

/// How a resuming follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Replay the kept events with an id above this.
    pub after: u64,
    /// Events of this process after the asked id that are no longer kept.
    pub missed: u64,
    /// The asked id is of an earlier daemon process: its later events are gone, uncounted.
    pub earlier_daemon: bool,
}

impl Resume {
    /// Whether the follower gets a `missed` marker before the replay.
    pub fn marker(&self) -> bool {
        self.missed > 0 || self.earlier_daemon
    }
}

/// An id this daemon has not published yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no event {asked} yet: the newest event id is {newest} (see `ctl events --output json`)")]
pub struct NotYet {
    /// The id asked for.
    pub asked: u64,
    /// The newest id published.
    pub newest: u64,
}

/// Where a follower resuming after `after_id` starts. `0` asks for every kept event of this
/// process, without the earlier-daemon flag.
pub fn resume(after_id: u64, kept: Kept) -> Result<Resume, NotYet> {
    if after_id > kept.newest {
        return Err(NotYet {
            asked: after_id,
            newest: kept.newest,
        });
    }
    let earlier_daemon = after_id != 0 && after_id < kept.base;
    // The first id this follower wants; everything from it to the oldest kept one is lost.
    let wanted = after_id.max(kept.base) + 1;
    let oldest = kept.oldest.unwrap_or(kept.newest + 1);
    Ok(Resume {
        after: after_id.max(kept.base),
        missed: oldest.saturating_sub(wanted),
        earlier_daemon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: u64 = 1_000_000;

    fn kept(oldest: u64, newest: u64) -> Kept {
        Kept {
            base: BASE,
            oldest: Some(BASE + oldest),
            newest: BASE + newest,
        }
    }

    #[test]
    fn resume_points() {
        let none_yet = Kept {
            base: BASE,
            oldest: None,
            newest: BASE,
        };
        let ok = |after, missed, earlier_daemon| {
            Ok(Resume {
                after,
                missed,
                earlier_daemon,
            })
        };
        let table = [
            // Everything since the start is kept.
            (BASE + 3, kept(1, 10), ok(BASE + 3, 0, false)),
            (BASE + 10, kept(1, 10), ok(BASE + 10, 0, false)),
            (0, kept(1, 10), ok(BASE, 0, false)),
            // The oldest are gone: the ones between the asked id and the oldest kept.
            (BASE + 3, kept(8, 10), ok(BASE + 3, 4, false)),
            (BASE + 7, kept(8, 10), ok(BASE + 7, 0, false)),
            (0, kept(8, 10), ok(BASE, 7, false)),
            // An earlier process's id: everything kept, and the flag.
            (BASE - 5, kept(1, 10), ok(BASE, 0, true)),
            (BASE - 5, kept(8, 10), ok(BASE, 7, true)),
            (BASE, kept(1, 10), ok(BASE, 0, false)),
            (17, none_yet, ok(BASE, 0, true)),
            (0, none_yet, ok(BASE, 0, false)),
            // Not reached yet.
            (
                BASE + 11,
                kept(1, 10),
                Err(NotYet {
                    asked: BASE + 11,
                    newest: BASE + 10,
                }),
            ),
            (
                BASE + 1,
                none_yet,
                Err(NotYet {
                    asked: BASE + 1,
                    newest: BASE,
                }),
            ),
        ];
        for (after_id, kept, want) in table {
            assert_eq!(
                resume(after_id, kept),
                want,
                "after {after_id} with {kept:?}"
            );
        }
    }

    proptest! {
        /// The replayed ids and the missed ones are exactly the ids of this process after
        /// the asked one: nothing lost uncounted, nothing twice.
        #[test]
        fn missed_plus_replayed_is_every_later_id(
            oldest in 1u64..100, len in 0u64..100, asked in 0u64..300,
        ) {
            let newest = oldest + len;
            let k = kept(oldest, newest);
            let after_id = BASE - 100 + asked;
            if let Ok(r) = resume(after_id, k) {
                let replayed = (BASE + oldest..=BASE + newest).filter(|id| *id > r.after).count() as u64;
                let first = after_id.max(BASE) + 1;
                let later = (BASE + newest + 1).saturating_sub(first);
                prop_assert_eq!(r.missed + replayed, later);
            } else {
                prop_assert!(after_id > BASE + newest);
            }
        }
    }
}

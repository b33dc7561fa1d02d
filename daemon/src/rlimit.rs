//! The descriptor limit (`RLIMIT_NOFILE`). Its soft limit is raised to the hard one at
//! startup: the hard limit is what whoever started the daemon allows (systemd's
//! `LimitNOFILE=`, `ulimit -Hn`), and the soft one (often 1,024) is too low for a daemon
//! that holds descriptors per running script and per connection. Scripts get back the soft
//! limit the daemon was started with (the shim sets it before it starts the script), as
//! systemd gives its services a soft limit of 1,024: a program that uses `select()` breaks
//! on a descriptor numbered 1,024 or more.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Soft and hard descriptor limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    /// What the process may open now.
    pub soft: u64,
    /// The most the soft limit may be raised to.
    pub hard: u64,
}

/// Raises the soft descriptor limit to the hard one; returns the limits before and after.
pub fn raise_nofile() -> Result<(Nofile, Nofile), nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let before = Nofile { soft, hard };
    if soft >= hard {
        return Ok((before, before));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok((before, Nofile { soft, hard }))
}

/// The soft descriptor limits after [`raise_nofile_logged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftNofile {
    /// The daemon's own, in force now.
    pub daemon: u64,
    /// The one the daemon was started with, which scripts get back; `None` when it could not
    /// be read (scripts then inherit the daemon's).
    pub scripts: Option<u64>,
}

/// [`raise_nofile`], logged: both limits, or why the soft one could not be raised.
pub fn raise_nofile_logged() -> SoftNofile {
    match raise_nofile() {
        Ok((before, after)) if before.soft < after.soft => {
            tracing::info!(
                "descriptor limit (RLIMIT_NOFILE): soft {} raised to the hard limit {} (scripts \
                 get soft {})",
                before.soft,
                after.hard,
                before.soft
            );
            SoftNofile {
                daemon: after.soft,
                scripts: Some(before.soft),
            }
        }
        Ok((before, after)) => {
            tracing::info!(
                "descriptor limit (RLIMIT_NOFILE): soft {}, hard {}",
                after.soft,
                after.hard
            );
            SoftNofile {
                daemon: after.soft,
                scripts: Some(before.soft),
            }
        }
        Err(e) => {
            let soft = getrlimit(Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft);
            tracing::warn!(
                "cannot raise the descriptor limit (RLIMIT_NOFILE) to its hard limit: {e}; it \
                 stays at {}",
                soft.map_or_else(|| "what it is".to_owned(), |s| s.to_string())
            );
            SoftNofile {
                daemon: soft.unwrap_or(0),
                scripts: soft,
            }
        }
    }
}

//! The descriptor limit (`RLIMIT_NOFILE`). Its soft limit is raised to the hard one at
//! startup: the hard limit is what whoever started the daemon allows (systemd's
//! `LimitNOFILE=`, `ulimit -Hn`), and the soft one (often 1,024) is too low for a daemon
//! that holds descriptors per running script and per connection.

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

/// [`raise_nofile`], logged: both limits, or why the soft one could not be raised. Returns
/// the soft limit in force.
pub fn raise_nofile_logged() -> u64 {
    match raise_nofile() {
        Ok((before, after)) if before.soft < after.soft => {
            tracing::info!(
                "descriptor limit (RLIMIT_NOFILE): soft {} raised to the hard limit {}",
                before.soft,
                after.hard
            );
            after.soft
        }
        Ok((_, after)) => {
            tracing::info!(
                "descriptor limit (RLIMIT_NOFILE): soft {}, hard {}",
                after.soft,
                after.hard
            );
            after.soft
        }
        Err(e) => {
            let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
            tracing::warn!(
                "cannot raise the descriptor limit (RLIMIT_NOFILE) to its hard limit: {e}; it \
                 stays at {soft}"
            );
            soft
        }
    }
}

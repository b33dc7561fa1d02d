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

//! How much of the machine one config may use: limits far above any real deployment, low
//! enough that a hostile or mistaken config (deep nesting, an include glob over `/usr`, a
//! FIFO or `/proc/kmsg`) is refused quickly with an error naming the limit, instead of
//! hanging `scriptd --check` or a reload.

use std::time::Duration;

/// Deepest nesting of mappings and sequences in one file (a scriptd config needs 5).
/// Checked before the full parse, whose cost grows with the square of the depth.
pub const MAX_DEPTH: usize = 64;

/// Largest config file (main or included), in bytes: 1 MiB.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Largest config (all files together), in bytes: 16 MiB.
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;

/// Most files the include globs of one config may match.
pub const MAX_INCLUDE_MATCHES: usize = 1_000;

/// Most directory entries the include globs of one config may look at.
pub const MAX_WALK_ENTRIES: usize = 100_000;

/// Longest time the walk of the include globs of one config may take.
pub const MAX_WALK_TIME: Duration = Duration::from_secs(5);

/// The bounds of the include walk; [`INCLUDE_LIMITS`] everywhere but in tests of the limits
/// themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncludeLimits {
    /// [`MAX_INCLUDE_MATCHES`]
    pub matches: usize,
    /// [`MAX_WALK_ENTRIES`]
    pub entries: usize,
    /// [`MAX_WALK_TIME`]
    pub time: Duration,
}

/// The limits the daemon and `scriptd --check` use.
pub const INCLUDE_LIMITS: IncludeLimits = IncludeLimits {
    matches: MAX_INCLUDE_MATCHES,
    entries: MAX_WALK_ENTRIES,
    time: MAX_WALK_TIME,
};

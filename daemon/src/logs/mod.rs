//! The log pipeline of one script: every line of every run goes, in order, to the script's
//! log file (rotated by size), to an in-memory ring of `max_log_lines`, and to live
//! followers.
//!
//! Readers take big chunks from the pipe, stamp one time per chunk, split lines and hand the
//! whole batch over under one lock with one write to the file, so the cost per line is a
//! copy and a format.
//!
//! Followers do not have queues or tasks of their own: each keeps a cursor (the next sequence number
//! it wants) into the sink's line buffer and copies batches out of it under the lock. The
//! buffer holds the ring (`max_log_lines`) and, while someone follows, at least
//! [`FOLLOW_WINDOW`] lines; it never holds more than [`MEM_BYTES`]. A follower whose cursor
//! fell off the front of the buffer reads the lines it missed from the log files (opened
//! under the lock, so a rotation changes nothing) and goes on; only lines gone from the files
//! too are replaced by one marker saying how many were skipped. So a slow follower never
//! slows the script or the file and costs no memory of its own, and a fast one loses nothing
//! while the files hold the lines. Because sequence numbers are gapless, the backlog a
//! reader gets and the live lines after it meet exactly (no gap, no repeat), and a skip
//! count is exact.
//!
//! Where each part lives:
//!
//! | file | what |
//! | --- | --- |
//! | `record.rs` | a line's fields, blocks of lines, the file record format and its parser |
//! | `split.rs` | cutting a byte stream into lines (pure) |
//! | `ingest.rs` | reading a run's pipes into the sink |
//! | `counters.rs` | lines, bytes, skipped lines and failed writes counted for the metrics |
//! | `ring.rs` | the newest lines in memory, gapless by sequence number |
//! | `sink.rs` | [`LogSink`]: one script's log state, its lock and what readers take from it |
//! | `paths.rs` | where the log files are; opening them without following symlinks |
//! | `file.rs` | the log file: writes, rotation, when a descriptor is held |
//! | `write_failures.rs` | how failed writes are reported (once, then a count per minute) |
//! | `backlog.rs` | reading lines back from the log files |
//! | `follow.rs` | serving one `Logs` request: backlog, then live lines |

mod backlog;
mod counters;
mod file;
mod follow;
mod ingest;
mod paths;
mod record;
mod ring;
mod sink;
mod split;
mod write_failures;

pub use counters::{LogCounters, LogCounts};
pub use follow::{stream, Lines, Query, RunEnd};
pub use ingest::{pump, PipeEnd};
pub use paths::log_path;
pub use record::{skipped_marker, Block, Stream};
pub use sink::LogSink;

/// Lines kept in memory while at least one follower is attached, even when `max_log_lines`
/// is smaller: how far a follower may fall behind before it gets a skip marker.
pub const FOLLOW_WINDOW: usize = 32 * 1024;

/// Memory cap of one script's line buffer (text plus per-line overhead). Lines pushed out by
/// it are still in the file: backlog requests read them from there.
pub const MEM_BYTES: usize = 4 << 20;

/// Of [`MEM_BYTES`], what pieces of over-long lines may take: a line of 50 MiB without a
/// newline passes through memory in pieces of `log.max_line_bytes` and leaves at most this
/// much of itself there (and pushes out the lines before it). The rest is in the file.
pub const PIECE_BYTES: usize = 256 << 10;

/// At most this many lines, or about this many bytes, are taken per batch by a reader. A
/// follower has one live batch on its way (up to five while it reads the files: its channel
/// and the one being filled), so the bytes bound what pieces of a long line cost per
/// follower.
const BATCH_LINES: usize = 1024;
const BATCH_BYTES: usize = 256 << 10;

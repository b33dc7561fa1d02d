//! scriptd's pure core: the config model, its validation, the diff and impact
//! classification of a reload, and the generated gRPC types shared by `scriptd` and `ctl`.
//!
//! Nothing here does I/O beyond reading config files and checking that the programs and
//! directories they name exist.

pub mod config;
pub mod diff;
pub mod plan_id;
pub mod schedule;
pub mod signals;
pub mod status;
pub mod units;

/// Generated gRPC code for `scriptd.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("scriptd.v1");

    /// Encoded file descriptor set of `scriptd.v1`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/scriptd_descriptor.bin"));
}

/// Version of the scriptd crates, reported by `Status` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Schema version carried by every JSON document `ctl` prints.
pub const JSON_SCHEMA: u32 = 1;

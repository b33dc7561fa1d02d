//! Tests of the config model through the library's public API: `daemon.access` and the
//! permission checks, diff and impact classification, validation. One test binary with a
//! module per concern (one link instead of one per file).

mod access;
mod diff;
mod etcd;
mod fields;
mod hostile;
mod include_scan;
mod validation;

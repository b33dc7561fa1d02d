//! Tests of the config model through the library's public API: `daemon.access` and the
//! permission checks, diff and impact classification, validation. One test binary with a
//! module per concern (one link instead of one per file).

mod access;
mod cached;
mod calendar;
mod diff;
mod etcd;
mod exec_context;
mod fields;
mod health;
mod hostile;
mod include_scan;
mod support;
mod validation;

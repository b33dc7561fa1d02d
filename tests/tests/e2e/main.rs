//! The end-to-end suite: the real `scriptd` started on a temp dir, driven by the real `ctl`.
//! One test binary with a module per concern (one link instead of one per file); shared
//! set-up lives in the `scriptd_e2e` library (`tests/src/lib.rs`).
mod access;
mod automation;
mod candidate;
mod completion;
mod connections;
mod descriptors;
mod etcd;
mod events_filter;
mod fleet;
mod full_state_dir;
mod health;
mod history;
mod hostile;
mod log_safety;
mod logs;
mod logs_many;
mod long_lines;
mod metrics;
mod output;
mod python_grpc;
mod reload;
mod schedule;
mod script_limits;
mod stall;
mod state_dir;
mod supervisor;
mod targets;
mod user;

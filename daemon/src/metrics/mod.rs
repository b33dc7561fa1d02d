//! Prometheus metrics: `GET /metrics` on `daemon.metrics` (off by default).
//!
//! Most of what a scrape shows is read at scrape time from state the daemon keeps anyway
//! (the runners' status snapshots, the coordinator's published version and disk state, the
//! log sinks' counters, `/proc`); only what happens at an event and is kept nowhere else is
//! counted where it happens, through the few handles defined here.
//!
//! | file | what lives there |
//! | --- | --- |
//! | `mod.rs` | [`Metrics`]: the daemon-wide event counters (reload attempts and durations) |
//! | `runs.rs` | [`RunCounters`]: one script's runs ended by result and their durations |
//! | `resources.rs` | [`Sampler`]: each running script's process group and the daemon from `/proc`, at most once a second, off the runtime |
//! | `collect.rs` | one scrape: what is read and how it is encoded (names, help, labels) |
//! | `http.rs` | the HTTP server (hyper, one route) |

mod collect;
mod http;
mod resources;
mod runs;

pub use collect::{Scrape, ScriptRow, Sources};
pub use http::serve;
pub use resources::{cpu_percent, CpuMark, Sample, Sampler, Usage};
pub use runs::{RunCounters, RunResult};

use crate::history::{ResultKind, Source};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Bucket bounds (seconds) of the reload duration histogram: a save is applied in
/// milliseconds, a slow validation takes seconds.
const RELOAD_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Labels of a reload attempt: its result and what triggered it.
type AttemptLabels = [(&'static str, &'static str); 2];

/// The daemon-wide counters that only an event can feed. Cheap to clone (every metric is
/// shared).
#[derive(Clone)]
pub struct Metrics {
    reload_attempts: Family<AttemptLabels, Counter>,
    reload_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reload_attempts: Family::default(),
            reload_duration: Histogram::new(RELOAD_BUCKETS),
        }
    }
}

impl Metrics {
    /// A reload attempt (not a dry run) ended with `result`; `took` is from the save (the
    /// watcher's first event) or the request to the result.
    pub fn reload_ended(&self, source: Source, result: ResultKind, took: Duration) {
        self.reload_attempts
            .get_or_create(&[("result", result.as_str()), ("source", source.as_str())])
            .inc();
        if result == ResultKind::Applied {
            self.reload_duration.observe(took.as_secs_f64());
        }
    }

    /// Registers the counters in `registry` (a scrape's).
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "scriptd_reload_attempts",
            "Reload attempts (dry runs not counted) by result and by what triggered them",
            self.reload_attempts.clone(),
        );
        registry.register(
            "scriptd_reload_duration_seconds",
            "Time from a save (the watcher's first event) or a reload request to the new \
             version running, for applied reloads",
            self.reload_duration.clone(),
        );
    }
}

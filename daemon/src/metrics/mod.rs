//! Prometheus metrics: `GET /metrics` on `daemon.metrics` (off by default).
//!
//! Most of what a scrape shows is read at scrape time from state the daemon keeps anyway
//! (the runners' status snapshots, the coordinator's published version and disk state, the
//! log sinks' counters, `/proc`); only what happens at an event and is kept nowhere else is
//! counted where it happens, through the few handles defined here.
//!
//! | file | what lives there |
//! | --- | --- |
//! | `mod.rs` | [`Metrics`]: the daemon-wide event counters (reload attempts, durations and step times, control calls) and the sampler |
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

use crate::history::{ActionResult, ResultKind, Source};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use scriptd_common::proto::ControlAction;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

/// Bucket bounds (seconds) of the reload duration histogram: a save is applied in
/// milliseconds, a slow validation takes seconds.
const RELOAD_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Labels of a reload attempt: its result and what triggered it.
type AttemptLabels = [(&'static str, &'static str); 2];

/// The daemon's observability handle: the counters only an event can feed, and the `/proc`
/// sampler. Cheap to clone (every metric is shared).
#[derive(Clone)]
pub struct Metrics {
    reload_attempts: Family<AttemptLabels, Counter>,
    reload_duration: Histogram,
    reload_steps: Family<[(&'static str, &'static str); 1], Counter<f64, AtomicU64>>,
    control_actions: Family<AttemptLabels, Counter>,
    /// Per-script resources from `/proc`, sampled at most once a second.
    pub sampler: Arc<Sampler>,
    /// The length of the last exposition: the next one's buffer starts that large instead
    /// of doubling its way up to megabytes (1,000 scripts: ~2.5 MB).
    last_exposition: Arc<AtomicUsize>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reload_attempts: Family::default(),
            reload_duration: Histogram::new(RELOAD_BUCKETS),
            reload_steps: Family::default(),
            control_actions: Family::default(),
            sampler: Arc::default(),
            last_exposition: Arc::default(),
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

    /// The steps of a reload attempt took these times (read, validate, plan, apply, record,
    /// check disk, publish).
    pub fn reload_steps(&self, steps: &[(&'static str, Duration)]) {
        for (step, took) in steps {
            self.reload_steps
                .get_or_create(&[("step", step)])
                .inc_by(took.as_secs_f64());
        }
    }

    /// A control call (`ctl start|stop|restart|run`) ended with `result`; `action` is `None`
    /// for a request without a valid action.
    pub fn control_ended(&self, action: Option<ControlAction>, result: ActionResult) {
        let action = match action {
            Some(ControlAction::Start) => "start",
            Some(ControlAction::Stop) => "stop",
            Some(ControlAction::Restart) => "restart",
            Some(ControlAction::Run) => "run",
            Some(ControlAction::Unspecified) | None => "invalid",
        };
        self.control_actions
            .get_or_create(&[("action", action), ("result", result.as_str())])
            .inc();
    }

    /// Registers the counters in `registry` (a scrape's). A family with no series yet (no
    /// reload attempted, no control call) is left out of the exposition by prometheus-client.
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
        registry.register(
            "scriptd_reload_step_seconds",
            "Time spent in each step of reload attempts (read, validate, plan, apply, record, \
             check disk, publish), summed over the attempts",
            self.reload_steps.clone(),
        );
        registry.register(
            "scriptd_control_actions",
            "ctl start, stop, restart and run calls by action and result (ok, not-found, \
             refused, failed, invalid, error)",
            self.control_actions.clone(),
        );
    }
}

//! One scrape: what is read (each script's published status, its log and run counters, its
//! process group's use of resources, the running version, the disk state, the daemon) and
//! how it is encoded. Everything is read first, then encoded off the runtime.
//!
//! Health probes (state and the last result) come from the published status too.

use super::resources::{Sample, Usage};
use super::runs::{RunCounters, RunResult};
use super::Metrics;
use crate::events::EventBus;
use crate::history::History;
use crate::logs::{LogCounts, Stream};
use crate::reload::disk::{DiskState, DiskSync};
use crate::reload::Snapshot;
use crate::socket::Clients;
use crate::watcher::Health as WatcherHealth;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric, MetricEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use scriptd_common::proto::{HealthState, ScriptState, ScriptStatus};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Every state a script can be in, with its label value.
const STATES: [(ScriptState, &str); 8] = [
    (ScriptState::Running, "running"),
    (ScriptState::Waiting, "waiting"),
    (ScriptState::Idle, "idle"),
    (ScriptState::Disabled, "disabled"),
    (ScriptState::BackingOff, "backing-off"),
    (ScriptState::Failed, "failed"),
    (ScriptState::Stopped, "stopped"),
    (ScriptState::Unhealthy, "unhealthy"),
];

/// Every verdict of a health probe, with its label value.
const HEALTH: [(HealthState, &str); 3] = [
    (HealthState::Unknown, "unknown"),
    (HealthState::Healthy, "healthy"),
    (HealthState::Unhealthy, "unhealthy"),
];

/// What a scrape shows of one script.
#[derive(Debug)]
pub struct ScriptRow {
    /// Its status as the runner last published it.
    pub status: ScriptStatus,
    /// Its log's counters.
    pub logs: LogCounts,
    /// Followers of its log now.
    pub followers: usize,
    /// Its ended runs.
    pub runs: Arc<RunCounters>,
}

/// Everything one scrape shows, read at once.
#[derive(Debug)]
pub struct Scrape {
    /// Per script, sorted by name.
    pub scripts: Vec<ScriptRow>,
    /// Running config version.
    pub version: u64,
    /// Whether the files on disk hash the same as the running version.
    pub in_sync: bool,
    /// `ctl events` followers now.
    pub event_followers: usize,
    /// Records the history could not write so far.
    pub history_write_failures: u64,
    /// gRPC connections open now.
    pub clients: usize,
    /// The file watcher's events, overflows, errors and last event (Unix ms); `None` when
    /// it does not run.
    pub watcher: Option<[i64; 4]>,
    /// Process groups and the daemon.
    pub sample: Arc<Sample>,
}

/// What a scrape (and `Status` with resources) reads from: the daemon's published state,
/// the sampler and the event counters. Cheap to clone.
#[derive(Clone)]
pub struct Sources {
    /// The coordinator's published state (version, handles).
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// How the files on disk relate to the running version.
    pub disk: Arc<DiskSync>,
    /// The event bus (its followers are counted).
    pub events: EventBus,
    /// The event counters and the `/proc` sampler.
    pub metrics: Metrics,
    /// The history (its write failures are counted).
    pub history: History,
    /// The gRPC connections open now.
    pub clients: Clients,
    /// What the file watcher has seen; `None` when it does not run.
    pub watcher: Option<Arc<WatcherHealth>>,
}

impl Sources {
    /// Reads everything a scrape shows (the `/proc` sample at most once a second).
    pub async fn scrape(&self) -> Scrape {
        let snap = self.snapshot.borrow().clone();
        let scripts: Vec<ScriptRow> = snap
            .handles
            .values()
            .map(|h| ScriptRow {
                status: h.status.borrow().clone(),
                logs: h.logs.counts(),
                followers: h.logs.followers(),
                runs: h.runs.clone(),
            })
            .collect();
        let groups = scripts
            .iter()
            .map(|r| r.status.pid)
            .filter(|p| *p != 0)
            .collect();
        let sample = self.metrics.sampler.sample(groups).await;
        let in_sync = self.disk.state(&snap.hash).await == DiskState::InSync;
        Scrape {
            scripts,
            version: snap.version,
            in_sync,
            event_followers: self.events.followers(),
            history_write_failures: self.history.write_failures(),
            clients: self.clients.now(),
            watcher: self.watcher.as_ref().map(|w| {
                let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
                [
                    get(&w.events),
                    get(&w.rescans),
                    get(&w.errors),
                    w.last_event_ms.load(Ordering::Relaxed),
                ]
            }),
            sample,
        }
    }
}

impl Scrape {
    /// The exposition: the OpenMetrics text format when `openmetrics`, else the Prometheus
    /// text format 0.0.4. Pure CPU work on data already read: call it off the runtime.
    pub fn encode(self, metrics: &Metrics, openmetrics: bool) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(metrics.last_exposition.load(Ordering::Relaxed) + 4096);
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        }
        metrics.last_exposition.store(out.len(), Ordering::Relaxed);
        Ok(out)
    }

    /// The usage of `s`'s process group, when it runs and was sampled.
    fn usage(&self, s: &ScriptStatus) -> Option<Usage> {
        (s.pid != 0)
            .then(|| self.sample.groups.get(&s.pid).copied())
            .flatten()
    }

    fn encode_scripts(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let rows = &self.scripts;
        let mut m = enc.encode_descriptor(
            "scriptd_script_state",
            "1 for the state the script is in, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for r in rows {
            for (state, label) in STATES {
                let v = i64::from(r.status.state == state as i32);
                m.encode_family(&[("script", r.status.name.as_str()), ("state", label)])?
                    .encode_gauge(&v)?;
            }
        }
        let probed = || {
            rows.iter()
                .filter_map(|r| Some((r, r.status.health.as_ref()?)))
        };
        let mut m = enc.encode_descriptor(
            "scriptd_script_health_state",
            "Services with a health probe: 1 for its verdict (unknown, healthy, unhealthy), 0 \
             for the others",
            None,
            MetricType::Gauge,
        )?;
        for (r, h) in probed() {
            for (state, label) in HEALTH {
                let v = i64::from(h.state == state as i32);
                m.encode_family(&[("script", r.status.name.as_str()), ("state", label)])?
                    .encode_gauge(&v)?;
            }
        }
        gauges(
            enc,
            "scriptd_script_health_last_probe_ok",
            "1 when the last health probe of the current run succeeded, 0 when it failed \
             (absent before the first)",
            probed().filter_map(|(r, h)| Some((r, i64::from(h.last_ok?)))),
        )?;
        gauges(
            enc,
            "scriptd_script_health_consecutive_failures",
            "Failed health probes in a row that count towards `health.failures`",
            probed().map(|(r, h)| (r, i64::from(h.consecutive_failures))),
        )?;
        gauges(
            enc,
            "scriptd_script_health_last_probe_timestamp_seconds",
            "When the last health probe ended (Unix time)",
            probed()
                .filter(|(_, h)| h.last_probe_ms > 0)
                .map(|(r, h)| (r, h.last_probe_ms as f64 / 1000.0)),
        )?;
        gauges(enc, "scriptd_script_up", "1 when the script is up as `ctl status --check` says (running, waiting, or idle after a run that succeeded), else 0", rows.iter().map(|r| (r, i64::from(r.status.is_up()))))?;
        counters(
            enc,
            "scriptd_script_runs_started",
            "Runs started since the daemon started",
            rows.iter().map(|r| (r, r.status.run_count)),
        )?;
        let mut m = enc.encode_descriptor(
            "scriptd_script_runs_ended",
            "Runs ended since the daemon started, by result: ok (exit 0), failed (another \
             exit code, or the run could not start), killed (a signal), timed-out",
            None,
            MetricType::Counter,
        )?;
        for r in rows {
            for result in RunResult::ALL {
                counter(
                    m.encode_family(&[
                        ("script", r.status.name.as_str()),
                        ("result", result.as_str()),
                    ])?,
                    r.runs.count(result),
                )?;
            }
        }
        gauges(
            enc,
            "scriptd_script_last_exit_code",
            "Exit code of the last run that exited with one (absent before that and after a \
             signal)",
            rows.iter().filter_map(|r| {
                let code = r.status.last_exit.and_then(|e| e.code)?;
                Some((r, i64::from(code)))
            }),
        )?;
        let mut m = enc.encode_descriptor(
            "scriptd_script_run_duration_seconds",
            "How long runs took, from start to exit",
            None,
            MetricType::Histogram,
        )?;
        for r in rows {
            r.runs
                .durations()
                .encode(m.encode_family(&[("script", r.status.name.as_str())])?)?;
        }
        gauges(
            enc,
            "scriptd_script_restarts",
            "Consecutive restarts of a service since its last stable run (restart_reset_after)",
            rows.iter().map(|r| (r, i64::from(r.status.restarts))),
        )?;
        counters(
            enc,
            "scriptd_script_skipped_ticks",
            "Periodic ticks skipped because the previous run was still going",
            rows.iter().map(|r| (r, r.status.skipped_ticks)),
        )?;
        for (name, help, of) in [
            (
                "scriptd_script_log_lines",
                "Log lines taken, by stream (out, err, sys: the daemon's own lines)",
                (|c: &LogCounts, i: usize| c.lines[i]) as fn(&LogCounts, usize) -> u64,
            ),
            (
                "scriptd_script_log_bytes",
                "Bytes of log text taken (without line ends), by stream",
                |c: &LogCounts, i: usize| c.bytes[i],
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for r in rows {
                for (i, stream) in Stream::ALL.iter().enumerate() {
                    counter(
                        m.encode_family(&[
                            ("script", r.status.name.as_str()),
                            ("stream", stream.as_str()),
                        ])?,
                        of(&r.logs, i),
                    )?;
                }
            }
        }
        counters(
            enc,
            "scriptd_script_log_lines_skipped",
            "Lines `ctl logs` readers were told were skipped (gone from memory and from the \
             files before they read them)",
            rows.iter().map(|r| (r, r.logs.skipped)),
        )?;
        counters(
            enc,
            "scriptd_script_log_write_errors",
            "Writes to the script's log file that failed (disk full, directory gone)",
            rows.iter().map(|r| (r, r.logs.write_errors)),
        )?;
        gauges(
            enc,
            "scriptd_script_log_followers",
            "`ctl logs -f` readers of the script now",
            rows.iter().map(|r| (r, r.followers as i64)),
        )?;
        let running: Vec<_> = rows
            .iter()
            .filter_map(|r| Some((r, self.usage(&r.status)?)))
            .collect();
        counters(
            enc,
            "scriptd_script_cpu_seconds",
            "CPU time (user + system) of the processes in the running script's process group \
             (starts over with each run)",
            running.iter().map(|(r, u)| (*r, u.cpu_seconds)),
        )?;
        gauges(
            enc,
            "scriptd_script_resident_memory_bytes",
            "Resident memory of the processes in the running script's process group",
            running.iter().map(|(r, u)| (*r, u.rss_bytes as i64)),
        )?;
        gauges(
            enc,
            "scriptd_script_processes",
            "Processes in the running script's process group",
            running.iter().map(|(r, u)| (*r, i64::from(u.processes))),
        )?;
        gauges(
            enc,
            "scriptd_script_open_fds",
            "Open file descriptors of the processes in the running script's process group",
            running.iter().map(|(r, u)| (*r, i64::from(u.fds))),
        )
    }

    fn encode_daemon(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            enc.encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&v)
        };
        gauge(
            enc,
            "scriptd_config_version",
            "Number of the config version running",
            self.version as i64,
        )?;
        gauge(
            enc,
            "scriptd_config_in_sync",
            "1 when the config files on disk are the running version, 0 when they changed or \
             do not validate",
            i64::from(self.in_sync),
        )?;
        gauge(
            enc,
            "scriptd_connected_clients",
            "Connections to the daemon's socket open now (ctl, grpcurl, ...)",
            self.clients as i64,
        )?;
        gauge(
            enc,
            "scriptd_event_followers",
            "`ctl events` followers now",
            self.event_followers as i64,
        )?;
        counter(
            enc.encode_descriptor(
                "scriptd_history_write_failures",
                "Records (versions, refused attempts, control actions) the history could not \
                 write",
                None,
                MetricType::Counter,
            )?,
            self.history_write_failures,
        )?;
        if let Some([events, rescans, errors, last_ms]) = self.watcher {
            for (name, help, v) in [
                (
                    "scriptd_watcher_events",
                    "File events the config watcher received (config files or not)",
                    events,
                ),
                (
                    "scriptd_watcher_rescans",
                    "Times the watcher's event queue overflowed (the config was read again)",
                    rescans,
                ),
                (
                    "scriptd_watcher_errors",
                    "Errors the watcher reported (the config was read again)",
                    errors,
                ),
            ] {
                counter(
                    enc.encode_descriptor(name, help, None, MetricType::Counter)?,
                    v as u64,
                )?;
            }
            enc.encode_descriptor(
                "scriptd_watcher_last_event_timestamp_seconds",
                "Unix time of the last file event the watcher received (0: none yet)",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(last_ms as f64 / 1000.0))?;
        }
        enc.encode_descriptor(
            "scriptd_build_info",
            "Always 1; the version label is the daemon's",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("version", scriptd_common::VERSION)])?
        .encode_gauge(&1i64)?;
        if let Some(d) = self.sample.daemon {
            counter(
                enc.encode_descriptor(
                    "process_cpu_seconds",
                    "CPU time (user + system) of the daemon",
                    None,
                    MetricType::Counter,
                )?,
                d.cpu_seconds,
            )?;
            gauge(
                enc,
                "process_resident_memory_bytes",
                "Resident memory of the daemon",
                d.rss_bytes as i64,
            )?;
            gauge(
                enc,
                "process_open_fds",
                "Open file descriptors of the daemon",
                i64::from(d.fds),
            )?;
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_scripts(&mut enc)?;
        self.encode_daemon(&mut enc)
    }
}

fn counter(mut m: MetricEncoder, v: impl EncodeCounterValue) -> fmt::Result {
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// A counter family labelled by script.
fn counters<'a, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (&'a ScriptRow, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (r, v) in rows {
        counter(m.encode_family(&[("script", r.status.name.as_str())])?, v)?;
    }
    Ok(())
}

/// A gauge family labelled by script.
fn gauges<'a, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (&'a ScriptRow, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (r, v) in rows {
        m.encode_family(&[("script", r.status.name.as_str())])?
            .encode_gauge(&v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ActionResult, ResultKind, Source};
    use scriptd_common::proto::ExitInfo;
    use std::time::Duration;

    fn scrape() -> Scrape {
        let runs = Arc::new(RunCounters::default());
        runs.ended(&ExitInfo {
            code: Some(0),
            started_at_ms: 1,
            duration_ms: 20,
            ..Default::default()
        });
        let status = ScriptStatus {
            name: "web".into(),
            state: ScriptState::Running as i32,
            pid: 4242,
            run_count: 2,
            health: Some(scriptd_common::proto::HealthStatus {
                state: HealthState::Healthy as i32,
                last_ok: Some(true),
                last_probe_ms: 1_500,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut sample = Sample::default();
        sample.groups.insert(
            4242,
            Usage {
                cpu_seconds: 1.5,
                cpu_percent: 50.0,
                rss_bytes: 1 << 20,
                processes: 2,
                fds: 5,
            },
        );
        Scrape {
            scripts: vec![ScriptRow {
                status,
                logs: LogCounts {
                    lines: [3, 1, 2],
                    ..Default::default()
                },
                followers: 1,
                runs,
            }],
            version: 7,
            in_sync: true,
            event_followers: 0,
            history_write_failures: 1,
            clients: 2,
            watcher: Some([5, 1, 0, 1_500]),
            sample: Arc::new(sample),
        }
    }

    #[test]
    fn the_exposition_has_every_family_with_help() {
        let metrics = Metrics::default();
        metrics.reload_ended(
            Source::Watch,
            ResultKind::Applied,
            Duration::from_millis(30),
        );
        metrics.reload_steps(&[("validate", Duration::from_millis(5))]);
        metrics.control_ended(None, ActionResult::Invalid);
        let text = scrape().encode(&metrics, false).unwrap();
        for line in [
            "scriptd_script_state{script=\"web\",state=\"running\"} 1",
            "scriptd_script_state{script=\"web\",state=\"failed\"} 0",
            "scriptd_script_up{script=\"web\"} 1",
            "scriptd_script_health_state{script=\"web\",state=\"healthy\"} 1",
            "scriptd_script_health_state{script=\"web\",state=\"unhealthy\"} 0",
            "scriptd_script_health_last_probe_ok{script=\"web\"} 1",
            "scriptd_script_health_consecutive_failures{script=\"web\"} 0",
            "scriptd_script_health_last_probe_timestamp_seconds{script=\"web\"} 1.5",
            "scriptd_script_runs_started_total{script=\"web\"} 2",
            "scriptd_script_runs_ended_total{script=\"web\",result=\"ok\"} 1",
            "scriptd_script_run_duration_seconds_count{script=\"web\"} 1",
            "scriptd_script_log_lines_total{script=\"web\",stream=\"out\"} 3",
            "scriptd_script_cpu_seconds_total{script=\"web\"} 1.5",
            "scriptd_script_resident_memory_bytes{script=\"web\"} 1048576",
            "scriptd_script_processes{script=\"web\"} 2",
            "scriptd_script_open_fds{script=\"web\"} 5",
            "scriptd_reload_attempts_total{result=\"applied\",source=\"watch\"} 1",
            "scriptd_reload_duration_seconds_count 1",
            "scriptd_reload_step_seconds_total{step=\"validate\"} 0.005",
            "scriptd_control_actions_total{action=\"invalid\",result=\"invalid\"} 1",
            "scriptd_config_version 7",
            "scriptd_config_in_sync 1",
            "scriptd_history_write_failures_total 1",
            "scriptd_connected_clients 2",
            "scriptd_watcher_events_total 5",
            "scriptd_watcher_rescans_total 1",
            "scriptd_watcher_errors_total 0",
            "scriptd_watcher_last_event_timestamp_seconds 1.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        // Every family has its help, and the classic format has no OpenMetrics EOF.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps, "{text}");
        assert!(!text.contains("# EOF"));
        let open = scrape().encode(&metrics, true).unwrap();
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}

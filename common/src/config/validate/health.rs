//! A `health:` section (of a script or of `defaults:`): exactly one probe kind (`exec`,
//! `http`, `tcp`) and its timing, then the effective [`HealthConfig`] of a service with the
//! section of `defaults:` and the built-in defaults applied key by key.

use super::Validator;
use crate::config::fields::HEALTH_KEYS;
use crate::config::health::{builtin, http_target, tcp_target};
use crate::config::{HealthConfig, Probe};
use serde_yaml::Value;
use std::time::Duration;

/// A `health:` section as written, before defaults.
#[derive(Debug, Default, Clone)]
pub(super) struct HealthPartial {
    /// The section is written (as a mapping).
    given: bool,
    /// A probe key is written (even if its value did not parse).
    probe_given: bool,
    probe: Option<Probe>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    failures: Option<u32>,
    start_period: Option<Duration>,
    restart: Option<bool>,
}

impl Validator<'_> {
    /// Parses the `health:` section at `at` (`scripts.web.health`, `defaults.health`).
    pub(super) fn health(&mut self, value: &Value, at: &str) -> HealthPartial {
        let mut h = HealthPartial {
            // Not a mapping: `entries` reports it, nothing more to say.
            given: value.is_mapping(),
            ..HealthPartial::default()
        };
        let mut first_kind: Option<String> = None;
        for (key, val) in self.entries(value, at, &HEALTH_KEYS) {
            let path = format!("{at}.{key}");
            match key.as_str() {
                "exec" | "http" | "tcp" => {
                    if let Some(first) = &first_kind {
                        self.err_key(
                            &path,
                            format!(
                                "health takes exactly one probe of exec, http or tcp, and {first} \
                                 is already given: remove one of them"
                            ),
                        );
                        continue;
                    }
                    first_kind = Some(key.clone());
                    h.probe_given = true;
                    h.probe = self.probe(&key, val, &path);
                }
                "interval" => h.interval = self.positive_duration(val, &path),
                "timeout" => h.timeout = self.positive_duration(val, &path),
                "failures" => h.failures = self.count_u32(val, &path, 1),
                "start_period" => h.start_period = self.duration(val, &path),
                "restart" => h.restart = self.bool(val, &path),
                _ => {}
            }
        }
        h
    }

    fn probe(&mut self, kind: &str, value: &Value, path: &str) -> Option<Probe> {
        if kind == "exec" {
            return self.command(value, path).map(Probe::Exec);
        }
        let text = self.string(value, path)?;
        let checked = if kind == "http" {
            http_target(&text).map(|_| Probe::Http(text))
        } else {
            tcp_target(&text).map(|_| Probe::Tcp(text))
        };
        checked.map_err(|e| self.err(path, e)).ok()
    }

    /// The effective probe of service `path` (`scripts.web`) from its own section `own`
    /// and the one of `defaults:`; `None` without a probe (or when its section has errors,
    /// reported already or here).
    pub(super) fn finish_health(
        &mut self,
        own: &HealthPartial,
        defaults: &HealthPartial,
        path: &str,
    ) -> Option<HealthConfig> {
        if own.probe_given && own.probe.is_none() {
            return None; // its value did not parse: reported
        }
        let Some(probe) = own.probe.clone().or_else(|| defaults.probe.clone()) else {
            if own.given {
                self.err_key(
                    &format!("{path}.health"),
                    format!(
                        "health needs a probe: add one of {} (e.g. `http: \
                         http://127.0.0.1:8080/`), or remove health",
                        Probe::KINDS.join(", ")
                    ),
                );
            }
            return None;
        };
        let pick =
            |own: Option<_>, defaults: Option<_>, builtin| own.or(defaults).unwrap_or(builtin);
        Some(HealthConfig {
            probe,
            interval: pick(own.interval, defaults.interval, builtin::INTERVAL),
            timeout: pick(own.timeout, defaults.timeout, builtin::TIMEOUT),
            failures: own
                .failures
                .or(defaults.failures)
                .unwrap_or(builtin::FAILURES),
            start_period: pick(
                own.start_period,
                defaults.start_period,
                builtin::START_PERIOD,
            ),
            restart: own.restart.or(defaults.restart).unwrap_or(builtin::RESTART),
        })
    }
}

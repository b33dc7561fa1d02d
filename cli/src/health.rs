//! A service's health probe in `ctl status`: its JSON object (`"health"` of a script) and
//! the lines under the table, one per probed service.

use crate::output::{relative, time};
use scriptd_common::proto::{HealthState, HealthStatus, ScriptStatus};
use serde::{Deserialize, Serialize};

/// `health` of a script in `ctl status --output json`; null without a probe.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthJson {
    /// `unknown` (no verdict yet), `healthy` or `unhealthy`.
    pub status: String,
    /// The probe: `http http://127.0.0.1:8080/`, `tcp db:5432`, `exec [...]`.
    pub probe: String,
    /// `ok` or `failed`; null before the first probe of the run.
    pub last_result: Option<String>,
    /// When the last probe ended, RFC 3339; null before the first.
    pub last_probe: Option<String>,
    /// Failed probes in a row that count.
    pub consecutive_failures: u32,
    /// What the last probe said; null before the first.
    pub message: Option<String>,
}

/// Spelling of a health verdict.
pub fn health_state_name(s: i32) -> &'static str {
    match HealthState::try_from(s).unwrap_or(HealthState::Unspecified) {
        HealthState::Unknown => "unknown",
        HealthState::Healthy => "healthy",
        HealthState::Unhealthy => "unhealthy",
        HealthState::Unspecified => "unspecified",
    }
}

impl From<&HealthStatus> for HealthJson {
    fn from(h: &HealthStatus) -> Self {
        Self {
            status: health_state_name(h.state).into(),
            probe: h.probe.clone(),
            last_result: h
                .last_ok
                .map(|ok| if ok { "ok" } else { "failed" }.to_owned()),
            last_probe: time(h.last_probe_ms),
            consecutive_failures: h.consecutive_failures,
            message: h.last_ok.map(|_| h.message.clone()),
        }
    }
}

/// The lines under the status table: `health  web: healthy · HTTP 200 OK · 2s ago`, one
/// per script with a probe; empty without any.
pub fn health_lines(scripts: &[ScriptStatus]) -> String {
    let mut out = String::new();
    let mut label = "health";
    for s in scripts {
        let Some(h) = &s.health else {
            continue;
        };
        let mut line = format!("{label:<7} {}: {}", s.name, health_state_name(h.state));
        if h.consecutive_failures > 0 {
            line.push_str(&format!(" ({} failed in a row)", h.consecutive_failures));
        }
        match h.last_ok {
            Some(_) => line.push_str(&format!(" · {} · {}", h.message, relative(h.last_probe_ms))),
            None => line.push_str(&format!(" · {} · no probe yet", h.probe)),
        }
        out.push_str(&line);
        out.push('\n');
        label = "";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_json_round_trips_strictly() {
        let before = HealthStatus {
            state: HealthState::Unknown as i32,
            probe: "tcp db:5432".into(),
            ..Default::default()
        };
        let after = HealthStatus {
            state: HealthState::Unhealthy as i32,
            probe: "http http://127.0.0.1:8080/".into(),
            last_ok: Some(false),
            last_probe_ms: 1_700_000_000_000,
            consecutive_failures: 3,
            message: "HTTP 503 Service Unavailable".into(),
        };
        for (h, status, result) in [
            (&before, "unknown", None),
            (&after, "unhealthy", Some("failed")),
        ] {
            let text = serde_json::to_string(&HealthJson::from(h)).expect("json");
            let back: HealthJson = serde_json::from_str(&text).expect("strict parse");
            assert_eq!(back.status, status);
            assert_eq!(back.last_result.as_deref(), result);
            assert_eq!(back.message.is_some(), result.is_some());
        }
        let j = HealthJson::from(&after);
        assert_eq!(j.last_probe.as_deref(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(j.consecutive_failures, 3);
    }

    #[test]
    fn one_line_per_probed_service() {
        let probed = |name: &str, h: HealthStatus| ScriptStatus {
            name: name.into(),
            health: Some(h),
            ..Default::default()
        };
        let scripts = [
            probed(
                "web",
                HealthStatus {
                    state: HealthState::Healthy as i32,
                    probe: "http http://127.0.0.1:8080/".into(),
                    last_ok: Some(true),
                    last_probe_ms: 1,
                    message: "HTTP 200 OK".into(),
                    ..Default::default()
                },
            ),
            ScriptStatus {
                name: "job".into(),
                ..Default::default()
            },
            probed(
                "db",
                HealthStatus {
                    state: HealthState::Unknown as i32,
                    probe: "tcp db:5432".into(),
                    ..Default::default()
                },
            ),
        ];
        let text = health_lines(&scripts);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("health  web: healthy · HTTP 200 OK · "),
            "{text}"
        );
        assert_eq!(lines[1], "        db: unknown · tcp db:5432 · no probe yet");
        assert_eq!(health_lines(&scripts[1..2]), "");
    }
}

//! The `reload:` section: how an applied reload is verified (`verify`, `on_failure`).

use super::Validator;
use crate::config::{OnFailure, ReloadConfig};
use serde_yaml::Value;

const RELOAD_KEYS: &[&str] = &["verify", "on_failure"];

impl Validator<'_> {
    pub(super) fn reload(&mut self, value: &Value) -> ReloadConfig {
        let mut r = ReloadConfig::default();
        if value.is_null() {
            return r;
        }
        for (key, val) in self.entries(value, "reload", RELOAD_KEYS) {
            let p = format!("reload.{key}");
            match key.as_str() {
                "verify" => r.verify = self.positive_duration(val, &p).unwrap_or(r.verify),
                "on_failure" => {
                    if let Some(word) = self.string(val, &p) {
                        match on_failure(&word) {
                            Some(f) => r.on_failure = f,
                            None => self.err(
                                &p,
                                format!(
                                    "invalid on_failure {word:?}; use rollback (go back to the \
                                     previous version) or keep (keep the new version and report)"
                                ),
                            ),
                        }
                    }
                }
                _ => {}
            }
        }
        r
    }
}

fn on_failure(word: &str) -> Option<OnFailure> {
    [OnFailure::Rollback, OnFailure::Keep]
        .into_iter()
        .find(|f| f.as_str() == word)
}

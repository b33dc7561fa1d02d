//! Scalar values: strings, durations, sizes, counts, booleans, paths. Each reports what it
//! expected at the value's position and yields `None` when the value is unusable.

use super::{kind, render, Validator};
use crate::units::{parse_duration, parse_size};
use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl Validator<'_> {
    pub(super) fn string(&mut self, value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.err(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, value: &Value, path: &str) -> Option<Duration> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => {
                self.err(
                    path,
                    format!("invalid duration {n}: add a unit, e.g. \"{n}s\" or \"{n}ms\""),
                );
                return None;
            }
            other => {
                self.err(
                    path,
                    format!("expected a duration such as \"30s\", found {}", kind(other)),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    pub(super) fn positive_duration(&mut self, value: &Value, path: &str) -> Option<Duration> {
        let d = self.duration(value, path)?;
        if d.is_zero() {
            self.err(path, "must be greater than zero".into());
            return None;
        }
        Some(d)
    }

    pub(super) fn size(&mut self, value: &Value, path: &str) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("invalid size {n}")),
            Value::String(s) => parse_size(s),
            other => Err(format!(
                "expected a size such as \"10MiB\", found {}",
                kind(other)
            )),
        };
        match parsed {
            Ok(0) => {
                self.err(path, "must be greater than zero".into());
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }

    pub(super) fn count(&mut self, value: &Value, path: &str, min: u64) -> Option<u64> {
        match value.as_u64() {
            Some(n) if n >= min => Some(n),
            _ => {
                self.err(
                    path,
                    format!(
                        "expected a whole number of at least {min}, found {}",
                        render(value)
                    ),
                );
                None
            }
        }
    }

    /// [`Self::count`] that must also fit in 32 bits.
    pub(super) fn count_u32(&mut self, value: &Value, path: &str, min: u64) -> Option<u32> {
        let n = self.count(value, path, min)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.err(path, format!("{n} is too large: at most {}", u32::MAX));
                None
            }
        }
    }

    pub(super) fn bool(&mut self, value: &Value, path: &str) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    path,
                    format!("expected true or false, found {}", render(other)),
                );
                None
            }
        }
    }

    pub(super) fn path(&mut self, value: &Value, path: &str, base: &Path) -> Option<PathBuf> {
        let s = self.string(value, path)?;
        if s.is_empty() {
            self.err(path, "must not be empty".into());
            return None;
        }
        Some(base.join(s))
    }
}

//! Validation errors: each names the file, line, column and key path, and says what to do.

use std::fmt;

/// One thing wrong with the config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// File name relative to the main file's directory (the main file by its own name).
    pub file: String,
    /// 1-based line; 0 when the error is about the file as a whole.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    /// Key path such as `scripts.backup.interval`; empty for file-level errors.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

/// Longest error in a [`ConfigErrors::summary`], in characters.
pub const SUMMARY_ERROR_CHARS: usize = 300;

/// Every error found in one pass, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// A single file-level error.
    pub fn file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError {
            file: file.into(),
            line: 0,
            column: 0,
            path: String::new(),
            message: message.into(),
        }])
    }

    /// One line of bounded size for a log record: the first `max` errors (each at most
    /// [`SUMMARY_ERROR_CHARS`] characters, newlines flattened), separated by `; `, and how
    /// many more there are.
    pub fn summary(&self, max: usize) -> String {
        let mut out = String::new();
        for (i, e) in self.0.iter().take(max).enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            let text = e.to_string().replace(['\n', '\r'], " ");
            match text.char_indices().nth(SUMMARY_ERROR_CHARS) {
                Some((cut, _)) => {
                    out.push_str(&text[..cut]);
                    out.push('…');
                }
                None => out.push_str(&text),
            }
        }
        let more = self.0.len().saturating_sub(max);
        if more > 0 {
            out.push_str(&format!("; and {more} more"));
        }
        out
    }

    /// The first error, for one-line summaries.
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(n: usize, message: &str) -> ConfigErrors {
        ConfigErrors(
            (0..n)
                .map(|i| ConfigError {
                    file: "a.yaml".into(),
                    line: i as u32 + 1,
                    column: 1,
                    path: String::new(),
                    message: message.into(),
                })
                .collect(),
        )
    }

    #[test]
    fn a_summary_is_one_bounded_line() {
        assert_eq!(errors(1, "bad").summary(3), "a.yaml:1:1: bad");
        assert_eq!(
            errors(5, "bad").summary(2),
            "a.yaml:1:1: bad; a.yaml:2:1: bad; and 3 more"
        );
        let long = errors(2000, &"x\n".repeat(10_000)).summary(10);
        assert!(!long.contains('\n'));
        assert!(
            long.chars().count() < 10 * (SUMMARY_ERROR_CHARS + 3) + 20,
            "{long}"
        );
        assert!(long.ends_with("; and 1990 more"), "{long}");
    }
}

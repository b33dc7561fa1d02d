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

    /// The first error, for one-line summaries.
    pub fn first(&self) -> Option<&ConfigError> {
        self.0.first()
    }
}

//! Reading the main file and the files its `include` globs match.

use super::{Config, ConfigErrors};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One config file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// Path relative to the main file's directory (the main file: its file name).
    pub name: String,
    /// Full text.
    pub content: String,
}

/// The text of every file of one config version: the main file first, then the included
/// files sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// Absolute path of the main file.
    pub main: PathBuf,
    /// Main file first.
    pub files: Vec<ConfigFile>,
}

impl ConfigSource {
    /// Directory relative paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.main.parent().unwrap_or(Path::new("/"))
    }

    /// Content hash (SHA-256, hex) of every file name and text: equal hashes mean the
    /// same config.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update((f.name.len() as u64).to_le_bytes());
            h.update(f.name.as_bytes());
            h.update((f.content.len() as u64).to_le_bytes());
            h.update(f.content.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the daemon does at startup and `scriptd --check`: reads the config at `main`,
/// refuses files other users could write ([`check_permissions`]) and validates it.
pub fn load(main: &Path) -> Result<(ConfigSource, Config), ConfigErrors> {
    let source = read_source(main)?;
    check_permissions(&source)?;
    let config = super::validate(&source)?;
    Ok((source, config))
}

/// Reads the main file and every file its `include` globs match, and refuses files other
/// users could write. Syntax errors are left to [`super::validate`].
pub fn read_source(main: &Path) -> Result<ConfigSource, ConfigErrors> {
    let main = std::path::absolute(main).unwrap_or_else(|_| main.to_path_buf());
    let main_name = main
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| main.display().to_string());
    let base = main.parent().unwrap_or(Path::new("/")).to_path_buf();
    let content = read_file(&main, &main_name)?;
    let mut errors = Vec::new();
    let mut files = vec![ConfigFile {
        name: main_name.clone(),
        content,
    }];
    let mut included: Vec<(String, PathBuf)> = Vec::new();
    for pattern in include_patterns(&files[0].content) {
        let full = base.join(&pattern);
        let Ok(paths) = glob::glob(&full.to_string_lossy()) else {
            // Reported with its position by validation.
            continue;
        };
        for path in paths.flatten() {
            if path == main || !path.is_file() {
                continue;
            }
            let name = path
                .strip_prefix(&base)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if !included.iter().any(|(n, _)| *n == name) {
                included.push((name, path));
            }
        }
    }
    included.sort();
    for (name, path) in included {
        match read_file(&path, &name) {
            Ok(content) => files.push(ConfigFile { name, content }),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() {
        Ok(ConfigSource { main, files })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Checks that no file of the config can be written by other users: whoever can write the
/// config can run commands as the daemon's user.
pub fn check_permissions(source: &ConfigSource) -> Result<(), ConfigErrors> {
    let base = source.base_dir();
    let errors: Vec<_> = source
        .files
        .iter()
        .filter_map(|f| {
            let path = base.join(&f.name);
            let mode = std::fs::metadata(&path).ok()?.permissions().mode();
            (mode & 0o022 != 0).then(|| {
                ConfigErrors::file(
                    &f.name,
                    format!(
                        "refused: the file is writable by group or others (mode {:o}), and whoever \
                         can write the config can run commands as the daemon's user; run \
                         `chmod go-w {}`",
                        mode & 0o7777,
                        path.display()
                    ),
                )
                .0
            })
        })
        .flatten()
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

fn read_file(path: &Path, name: &str) -> Result<String, ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigErrors::file(name, format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes).map_err(|e| {
        ConfigErrors::file(
            name,
            format!(
                "not valid UTF-8 (byte {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The `include` globs of a main file, leniently: anything malformed yields nothing here
/// and is reported by validation.
pub fn include_patterns(main_text: &str) -> Vec<String> {
    let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(main_text) else {
        return Vec::new();
    };
    match value.get("include") {
        Some(serde_yaml::Value::String(s)) => vec![s.clone()],
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

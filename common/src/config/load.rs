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

/// How include globs match: like a shell, a `*` or `?` does not match a leading dot, so
/// dotfiles in an include directory (an editor's `.app.yaml.swp`, Ansible's
/// `.ansible_tmpXa.yaml`, files being written) are never read; a glob that spells the dot
/// (`conf.d/.*.yaml`) still matches them.
pub const INCLUDE_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    // What `glob::glob_with` does anyway; the watcher matches single paths with it too.
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// Reads and validates the config at `main`.
pub fn load(main: &Path) -> Result<(ConfigSource, Config), ConfigErrors> {
    let source = read_source(main)?;
    let config = super::validate(&source)?;
    Ok((source, config))
}

/// Reads the main file and every file its `include` globs match ([`INCLUDE_MATCH`]: not
/// dotfiles). Syntax errors are left to [`super::validate`], permissions to
/// [`check_permissions`].
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
        let Ok(paths) = glob::glob_with(&full.to_string_lossy(), INCLUDE_MATCH) else {
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
///
/// Read on every reload before the included files can be, so it does not build the whole
/// document: a scan of the YAML events stops at the top-level `include` key (unknown
/// constructs fall back to a full parse, which gives the same answer).
pub fn include_patterns(main_text: &str) -> Vec<String> {
    // The key can only be spelled without the word in a double-quoted key with escapes.
    if !main_text.contains("include") && !main_text.contains('\\') {
        return Vec::new();
    }
    scan_include(main_text).unwrap_or_else(|| parse_include(main_text))
}

/// [`include_patterns`] by building the whole document.
fn parse_include(main_text: &str) -> Vec<String> {
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

/// [`include_patterns`] from the event stream of a plain block or flow mapping, stopping at
/// the `include` key; `None` for anything it does not handle exactly like the full parse
/// (aliases, tags, complex keys, more than one document, syntax errors before the key). A
/// syntax error after the key is not seen: the globs are read, and validation reports it.
fn scan_include(main_text: &str) -> Option<Vec<String>> {
    use yaml_rust2::parser::{Event, Parser};
    use yaml_rust2::scanner::TScalarStyle;
    // A second document (which the full parse refuses) starts with a marker line.
    if main_text
        .lines()
        .skip(1)
        .any(|l| l.starts_with("---") || l.starts_with("..."))
    {
        return None;
    }
    let mut parser = Parser::new_from_str(main_text);
    let mut next = move || parser.next_token().ok().map(|(event, _)| event);
    // A scalar as the full parse types it: a plain `5`, `true` or `~` is no string.
    let string = |text: String, style: TScalarStyle| {
        (style != TScalarStyle::Plain
            || matches!(
                serde_yaml::from_str::<serde_yaml::Value>(&text),
                Ok(serde_yaml::Value::String(_))
            ))
        .then_some(text)
    };
    if !matches!(next()?, Event::StreamStart) || !matches!(next()?, Event::DocumentStart) {
        return None;
    }
    if !matches!(next()?, Event::MappingStart(0, None)) {
        return None;
    }
    loop {
        match next()? {
            Event::MappingEnd => break,
            Event::Scalar(key, _, 0, None) if key == "include" => {
                return match next()? {
                    Event::Scalar(text, style, 0, None) => {
                        Some(string(text, style).into_iter().collect())
                    }
                    Event::SequenceStart(0, None) => {
                        let mut out = Vec::new();
                        loop {
                            match next()? {
                                Event::SequenceEnd => break Some(out),
                                Event::Scalar(text, style, 0, None) => {
                                    out.extend(string(text, style))
                                }
                                _ => return None,
                            }
                        }
                    }
                    _ => None,
                };
            }
            Event::Scalar(_, _, 0, None) => skip_value(&mut next)?,
            _ => return None,
        }
    }
    // No `include` key: the full parse finds none either, if this was the only document.
    match (next()?, next()?) {
        (Event::DocumentEnd, Event::StreamEnd) => Some(Vec::new()),
        _ => None,
    }
}

/// Skips one value (scalar or whole collection) of the event stream; `None` on an alias, an
/// anchor or a tag, or at the end of the stream.
fn skip_value(next: &mut impl FnMut() -> Option<yaml_rust2::parser::Event>) -> Option<()> {
    use yaml_rust2::parser::Event;
    let mut depth = 0usize;
    loop {
        match next()? {
            Event::Scalar(_, _, 0, None) => {}
            Event::MappingStart(0, None) | Event::SequenceStart(0, None) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth = depth.checked_sub(1)?,
            _ => return None,
        }
        if depth == 0 {
            return Some(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_include_scan_agrees_with_the_full_parse() {
        let docs = [
            "include: [\"a/*.yaml\", 'b.yaml']\nscripts: {}\n",
            "include: \"conf.d/*.yaml\"\n",
            "include: conf.d/*.yaml\n",
            "scripts:\n  a:\n    command: [x, {y: z}]\n    env: { A: 1 }\ninclude:\n  - c.yaml\n  - 5\n  - \"6\"\n",
            "scripts:\n  a:\n    command: x\n",
            "include: 5\n",
            "include: true\n",
            "include: ~\n",
            "include:\n",
            "include: [a, [b]]\n",
            "include: {a: b}\n",
            "{include: [a.yaml], scripts: {}}\n",
            "base: &b [x.yaml]\ninclude: *b\n",
            "include: !!str x.yaml\n",
            "---\ninclude: [a.yaml]\n...\n",
            "include: [a.yaml]\n---\ninclude: [b.yaml]\n",
            "scripts: {}\n---\nscripts: {}\n",
            "",
            "# only a comment\n",
            "- a\n- b\n",
            "just a string\n",
            "scripts: [unterminated\ninclude: [a.yaml]\n",
            "? [complex, key]\n: value\ninclude: [a.yaml]\n",
            "\"incl\\u0075de\": [a.yaml]\n",
            "scripts: {}\n",
        ];
        for doc in docs {
            assert_eq!(include_patterns(doc), parse_include(doc), "{doc:?}");
        }
        // The scan itself (not the fallback) handles the usual shapes.
        assert_eq!(
            scan_include("include: [\"a/*.yaml\"]\nscripts: {}\n"),
            Some(vec!["a/*.yaml".to_owned()])
        );
        assert_eq!(
            scan_include("scripts:\n  a:\n    command: [x]\n"),
            Some(Vec::new())
        );
    }
}

//! Reading the main file and the files its `include` globs match.

use super::{Config, ConfigError, ConfigErrors};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
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

/// What the daemon does at startup and `scriptd --check`: reads the config at `main`,
/// refuses files other users could write ([`check_permissions`]) and validates it.
pub fn load(main: &Path) -> Result<(ConfigSource, Config), ConfigErrors> {
    let source = secure_source(read_source(main)?)?;
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
    let content = read_file(&main, &main_name)?;
    let mut errors = Vec::new();
    let mut files = vec![ConfigFile {
        name: main_name.clone(),
        content,
    }];
    let mut glob_errors = Vec::new();
    let patterns = include_patterns(&files[0].content);
    for (name, path) in collect_includes(&main, &patterns, &mut glob_errors) {
        match read_file(&path, &name) {
            Ok(content) => files.push(ConfigFile { name, content }),
            Err(e) => errors.extend(e.0),
        }
    }
    for message in glob_errors {
        errors.extend(ConfigErrors::file(&main_name, message).0);
    }
    if errors.is_empty() {
        Ok(ConfigSource { main, files })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The files the include `patterns` of the main file `main` (absolute) match: regular files
/// other than the main file, as (name relative to the main file's directory, path), sorted
/// by name, each once. A malformed pattern matches nothing (validation reports it); an
/// entry that cannot be read is skipped.
pub fn include_matches(main: &Path, patterns: &[String]) -> Vec<(String, PathBuf)> {
    collect_includes(main, patterns, &mut Vec::new())
}

/// [`include_matches`], with a message in `errors` for each entry that cannot be read.
fn collect_includes(
    main: &Path,
    patterns: &[String],
    errors: &mut Vec<String>,
) -> Vec<(String, PathBuf)> {
    let base = main.parent().unwrap_or(Path::new("/"));
    let mut included: Vec<(String, PathBuf)> = Vec::new();
    for pattern in patterns {
        let full = base.join(pattern);
        let Ok(paths) = glob::glob_with(&full.to_string_lossy(), INCLUDE_MATCH) else {
            continue;
        };
        for entry in paths {
            let path = match entry {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!(
                        "include {pattern:?}: cannot read {}: {}",
                        e.path().display(),
                        e.error()
                    ));
                    continue;
                }
            };
            if path == main || !path.is_file() {
                continue;
            }
            let name = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if !included.iter().any(|(n, _)| *n == name) {
                included.push((name, path));
            }
        }
    }
    included.sort();
    included
}

/// Checks that no one but the daemon's user and root can change what the daemon runs (like
/// sshd's StrictModes): every file of the config, and every directory on the way from it up
/// to `/` (symlinks resolved), must be owned by the daemon's user or root and must not be
/// writable by others. Group write is accepted when the group is the owner's private group
/// (the user-private-group convention of Fedora, RHEL and Debian: a group named after the
/// user, the user's primary group, with no other members); a directory with the sticky bit
/// (such as `/tmp`) is accepted, since others may not rename or delete what they do not own.
/// A file or directory whose metadata cannot be read is an error, not skipped.
pub fn check_permissions(source: &ConfigSource) -> Result<(), ConfigErrors> {
    let me = nix::unistd::geteuid().as_raw();
    let base = source.base_dir();
    let mut checked_dirs = std::collections::BTreeSet::new();
    let mut errors = Vec::new();
    for f in &source.files {
        let path = base.join(&f.name);
        let mut problems = Vec::new();
        match std::fs::canonicalize(&path) {
            Err(e) => problems.push(format!(
                "refused: cannot check who may write {}: {e}",
                path.display()
            )),
            Ok(real) => {
                problems.extend(check_node(&real, false, me, CONFIG_WHY, false));
                for dir in real.ancestors().skip(1) {
                    if checked_dirs.insert(dir.to_path_buf()) {
                        problems.extend(check_node(dir, true, me, CONFIG_WHY, false));
                    }
                }
            }
        }
        errors.extend(problems.into_iter().map(|message| ConfigError {
            file: f.name.clone(),
            line: 0,
            column: 0,
            path: String::new(),
            message,
        }));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Why the config must be safe from other users, in every refusal.
const CONFIG_WHY: &str = "whoever can write the config can run commands as the daemon's user";

/// The rules of [`check_permissions`] for a directory the daemon writes in (`state_dir`,
/// `log_dir`), symlinks resolved; the directories above it may also be writable by their
/// group (Ubuntu's `/var/log` is `root:syslog` 0775). Returns one message per problem, each
/// ending with `why` and the command that fixes it; none when the directory is safe.
pub fn check_trusted_dir(dir: &Path, why: &str) -> Vec<String> {
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::canonicalize(dir) {
        Err(e) => vec![format!(
            "refused: cannot check who may write {}: {e}",
            dir.display()
        )],
        Ok(real) => real
            .ancestors()
            .enumerate()
            .flat_map(|(i, d)| check_node(d, true, me, why, i > 0))
            .collect(),
    }
}

/// `source` when [`check_permissions`] accepts it; otherwise its errors together with every
/// validation error, so that one run shows everything there is to fix.
pub fn secure_source(source: ConfigSource) -> Result<ConfigSource, ConfigErrors> {
    let Err(mut errors) = check_permissions(&source) else {
        return Ok(source);
    };
    if let Err(invalid) = super::validate(&source) {
        errors.0.extend(invalid.0);
    }
    let index = |name: &str| source.files.iter().position(|f| f.name == name);
    // Stable: within a file, the file-level permission errors (line 0) come first.
    errors
        .0
        .sort_by_key(|e| (index(&e.file).unwrap_or(usize::MAX), e.line, e.column));
    Err(errors)
}

/// Owner, group and mode of a file or directory.
#[derive(Debug, Clone, Copy)]
struct Stat {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// What is wrong with one file or directory.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    /// Owned by someone other than the daemon's user or root.
    Owner,
    /// Writable by the group (not the owner's private group) and/or others.
    Writable { group: bool, others: bool },
}

/// The problems of a file (`dir == false`) or directory, for a daemon running as `me`;
/// `private_group(uid, gid)` says whether `gid` is the private group of user `uid`.
fn judge(st: Stat, dir: bool, me: u32, private_group: &dyn Fn(u32, u32) -> bool) -> Vec<Problem> {
    let mut out = Vec::new();
    if st.uid != me && st.uid != 0 {
        out.push(Problem::Owner);
    }
    let sticky_dir = dir && st.mode & 0o1000 != 0;
    let others = !sticky_dir && st.mode & 0o002 != 0;
    let group = !sticky_dir && st.mode & 0o020 != 0 && !private_group(st.uid, st.gid);
    if group || others {
        out.push(Problem::Writable { group, others });
    }
    out
}

/// The problems of the file or directory at `path`, as messages saying `why` they matter;
/// with `group_write_ok`, write access by any group is accepted.
fn check_node(path: &Path, dir: bool, me: u32, why: &str, group_write_ok: bool) -> Vec<String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return vec![format!(
                "refused: cannot check who may write {}: {e}",
                path.display()
            )]
        }
    };
    let st = Stat {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    };
    let what = if dir {
        format!("directory {}", path.display())
    } else {
        "the file".to_owned()
    };
    let any_group = |_: u32, _: u32| true;
    let group_ok: &dyn Fn(u32, u32) -> bool = if group_write_ok {
        &any_group
    } else {
        &private_group
    };
    judge(st, dir, me, group_ok)
        .into_iter()
        .map(|problem| match problem {
            Problem::Owner => {
                let allowed = if me == 0 {
                    "root (scriptd's user)".to_owned()
                } else {
                    format!("scriptd's user ({}) or root", user_label(me))
                };
                format!(
                    "refused: {what} is owned by {}, but only {allowed} may own it, and {why}; \
                     run `chown {me} {}`",
                    user_label(st.uid),
                    path.display()
                )
            }
            Problem::Writable { group, others } => {
                let who = match (group, others) {
                    (true, true) => format!("group {} and others", group_label(st.gid)),
                    (true, false) => format!(
                        "group {}, which is not the owner's private group,",
                        group_label(st.gid)
                    ),
                    _ => "others".to_owned(),
                };
                format!(
                    "refused: {what} is writable by {who} (mode {:o}), and {why}; run `chmod \
                     go-w {}`",
                    st.mode,
                    path.display()
                )
            }
        })
        .collect()
}

/// Whether `gid` is the private group of user `uid`: the user's primary group, named after
/// the user, with no other members.
fn private_group(uid: u32, gid: u32) -> bool {
    use nix::unistd::{Gid, Group, Uid, User};
    let (Ok(Some(user)), Ok(Some(group))) = (
        User::from_uid(Uid::from_raw(uid)),
        Group::from_gid(Gid::from_raw(gid)),
    ) else {
        return false;
    };
    is_private_group(&user.name, user.gid.as_raw(), &group.name, gid, &group.mem)
}

fn is_private_group(user: &str, user_gid: u32, group: &str, gid: u32, members: &[String]) -> bool {
    user_gid == gid && group == user && members.iter().all(|m| m == user)
}

/// `alice (uid 1000)`, or `uid 1000` when the user database does not know it.
fn user_label(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// `users (gid 100)`, or `gid 100` when the group database does not know it.
fn group_label(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => format!("{} (gid {gid})", g.name),
        _ => format!("gid {gid}"),
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
    // The daemon reads the files on every `ctl status` (to tell whether the disk matches
    // what runs), and the main file rarely changes: parse a given text once.
    static LAST: std::sync::Mutex<Option<(String, Vec<String>)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((text, patterns)) = last.as_ref() {
        if text == main_text {
            return patterns.clone();
        }
    }
    let patterns = find_include_patterns(main_text);
    *last = Some((main_text.to_owned(), patterns.clone()));
    patterns
}

fn find_include_patterns(main_text: &str) -> Vec<String> {
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

    const ME: u32 = 1000;

    fn st(uid: u32, gid: u32, mode: u32) -> Stat {
        Stat { uid, gid, mode }
    }

    /// gid 1000 is the private group of uid 1000; nothing else is private.
    fn upg(uid: u32, gid: u32) -> bool {
        uid == 1000 && gid == 1000
    }

    fn writable(group: bool, others: bool) -> Vec<Problem> {
        vec![Problem::Writable { group, others }]
    }

    #[test]
    fn files_owned_by_the_daemon_user_or_root_and_not_writable_by_others() {
        assert!(judge(st(ME, 100, 0o644), false, ME, &upg).is_empty());
        assert!(judge(st(0, 0, 0o600), false, ME, &upg).is_empty());
        assert_eq!(
            judge(st(1001, 100, 0o644), false, ME, &upg),
            [Problem::Owner]
        );
        assert_eq!(
            judge(st(ME, 100, 0o666), false, ME, &upg),
            writable(true, true)
        );
        assert_eq!(
            judge(st(ME, 100, 0o646), false, ME, &upg),
            writable(false, true)
        );
        // Group write: accepted for the owner's private group only.
        assert!(judge(st(ME, 1000, 0o664), false, ME, &upg).is_empty());
        assert_eq!(
            judge(st(ME, 100, 0o664), false, ME, &upg),
            writable(true, false)
        );
        assert_eq!(
            judge(st(ME, 1000, 0o666), false, ME, &upg),
            writable(false, true)
        );
    }

    #[test]
    fn directories_follow_the_same_rules_and_sticky_ones_are_accepted() {
        assert!(judge(st(ME, 1000, 0o775), true, ME, &upg).is_empty());
        assert!(judge(st(0, 0, 0o755), true, ME, &upg).is_empty());
        assert!(judge(st(0, 0, 0o1777), true, ME, &upg).is_empty(), "/tmp");
        assert_eq!(judge(st(0, 0, 0o777), true, ME, &upg), writable(true, true));
        assert_eq!(
            judge(st(ME, 100, 0o770), true, ME, &upg),
            writable(true, false)
        );
        assert_eq!(
            judge(st(1001, 1001, 0o1777), true, ME, &upg),
            [Problem::Owner]
        );
        // The sticky bit means nothing on a file.
        assert_eq!(
            judge(st(ME, 100, 0o1666), false, ME, &upg),
            writable(true, true)
        );
    }

    #[test]
    fn private_group_is_named_after_its_only_member() {
        let none: &[String] = &[];
        assert!(is_private_group("alice", 1000, "alice", 1000, none));
        assert!(is_private_group(
            "alice",
            1000,
            "alice",
            1000,
            &["alice".into()]
        ));
        assert!(!is_private_group(
            "alice",
            1000,
            "alice",
            1000,
            &["bob".into()]
        ));
        assert!(
            !is_private_group("alice", 100, "alice", 1000, none),
            "not primary"
        );
        assert!(
            !is_private_group("alice", 100, "users", 100, none),
            "shared name"
        );
    }

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

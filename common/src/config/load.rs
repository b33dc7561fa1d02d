//! Reading the main file and the files its `include` globs match.

use super::include_scan::include_patterns;
use super::include_walk::{Walk, WalkLimit};
use super::limits::{IncludeLimits, INCLUDE_LIMITS, MAX_TOTAL_BYTES};
use super::read::read_text;
use super::{Config, ConfigError, ConfigErrors};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
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
    /// A source of the given texts: `files` as (name, content), the main file first.
    pub fn of_texts(main: PathBuf, files: &[(&str, &str)]) -> Self {
        ConfigSource {
            main,
            files: files
                .iter()
                .map(|(name, content)| ConfigFile {
                    name: (*name).into(),
                    content: (*content).into(),
                })
                .collect(),
        }
    }

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

/// [`load`] reusing `cache` and filling it for the next validation
/// ([`super::validate_cached`]): the daemon's start, whose scripts' configs a save's
/// validation then shares.
pub fn load_cached(
    main: &Path,
    cache: &mut super::ValidationCache,
) -> Result<(ConfigSource, Config), ConfigErrors> {
    let source = secure_source(read_source(main)?)?;
    let config = super::validate_cached(&source, cache)?;
    Ok((source, config))
}

/// Reads the main file and every file its `include` globs match ([`INCLUDE_MATCH`]: not
/// dotfiles), within the [`limits`](super::limits): each file must be a regular file
/// ([`read_text`]), and the walk, the number of matches and the total size are bounded.
/// Syntax errors are left to [`super::validate`], permissions to [`check_permissions`].
pub fn read_source(main: &Path) -> Result<ConfigSource, ConfigErrors> {
    read_source_with(main, &BTreeMap::new())
}

/// [`read_source`] of the config as it would be with the files of `replaced` (name relative
/// to the main file's directory → text) in place of the files on disk of those names, or
/// beside them when there are none: the main file's include globs are those of its
/// replacement, and a replaced file that does not exist on disk is included when a glob
/// matches its name ([`INCLUDE_MATCH`]). A replaced file that is neither the main file nor
/// matched is an error at that file: it would not be part of the config. Names and order are
/// those a [`read_source`] finds once the files are written, so the hashes agree.
pub fn read_source_with(
    main: &Path,
    replaced: &BTreeMap<String, String>,
) -> Result<ConfigSource, ConfigErrors> {
    let main = std::path::absolute(main).unwrap_or_else(|_| main.to_path_buf());
    let main_name = main
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| main.display().to_string());
    let file_error =
        |name: &str, e: &dyn std::fmt::Display| ConfigErrors::file(name, e.to_string());
    let content = match replaced.get(&main_name) {
        Some(text) => text.clone(),
        None => read_text(&main).map_err(|e| file_error(&main_name, &e))?,
    };
    let mut total = content.len() as u64;
    let mut files = vec![ConfigFile {
        name: main_name.clone(),
        content,
    }];
    let mut errors = Vec::new();
    let patterns = include_patterns(&files[0].content);
    let included = match collect_includes(&main, &patterns, INCLUDE_LIMITS) {
        Ok(Includes { files, unreadable }) => {
            errors.extend(
                unreadable
                    .into_iter()
                    .map(|message| file_error(&main_name, &message)),
            );
            files
        }
        Err(e) => return Err(file_error(&main_name, &e)),
    };
    let included = with_replaced(&main, &main_name, &patterns, included, replaced)?;
    for (name, path) in included {
        let read = match replaced.get(&name) {
            Some(text) => Ok(text.clone()),
            None => read_text(&path),
        };
        match read {
            Ok(content) => {
                total += content.len() as u64;
                files.push(ConfigFile { name, content });
            }
            Err(e) => errors.push(file_error(&name, &e)),
        }
        if total > MAX_TOTAL_BYTES {
            return Err(file_error(
                &main_name,
                &format!(
                    "refused: the config files together are larger than {} MiB (the limit); \
                     check that the include globs match only config files",
                    MAX_TOTAL_BYTES >> 20
                ),
            ));
        }
    }
    let errors: Vec<ConfigError> = errors.into_iter().flat_map(|e| e.0).collect();
    if errors.is_empty() {
        Ok(ConfigSource { main, files })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The included files of [`read_source_with`]: `included` (found on disk) plus the replaced
/// files the globs match, or an error for each replaced file that would not be part of the
/// config.
fn with_replaced(
    main: &Path,
    main_name: &str,
    patterns: &[String],
    included: Vec<(String, PathBuf)>,
    replaced: &BTreeMap<String, String>,
) -> Result<Vec<(String, PathBuf)>, ConfigErrors> {
    let base = main.parent().unwrap_or(Path::new("/"));
    let globs: Vec<glob::Pattern> = patterns
        .iter()
        .filter_map(|p| glob::Pattern::new(&base.join(p).to_string_lossy()).ok())
        .collect();
    let mut all: BTreeMap<String, PathBuf> = included.into_iter().collect();
    let mut errors = Vec::new();
    for name in replaced.keys().filter(|n| *n != main_name) {
        if all.contains_key(name) {
            continue;
        }
        let path = base.join(name);
        if globs
            .iter()
            .any(|g| g.matches_path_with(&path, INCLUDE_MATCH))
        {
            all.insert(name.clone(), path);
        } else {
            errors.push(ConfigError {
                file: name.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!(
                    "not part of the config: it is not the main file ({main_name}) and no \
                     include glob of the main file matches it (include: {patterns:?}); name \
                     the main file or an included file, or add a glob that matches it"
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let limit = INCLUDE_LIMITS.matches;
    if all.len() > limit {
        return Err(ConfigErrors::file(
            main_name,
            WalkLimit::Matches(limit).to_string(),
        ));
    }
    Ok(all.into_iter().collect())
}

/// The files the include `patterns` of the main file `main` (absolute) match: every path
/// other than the main file and directories, as (name relative to the main file's
/// directory, path), sorted by name, each once. A malformed pattern matches nothing
/// (validation reports it); an entry that cannot be read is skipped; the walk stops at the
/// [`limits`](super::limits), with what it found until then.
pub fn include_matches(main: &Path, patterns: &[String]) -> Vec<(String, PathBuf)> {
    match collect_includes(main, patterns, INCLUDE_LIMITS) {
        Ok(includes) => includes.files,
        Err(IncludeError { found, .. }) => found,
    }
}

/// What the include globs of one config match.
struct Includes {
    /// (name relative to the main file's directory, path), sorted by name.
    files: Vec<(String, PathBuf)>,
    /// A message for each directory that could not be read.
    unreadable: Vec<String>,
}

/// The include walk stopped at a limit.
#[derive(Debug, thiserror::Error)]
#[error("include {pattern:?}: {limit}")]
struct IncludeError {
    pattern: String,
    limit: WalkLimit,
    /// What was found before.
    found: Vec<(String, PathBuf)>,
}

/// [`include_matches`], with a message for each directory that cannot be read, or the limit
/// that stopped the walk.
fn collect_includes(
    main: &Path,
    patterns: &[String],
    limits: IncludeLimits,
) -> Result<Includes, IncludeError> {
    let base = main.parent().unwrap_or(Path::new("/"));
    let mut walk = Walk::new(limits);
    let mut included: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for pattern in patterns {
        let full = base.join(pattern);
        let stop = |limit, included: BTreeMap<String, PathBuf>| IncludeError {
            pattern: pattern.clone(),
            limit,
            found: included.into_iter().collect(),
        };
        let mut cannot_read = Vec::new();
        let paths = match walk.glob(&full.to_string_lossy(), &mut cannot_read) {
            Ok(paths) => paths,
            Err(limit) => return Err(stop(limit, included)),
        };
        unreadable.extend(
            cannot_read.into_iter().map(|(path, e)| {
                format!("include {pattern:?}: cannot read {}: {e}", path.display())
            }),
        );
        for path in paths {
            // Directories (and dangling symlinks) are not config files; anything else that
            // matches is read, and refused there unless it is a regular file.
            if path == main || path.is_dir() || std::fs::metadata(&path).is_err() {
                continue;
            }
            let name = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            included.entry(name).or_insert(path);
            if let Err(limit) = walk.check_matches(included.len()) {
                return Err(stop(limit, included));
            }
        }
    }
    Ok(Includes {
        files: included.into_iter().collect(),
        unreadable,
    })
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
    check_permissions_writing(source, &BTreeSet::new())
}

/// [`check_permissions`] of a config some of whose files (`written`, by name) the daemon is
/// about to write itself (as its own user, never writable by others): for those, the
/// directories are checked, from the nearest one that exists up to `/`, and not the file.
pub fn check_permissions_writing(
    source: &ConfigSource,
    written: &BTreeSet<String>,
) -> Result<(), ConfigErrors> {
    let me = nix::unistd::geteuid().as_raw();
    let base = source.base_dir();
    let mut checked_dirs = BTreeSet::new();
    let mut errors = Vec::new();
    for f in &source.files {
        let path = base.join(&f.name);
        let mut problems = Vec::new();
        // A file the daemon writes: from the nearest existing directory above it (it may not
        // exist yet) up; any other file: itself, then the directories above it.
        let (checked, dirs_from) = if written.contains(&f.name) {
            let dir = path
                .ancestors()
                .skip(1)
                .find(|d| d.is_dir())
                .unwrap_or(base);
            (std::fs::canonicalize(dir), 0)
        } else {
            (std::fs::canonicalize(&path), 1)
        };
        match checked {
            Err(e) => problems.push(format!(
                "refused: cannot check who may write {}: {e}",
                path.display()
            )),
            Ok(real) => {
                if dirs_from == 1 {
                    problems.extend(check_node(&real, false, me, CONFIG_WHY, false));
                }
                for dir in real.ancestors().skip(dirs_from) {
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
    secure_source_writing(source, &BTreeSet::new())
}

/// [`secure_source`] with [`check_permissions_writing`]: for a candidate whose `written`
/// files the daemon is about to write.
pub fn secure_source_writing(
    source: ConfigSource,
    written: &BTreeSet<String>,
) -> Result<ConfigSource, ConfigErrors> {
    let Err(mut errors) = check_permissions_writing(&source, written) else {
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

    /// For every (glob, name): a replaced file not on disk is included exactly when the
    /// include walk finds it once written, so a candidate hashes as its files will.
    #[test]
    fn a_replaced_file_is_included_exactly_when_the_walk_finds_it_once_written() {
        let cases = [
            ("conf.d/*.yaml", "conf.d/a.yaml", true),
            ("conf.d/*.yaml", "conf.d/.a.yaml", false),
            ("conf.d/*.yaml", "conf.d/a.yml", false),
            ("conf.d/*.yaml", "conf.d/sub/a.yaml", false),
            ("conf.d/.*.yaml", "conf.d/.a.yaml", true),
            ("**/*.yaml", "deep/er/a.yaml", true),
            ("**/*.yaml", ".git/a.yaml", false),
            ("**/*.yaml", "x/.hidden/a.yaml", false),
            ("conf.d/a.yaml", "conf.d/a.yaml", true),
        ];
        for (glob, name, included) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let main = tmp.path().join("scriptd.yaml");
            let text = format!("include: [\"{glob}\"]\n");
            std::fs::write(&main, &text).expect("write");
            let replaced = BTreeMap::from([(name.to_owned(), "scripts: {}\n".to_owned())]);
            let read = read_source_with(&main, &replaced);
            assert_eq!(read.is_ok(), included, "{glob} {name}: {read:?}");
            let path = tmp.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, "scripts: {}\n").expect("write");
            let walked = read_source(&main).expect("reads");
            assert_eq!(
                walked.files.iter().any(|f| f.name == name),
                included,
                "{glob} {name}: the walk disagrees"
            );
            if let Ok(candidate) = read {
                assert_eq!(candidate.hash(), walked.hash(), "{glob} {name}");
            }
        }
    }
}

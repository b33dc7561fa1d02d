//! Finding the files an include glob matches, within [`IncludeLimits`]: the matches of
//! `glob::glob_with(pattern, INCLUDE_MATCH)` (each path component matched by
//! [`glob::Pattern`], `**` for any number of directories but never a dot-directory), except
//! that a component that spells a leading dot (`.*.yaml`) matches dotfiles, as
//! [`INCLUDE_MATCH`] says and the watcher matches, and never `.` or `..` (`.*/x.yaml` is not
//! `../x.yaml`). Every directory entry looked at is counted
//! and the clock checked, so that `/usr/**/*.yaml` or a symlink loop stops with an error
//! instead of walking for minutes; glob's iterator cannot be stopped between two matches.

use super::limits::IncludeLimits;
use super::load::INCLUDE_MATCH;
use glob::Pattern;
use std::path::PathBuf;
use std::time::Instant;

/// A limit of [`IncludeLimits`] was reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkLimit {
    /// More directory entries than [`IncludeLimits::entries`].
    #[error(
        "the include globs look at more than {0} directory entries (the limit); make them \
         narrower (`conf.d/*.yaml`, not `/usr/**/*.yaml`)"
    )]
    Entries(usize),
    /// Longer than [`IncludeLimits::time`].
    #[error(
        "the include globs take longer than {}s to walk (the limit); make them narrower, or \
         check the filesystem they walk",
        .0.as_secs_f64()
    )]
    Time(std::time::Duration),
    /// More matches than [`IncludeLimits::matches`].
    #[error(
        "the include globs match more than {0} files (the limit); make them narrower or \
         merge files"
    )]
    Matches(usize),
}

/// The walk of every include glob of one config: what it has used of its limits.
pub struct Walk {
    limits: IncludeLimits,
    started: Instant,
    entries: usize,
}

/// A directory that could not be read, with why.
pub type Unreadable = (PathBuf, std::io::Error);

impl Walk {
    /// A walk starting now.
    pub fn new(limits: IncludeLimits) -> Self {
        Self {
            limits,
            started: Instant::now(),
            entries: 0,
        }
    }

    /// Counts one directory entry looked at.
    fn visit(&mut self) -> Result<(), WalkLimit> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(WalkLimit::Entries(self.limits.entries));
        }
        if self.started.elapsed() > self.limits.time {
            return Err(WalkLimit::Time(self.limits.time));
        }
        Ok(())
    }

    /// Checks a number of matches against the limit.
    pub fn check_matches(&self, matches: usize) -> Result<(), WalkLimit> {
        if matches > self.limits.matches {
            return Err(WalkLimit::Matches(self.limits.matches));
        }
        Ok(())
    }

    /// The paths `pattern` (absolute) matches, directories included, in no particular order;
    /// directories that cannot be read go to `unreadable`. A malformed pattern matches
    /// nothing.
    pub fn glob(
        &mut self,
        pattern: &str,
        unreadable: &mut Vec<Unreadable>,
    ) -> Result<Vec<PathBuf>, WalkLimit> {
        let Some(glob) = Glob::new(pattern) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut todo = Vec::new();
        glob.fill(
            self,
            &mut todo,
            0,
            Node::new(PathBuf::from("/")),
            unreadable,
        )?;
        while let Some((node, mut idx)) = todo.pop() {
            if idx == MATCHED {
                if !glob.require_dir || node.is_dir {
                    out.push(node.path);
                }
                continue;
            }
            if glob.parts[idx].recursive {
                let mut last = idx;
                while last + 1 < glob.parts.len() && glob.parts[last + 1].recursive {
                    last += 1;
                }
                if node.is_dir {
                    glob.fill(self, &mut todo, last, node.clone(), unreadable)?;
                    if last == glob.parts.len() - 1 {
                        out.push(node.path);
                        continue;
                    }
                } else if last == glob.parts.len() - 1 {
                    continue;
                }
                idx = last + 1;
            }
            let Some(name) = node.path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if glob.parts[idx].pattern.matches_with(name, INCLUDE_MATCH) {
                if idx == glob.parts.len() - 1 {
                    if !glob.require_dir || node.is_dir {
                        out.push(node.path);
                    }
                } else {
                    glob.fill(self, &mut todo, idx + 1, node, unreadable)?;
                }
            }
        }
        Ok(out)
    }
}

/// Index of a node already known to match the whole glob.
const MATCHED: usize = usize::MAX;

#[derive(Clone)]
struct Node {
    path: PathBuf,
    is_dir: bool,
}

impl Node {
    fn new(path: PathBuf) -> Self {
        let is_dir = path.is_dir();
        Self { path, is_dir }
    }
}

/// One path component of a glob.
struct Part {
    pattern: Pattern,
    text: String,
    recursive: bool,
    literal: bool,
}

/// A glob split into components, as `glob::glob_with` splits it.
struct Glob {
    parts: Vec<Part>,
    /// A glob ending in `/` matches directories only.
    require_dir: bool,
}

impl Glob {
    fn new(pattern: &str) -> Option<Self> {
        Pattern::new(pattern).ok()?;
        let rest = pattern.trim_start_matches('/');
        let mut parts = Vec::new();
        for text in rest.split_terminator('/') {
            parts.push(Part {
                pattern: Pattern::new(text).ok()?,
                text: text.to_owned(),
                recursive: text == "**",
                literal: !text.contains(['*', '?', '[']),
            });
        }
        if parts.is_empty() {
            return None;
        }
        Some(Self {
            parts,
            require_dir: pattern.ends_with('/'),
        })
    }

    /// Pushes onto `todo` the entries of `node` that component `idx` may match (reading the
    /// directory for a wildcard; the one path for a literal, looked up at once).
    fn fill(
        &self,
        walk: &mut Walk,
        todo: &mut Vec<(Node, usize)>,
        idx: usize,
        node: Node,
        unreadable: &mut Vec<Unreadable>,
    ) -> Result<(), WalkLimit> {
        let part = &self.parts[idx];
        if part.literal {
            walk.visit()?;
            let special = part.text == "." || part.text == "..";
            let next = node.path.join(&part.text);
            let exists = || next.metadata().is_ok() || next.symlink_metadata().is_ok();
            if (special && node.is_dir) || (!special && exists()) {
                self.add(walk, todo, idx, Node::new(next), unreadable)?;
            }
            return Ok(());
        }
        if !node.is_dir {
            return Ok(());
        }
        let entries = match std::fs::read_dir(&node.path) {
            Ok(entries) => entries,
            Err(e) => {
                unreadable.push((node.path, e));
                return Ok(());
            }
        };
        for entry in entries {
            walk.visit()?;
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    unreadable.push((node.path.clone(), e));
                    continue;
                }
            };
            // Like a shell: no dotfiles unless the component spells the dot. (glob drops them
            // all, so that `conf.d/.*.yaml` matched nothing, unlike what the watcher matches.)
            let spells_dot = !part.recursive && part.text.starts_with('.');
            if !spells_dot && entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let path = entry.path();
            let is_dir = match entry.file_type() {
                Ok(t) if t.is_symlink() => path.is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => false,
            };
            todo.push((Node { path, is_dir }, idx));
        }
        Ok(())
    }

    /// `next` matched component `idx`: a match of the whole glob after the last component,
    /// else what the next component matches in it.
    fn add(
        &self,
        walk: &mut Walk,
        todo: &mut Vec<(Node, usize)>,
        idx: usize,
        next: Node,
        unreadable: &mut Vec<Unreadable>,
    ) -> Result<(), WalkLimit> {
        if idx + 1 == self.parts.len() {
            todo.push((next, MATCHED));
            Ok(())
        } else {
            self.fill(walk, todo, idx + 1, next, unreadable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limits::INCLUDE_LIMITS;
    use std::path::Path;
    use std::time::Duration;

    /// Sorted, each once: the walk's order is not glob's.
    fn sorted(mut v: Vec<PathBuf>) -> Vec<PathBuf> {
        v.sort();
        v.dedup();
        v
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "a.yaml",
            "b.yml",
            ".hidden.yaml",
            "conf.d/x.yaml",
            "conf.d/y.yaml",
            "conf.d/.swap.yaml",
            "conf.d/sub/z.yaml",
            "conf.d/sub/deeper/w.yaml",
            ".dot/q.yaml",
            "other/x.yaml",
            "other/x.yaml.d/inner.yaml",
            "[weird]/k.yaml",
        ] {
            let p = d.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        std::os::unix::fs::symlink(d.join("conf.d"), d.join("link.d")).unwrap();
        std::os::unix::fs::symlink(d.join("missing"), d.join("broken.yaml")).unwrap();
        dir
    }

    #[test]
    fn matches_what_glob_matches() {
        let dir = tree();
        let base = dir.path().to_str().unwrap();
        let patterns = [
            "*.yaml",
            "*",
            "*/",
            "*.y*ml",
            "conf.d/*.yaml",
            "**/*.yaml",
            "**",
            "**/",
            "conf.d/**/*.yaml",
            "conf.d/**/**/*.yaml",
            "*/*.yaml",
            "*/sub/*.yaml",
            "link.d/*.yaml",
            "l*/**/*.yaml",
            "conf.d/../*.yaml",
            "./a.yaml",
            "a.yaml",
            "missing/*.yaml",
            "conf.d/x.yaml/*",
            "[[]weird]/*.yaml",
            "?.yaml",
            "[ab].y*",
            "conf.d//x.yaml",
            "**/x.yaml/",
            "broken.yaml",
            "a**",
            "[",
        ];
        for p in patterns {
            let full = format!("{base}/{p}");
            let want: Vec<PathBuf> = match glob::glob_with(&full, INCLUDE_MATCH) {
                Ok(paths) => paths.filter_map(Result::ok).collect(),
                Err(_) => Vec::new(),
            };
            let got = Walk::new(INCLUDE_LIMITS)
                .glob(&full, &mut Vec::new())
                .unwrap();
            assert_eq!(sorted(got), sorted(want), "{p}");
        }
    }

    #[test]
    fn a_glob_that_spells_the_dot_matches_dotfiles() {
        let dir = tree();
        let base = dir.path().to_str().unwrap();
        let matches = |p: &str| {
            let mut got = Walk::new(INCLUDE_LIMITS)
                .glob(&format!("{base}/{p}"), &mut Vec::new())
                .unwrap();
            got.retain(|p| p.is_file());
            let mut names: Vec<String> = got
                .iter()
                .map(|p| p.strip_prefix(base).unwrap().display().to_string())
                .collect();
            names.sort();
            names
        };
        assert_eq!(matches("conf.d/.*.yaml"), ["conf.d/.swap.yaml"]);
        assert_eq!(matches(".*.yaml"), [".hidden.yaml"]);
        assert_eq!(matches(".*/*.yaml"), [".dot/q.yaml"], "not ./a.yaml");
        // `**` never enters a dot-directory.
        assert!(!matches("**/*.yaml").iter().any(|n| n.contains("/.")));
        // Each match agrees with the pattern as the watcher applies it.
        for p in ["conf.d/.*.yaml", ".*.yaml", ".*/*.yaml", "**/*.yaml"] {
            let pattern = Pattern::new(&format!("{base}/{p}")).unwrap();
            for name in matches(p) {
                let path = Path::new(base).join(&name);
                assert!(
                    pattern.matches_path_with(&path, INCLUDE_MATCH),
                    "{p}: {name}"
                );
            }
        }
    }

    #[test]
    fn stops_at_its_limits() {
        let dir = tree();
        let all = format!("{}/**/*", dir.path().display());
        let limits = |entries, time| IncludeLimits {
            matches: 1,
            entries,
            time,
        };
        let mut walk = Walk::new(limits(5, Duration::from_secs(60)));
        assert_eq!(walk.glob(&all, &mut Vec::new()), Err(WalkLimit::Entries(5)));
        let mut walk = Walk::new(limits(1000, Duration::ZERO));
        assert_eq!(
            walk.glob(&all, &mut Vec::new()),
            Err(WalkLimit::Time(Duration::ZERO))
        );
        let walk = Walk::new(limits(1000, Duration::from_secs(60)));
        assert_eq!(walk.check_matches(1), Ok(()));
        assert_eq!(walk.check_matches(2), Err(WalkLimit::Matches(1)));
    }

    #[test]
    fn a_symlink_loop_ends_at_the_entry_limit() {
        // The kernel's ELOOP ends it after 40 levels too; two loops make that 2^40 entries.
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop2")).unwrap();
        let all = format!("{}/**/*.yaml", dir.path().display());
        let mut walk = Walk::new(IncludeLimits {
            matches: 10,
            entries: 1000,
            time: Duration::from_secs(60),
        });
        assert_eq!(
            walk.glob(&all, &mut Vec::new()),
            Err(WalkLimit::Entries(1000))
        );
    }
}

//! A candidate: config files a caller sends (`ctl reload [--dry-run] --file TARGET=CANDIDATE`)
//! to be previewed, or written into place and applied, as the config would be with them in
//! place of the files on disk of those names.
//!
//! The daemon writes these files as root for a caller, so a target is checked twice: its
//! name here (pure: relative, no `..`, no absolute path; a malformed one is the caller's
//! usage error, refused before any attempt), and what sits at it when the config is read
//! ([`Candidate::read`]: no symlink, nothing but a regular file; the main file or a file the
//! new include globs match, like any config file, or the config is invalid).

use super::write_back::{write_candidate, Written};
use scriptd_common::config::{self, ConfigErrors, ConfigFile, ConfigSource};
use scriptd_common::proto;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A target that is not a path relative to the main file's directory, inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Empty, or only `.` and slashes.
    #[error("a --file TARGET must name a file (relative to the main file's directory)")]
    Empty,
    /// Starts with `/`.
    #[error(
        "--file target {0:?} is absolute; name it relative to the main file's directory \
         (the main file: its file name)"
    )]
    Absolute(String),
    /// Holds a `..` component.
    #[error(
        "--file target {0:?} has a `..` component; a target must stay inside the main \
         file's directory"
    )]
    Parent(String),
    /// Holds a NUL byte, which no path can.
    #[error("--file target {0:?} holds a NUL byte")]
    Nul(String),
    /// Named twice (after normalising).
    #[error("--file target {0:?} is given twice")]
    Twice(String),
}

/// The config file name a target names: relative, `.` components and repeated slashes
/// dropped (`./scripts.d//a.yaml` is `scripts.d/a.yaml`, the name the include walk gives).
pub fn target_name(target: &str) -> Result<String, TargetError> {
    if target.contains('\0') {
        return Err(TargetError::Nul(target.to_owned()));
    }
    if target.starts_with('/') {
        return Err(TargetError::Absolute(target.to_owned()));
    }
    let mut parts = Vec::new();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(TargetError::Parent(target.to_owned())),
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return Err(TargetError::Empty);
    }
    Ok(parts.join("/"))
}

/// Candidate files by config file name, as sent (their bytes are decoded when the config is
/// read, where a file too large or not UTF-8 is an error of that file like any other).
#[derive(Debug, Clone)]
pub struct Candidate {
    files: BTreeMap<String, Vec<u8>>,
}

impl Candidate {
    /// The candidate of a request's files; `None` when there are none.
    pub fn from_proto(files: Vec<proto::CandidateFile>) -> Result<Option<Self>, TargetError> {
        let mut out = BTreeMap::new();
        for f in files {
            let name = target_name(&f.path)?;
            if out.insert(name.clone(), f.content).is_some() {
                return Err(TargetError::Twice(name));
            }
        }
        Ok((!out.is_empty()).then_some(Self { files: out }))
    }

    /// Its one file (name and bytes); `None` when it has several.
    pub fn into_single(self) -> Option<(String, Vec<u8>)> {
        if self.files.len() != 1 {
            return None;
        }
        self.files.into_iter().next()
    }

    /// The names of the files it replaces.
    pub fn targets(&self) -> BTreeSet<String> {
        self.files.keys().cloned().collect()
    }

    /// The config at `main` as it would be with these files in place (blocking): read,
    /// permission-checked (for the targets, the directories they go to) and ready to
    /// validate, with every problem of a target as an error at that file.
    pub fn read(self, main: &Path) -> Result<ConfigSource, ConfigErrors> {
        let base = main.parent().unwrap_or(Path::new("/"));
        let written = self.targets();
        let mut texts = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, bytes) in self.files {
            if let Some(refusal) = refusal_at(&base.join(&name)) {
                errors.extend(ConfigErrors::file(&name, refusal).0);
            }
            match config::decode(&name, bytes) {
                Ok(text) => {
                    texts.insert(name, text);
                }
                Err(e) => errors.extend(ConfigErrors::file(&name, e.to_string()).0),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let source = config::read_source_with(main, &texts)?;
        config::secure_source_writing(source, &written)
    }
}

/// Why the daemon would not write a target at `path`: a symlink or something other than a
/// regular file sits there. `None` when it is a regular file or nothing.
fn refusal_at(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let t = meta.file_type();
    if t.is_symlink() {
        Some(format!(
            "refused: {} is a symbolic link, and scriptd does not write through a link for a \
             caller; name the file it points to, or replace the link with a file",
            path.display()
        ))
    } else if !t.is_file() {
        Some(format!(
            "refused: {} is not a regular file; config files must be regular files",
            path.display()
        ))
    } else {
        None
    }
}

/// Writes the files of `source` named in `targets` into place (blocking; see
/// [`write_candidate`]).
pub fn write(
    source: &ConfigSource,
    targets: &BTreeSet<String>,
) -> Result<Written, super::write_back::WriteBackError> {
    let files: Vec<ConfigFile> = source
        .files
        .iter()
        .filter(|f| targets.contains(&f.name))
        .cloned()
        .collect();
    write_candidate(source.base_dir(), &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names() {
        for (target, want) in [
            ("scriptd.yaml", Ok("scriptd.yaml")),
            ("./scriptd.yaml", Ok("scriptd.yaml")),
            ("scripts.d//a.yaml", Ok("scripts.d/a.yaml")),
            ("scripts.d/./a.yaml", Ok("scripts.d/a.yaml")),
            ("a/b/c.yaml/", Ok("a/b/c.yaml")),
            (".hidden.yaml", Ok(".hidden.yaml")),
            ("", Err(TargetError::Empty)),
            ("./", Err(TargetError::Empty)),
            (
                "/etc/scriptd/scriptd.yaml",
                Err(TargetError::Absolute("/etc/scriptd/scriptd.yaml".into())),
            ),
            ("../x.yaml", Err(TargetError::Parent("../x.yaml".into()))),
            (
                "scripts.d/../../x.yaml",
                Err(TargetError::Parent("scripts.d/../../x.yaml".into())),
            ),
            (
                "scripts.d/../a.yaml",
                Err(TargetError::Parent("scripts.d/../a.yaml".into())),
            ),
            ("a\0b", Err(TargetError::Nul("a\0b".into()))),
        ] {
            assert_eq!(target_name(target), want.map(str::to_owned), "{target:?}");
        }
    }

    proptest::proptest! {
        /// Whatever is asked, a name that comes out stays inside the main file's directory,
        /// is already normal, and is refused when it would climb out.
        #[test]
        fn a_target_name_never_leaves_the_directory(
            parts in proptest::collection::vec("(\\.\\.|\\.|[a-z.]{0,4}|)", 0..6),
            absolute: bool,
        ) {
            let target = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
            match target_name(&target) {
                Ok(name) => {
                    proptest::prop_assert!(!absolute);
                    proptest::prop_assert!(!name.starts_with('/'));
                    proptest::prop_assert!(name.split('/').all(|p| !matches!(p, "" | "." | "..")));
                    proptest::prop_assert_eq!(target_name(&name), Ok(name.clone()));
                }
                Err(TargetError::Parent(_)) => proptest::prop_assert!(parts.iter().any(|p| p == "..")),
                Err(_) => {}
            }
        }
    }

    fn file(path: &str, content: &str) -> proto::CandidateFile {
        proto::CandidateFile {
            path: path.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_target_named_twice_is_refused_and_no_files_is_no_candidate() {
        let e = Candidate::from_proto(vec![file("a.yaml", "x"), file("./a.yaml", "y")])
            .expect_err("twice");
        assert_eq!(e, TargetError::Twice("a.yaml".into()));
        assert!(Candidate::from_proto(Vec::new()).expect("empty").is_none());
    }

    #[test]
    fn reads_the_config_as_it_would_be_and_hashes_as_the_written_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let main = dir.join("scriptd.yaml");
        std::fs::write(&main, "scripts: {}\n").expect("write");
        let candidate = Candidate::from_proto(vec![
            file(
                "scriptd.yaml",
                "include: [\"conf.d/*.yaml\"]\nscripts: {}\n",
            ),
            file("conf.d/new.yaml", "scripts: {}\n"),
        ])
        .expect("targets")
        .expect("a candidate");
        let targets = candidate.targets();
        let source = candidate.read(&main).expect("reads");
        let names: Vec<&str> = source.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["scriptd.yaml", "conf.d/new.yaml"]);
        assert_eq!(
            std::fs::read_to_string(&main).expect("read"),
            "scripts: {}\n",
            "reading writes nothing"
        );

        let written = write(&source, &targets).expect("written");
        assert!(!written.is_empty());
        let on_disk = config::read_source(&main).expect("reads");
        assert_eq!(on_disk.hash(), source.hash(), "plan ids agree");

        written.undo().expect("put back");
        assert_eq!(
            std::fs::read_to_string(&main).expect("read"),
            "scripts: {}\n"
        );
        assert!(
            !dir.join("conf.d/new.yaml").exists(),
            "a new file is removed"
        );
    }

    #[test]
    fn a_file_no_glob_matches_a_symlink_or_bad_bytes_is_an_error_of_that_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let main = dir.join("scriptd.yaml");
        std::fs::write(&main, "include: [\"conf.d/*.yaml\"]\nscripts: {}\n").expect("write");
        std::fs::create_dir(dir.join("conf.d")).expect("mkdir");
        std::os::unix::fs::symlink(&main, dir.join("conf.d/link.yaml")).expect("symlink");
        let candidate = Candidate::from_proto(vec![
            file("conf.d/a.yml", "scripts: {}\n"),
            file("conf.d/link.yaml", "scripts: {}\n"),
        ])
        .expect("targets")
        .expect("a candidate");
        let e = candidate.read(&main).expect_err("refused");
        assert_eq!(e.0.len(), 1, "{e:?}");
        assert_eq!(e.0[0].file, "conf.d/link.yaml");
        assert!(e.0[0].message.contains("symbolic link"), "{e:?}");

        let candidate = Candidate::from_proto(vec![file("conf.d/a.yml", "scripts: {}\n")])
            .expect("targets")
            .expect("a candidate");
        let e = candidate.read(&main).expect_err("not included");
        assert_eq!(e.0[0].file, "conf.d/a.yml");
        assert!(e.0[0].message.contains("not part of the config"), "{e:?}");

        let candidate = Candidate::from_proto(vec![proto::CandidateFile {
            path: "scriptd.yaml".into(),
            content: vec![b'a', 0xff],
        }])
        .expect("targets")
        .expect("a candidate");
        let e = candidate.read(&main).expect_err("not UTF-8");
        assert!(e.0[0].message.contains("UTF-8"), "{e:?}");
    }

    #[test]
    fn a_symlink_is_never_written_through() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        std::fs::write(dir.join("victim"), "keep\n").expect("write");
        std::os::unix::fs::symlink(dir.join("victim"), dir.join("scriptd.yaml")).expect("link");
        let files = [ConfigFile {
            name: "scriptd.yaml".into(),
            content: "scripts: {}\n".into(),
        }];
        let e = write_candidate(dir, &files).expect_err("refused");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("victim")).expect("read"),
            "keep\n"
        );
    }
}

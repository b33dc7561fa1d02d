//! Writing config files into place, each atomically (a fsynced temp file beside it, renamed
//! over it): a rolled-back version's files ([`write_back`]), so disk, runtime and history
//! agree, and a candidate's files ([`write_candidate`]), which can be put back as they were
//! ([`Written::undo`]). Blocking: run them on a blocking thread.

use crate::nofollow::{self, OpenError};
use scriptd_common::config::{self, ConfigFile, ConfigSource};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why files could not be written: the path and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteBackError {
    path: PathBuf,
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> WriteBackError + '_ {
    move |source| WriteBackError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a version's files back to disk; `false` when the disk already holds exactly
/// those files. In three steps, so that a failure in the first (the likely one: no space,
/// no permission) leaves the disk as it was:
/// 1. every file is written to a temp file beside its target and fsynced;
/// 2. each temp file is renamed over its target (a symlinked file is written through its
///    link), then the directories are fsynced;
/// 3. config files the version does not have are removed: every file that an include glob of
///    the version's main file, or of the main file on disk before step 2 (best effort: its
///    globs even when the rest of it does not parse), matches.
pub fn write_back(main: &Path, source: &ConfigSource) -> Result<bool, WriteBackError> {
    if config::read_source(main).is_ok_and(|s| s.files == source.files) {
        return Ok(false);
    }
    let base = source.base_dir();
    let mut patterns = config::read_text(main)
        .map(|text| config::include_patterns(&text))
        .unwrap_or_default();
    if let Some(target_main) = source.files.first() {
        patterns.extend(config::include_patterns(&target_main.content));
    }
    let stale: Vec<(String, PathBuf)> = config::include_matches(main, &patterns)
        .into_iter()
        .filter(|(name, _)| !source.files.iter().any(|f| f.name == *name))
        .collect();

    // A temp file that is dropped before it is persisted is removed: a failure anywhere in
    // step 1 or 2 leaves no temp file behind.
    let staged = source
        .files
        .iter()
        .map(|file| {
            use std::os::unix::fs::PermissionsExt;
            // Written through a symlink (a ConfigMap's `..data`): the version's files are
            // what the config reads through it.
            let link = base.join(&file.name);
            let path = std::fs::canonicalize(&link).unwrap_or(link);
            let mode = std::fs::metadata(&path).map_or(NEW_FILE_MODE, |m| m.permissions().mode());
            stage(&path, file.content.as_bytes(), mode, "rollback")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut dirs = BTreeSet::new();
    for (tmp, path) in staged {
        persist(tmp, &path, &mut dirs)?;
    }
    for (name, path) in &stale {
        tracing::info!(file = %name, "rollback: removing a config file the restored version does not have");
        remove(path, &mut dirs)?;
    }
    sync_dirs(&dirs)?;
    Ok(true)
}

/// The mode of a config file that did not exist before (whatever the umask).
const NEW_FILE_MODE: u32 = 0o644;

/// A file's bytes and mode before it was replaced.
type Before = (Vec<u8>, u32);

/// What [`write_candidate`] replaced, to put it back with [`Written::undo`].
#[derive(Debug, Default)]
pub struct Written {
    /// Each file written, with what was there before (nothing: it did not exist).
    previous: Vec<(PathBuf, Option<Before>)>,
}

impl Written {
    /// Whether anything was written (files that already held their content are not).
    pub fn is_empty(&self) -> bool {
        self.previous.is_empty()
    }

    /// Puts every file written back as it was (the same way: temp file, fsync, rename), and
    /// removes the ones that did not exist. Directories created for them stay.
    pub fn undo(self) -> Result<(), WriteBackError> {
        let mut dirs = BTreeSet::new();
        let mut first_error = None;
        for (path, before) in self.previous {
            let put_back = match before {
                Some((bytes, mode)) => stage(&path, &bytes, mode, "candidate")
                    .and_then(|(tmp, path)| persist(tmp, &path, &mut dirs)),
                None => remove(&path, &mut dirs),
            };
            // Every file is tried; the first failure is reported.
            if let Err(e) = put_back {
                first_error.get_or_insert(e);
            }
        }
        let synced = sync_dirs(&dirs);
        match first_error {
            Some(e) => Err(e),
            None => synced,
        }
    }
}

/// Writes a candidate's `files` (names relative to `base`, the main file's directory) into
/// place: never through a symlink at a file's name (the rename replaces whatever sits there;
/// a symlink or anything but a regular file found there is refused before anything is
/// written), each file keeping the mode of the one it replaces (never writable by group or
/// others). Files that already hold their content are left alone. All are staged first, so
/// a failure to stage (no space, no permission) changes nothing; a failure to rename puts
/// back the ones already renamed. Returns what was replaced, for [`Written::undo`].
pub fn write_candidate(base: &Path, files: &[ConfigFile]) -> Result<Written, WriteBackError> {
    use std::os::unix::fs::PermissionsExt;
    let mut staged = Vec::new();
    let mut previous = Vec::new();
    for file in files {
        let path = base.join(&file.name);
        let before = match nofollow::open_regular(&path, std::fs::OpenOptions::new().read(true)) {
            Ok(mut f) => {
                let mode = f.metadata().map_err(at(&path))?.permissions().mode();
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(at(&path))?;
                Some((bytes, mode))
            }
            Err(OpenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            Err(e) => return Err(refused(&path, e)),
        };
        if before
            .as_ref()
            .is_some_and(|(bytes, _)| bytes == file.content.as_bytes())
        {
            continue;
        }
        let mode = before.as_ref().map_or(NEW_FILE_MODE, |(_, mode)| *mode);
        staged.push(stage(&path, file.content.as_bytes(), mode, "candidate")?);
        previous.push((path, before));
    }
    let mut dirs = BTreeSet::new();
    let mut written = Written::default();
    let mut previous = previous.into_iter();
    for (tmp, path) in staged {
        if let Err(e) = persist(tmp, &path, &mut dirs) {
            if let Err(undo) = written.undo() {
                tracing::error!("putting back the candidate files written so far failed: {undo}");
            }
            return Err(e);
        }
        written.previous.extend(previous.next());
    }
    sync_dirs(&dirs)?;
    Ok(written)
}

/// A file that [`nofollow::open_regular`] refused, said for a config file.
fn refused(path: &Path, e: OpenError) -> WriteBackError {
    let message = match e {
        OpenError::Symlink(_) => "it is a symbolic link, and scriptd does not write through \
                                  a link for a caller: name the file it points to, or \
                                  replace the link with a file"
            .to_owned(),
        OpenError::NotRegular { kind, .. } => {
            format!("it is a {kind}, not a regular file; remove it or name another file")
        }
        OpenError::Io { source, .. } => source.to_string(),
    };
    WriteBackError {
        path: path.to_path_buf(),
        source: std::io::Error::other(message),
    }
}

/// `content` in a fsynced temp file beside `path`, the file it replaces
/// (`.NAME.XXXXXX.scriptd-WHY`, never matched by an include glob), with `mode` but never
/// writable by group or others (the daemon would refuse it); returns (temp file, `path`).
/// A temp file dropped before it is persisted is removed.
fn stage(
    path: &Path,
    content: &[u8],
    mode: u32,
    why: &str,
) -> Result<(tempfile::NamedTempFile, PathBuf), WriteBackError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mode = mode & 0o7777 & !0o022;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(&format!(".scriptd-{why}"))
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(at(dir))?;
    let written = (|| {
        // The umask may have narrowed the mode at creation.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.write_all(content)?;
        tmp.as_file().sync_all()
    })();
    written.map_err(at(tmp.path()))?;
    Ok((tmp, path.to_path_buf()))
}

/// Renames a staged temp file over `path` (replacing whatever sits at the name, a symlink
/// included, without following it); its directory goes to `dirs` to be synced.
fn persist(
    tmp: tempfile::NamedTempFile,
    path: &Path,
    dirs: &mut BTreeSet<PathBuf>,
) -> Result<(), WriteBackError> {
    tmp.persist(path).map_err(|e| at(path)(e.error))?;
    dirs.insert(path.parent().unwrap_or(Path::new("/")).to_path_buf());
    Ok(())
}

/// Removes the file at `path`; its directory goes to `dirs` to be synced.
fn remove(path: &Path, dirs: &mut BTreeSet<PathBuf>) -> Result<(), WriteBackError> {
    std::fs::remove_file(path).map_err(at(path))?;
    dirs.insert(path.parent().unwrap_or(Path::new("/")).to_path_buf());
    Ok(())
}

/// Fsyncs each directory, so the renames and removals in them last.
fn sync_dirs(dirs: &BTreeSet<PathBuf>) -> Result<(), WriteBackError> {
    for dir in dirs {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn source(dir: &Path, files: &[(&str, &str)]) -> ConfigSource {
        ConfigSource::of_texts(dir.join("scriptd.yaml"), files)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_the_files_keeps_modes_removes_stale_includes_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        std::fs::write(dir.join("scriptd.yaml"), "include: [\"conf.d/*.yaml\"]\n").expect("w");
        std::fs::set_permissions(
            dir.join("scriptd.yaml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        std::fs::create_dir(dir.join("conf.d")).expect("mkdir");
        std::fs::write(dir.join("conf.d/later.yaml"), "scripts: {}\n").expect("w");

        let v = source(dir, &[("scriptd.yaml", "scripts: {}\n")]);
        assert!(write_back(&dir.join("scriptd.yaml"), &v).expect("written"));
        assert_eq!(
            std::fs::read_to_string(dir.join("scriptd.yaml")).expect("read"),
            "scripts: {}\n"
        );
        let mode = std::fs::metadata(dir.join("scriptd.yaml"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a private file stays private");
        assert_eq!(names(dir), ["conf.d", "scriptd.yaml"], "no temp file left");
        assert!(
            names(&dir.join("conf.d")).is_empty(),
            "the stale include went"
        );
        assert!(
            !write_back(&dir.join("scriptd.yaml"), &v).expect("nothing to do"),
            "the disk holds the files already"
        );
    }

    #[test]
    fn a_file_that_cannot_be_staged_changes_nothing_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        std::fs::write(dir.join("scriptd.yaml"), "scripts: {}\n").expect("w");
        // The include's directory cannot be created: a file is where it should be.
        std::fs::write(dir.join("conf.d"), "not a directory").expect("w");
        let v = source(
            dir,
            &[
                ("scriptd.yaml", "include: [\"conf.d/*.yaml\"]\n"),
                ("conf.d/a.yaml", "scripts: {}\n"),
            ],
        );
        let e = write_back(&dir.join("scriptd.yaml"), &v).expect_err("cannot stage");
        assert!(e.to_string().contains("conf.d"), "{e}");
        assert_eq!(
            std::fs::read_to_string(dir.join("scriptd.yaml")).expect("read"),
            "scripts: {}\n",
            "the main file is as it was"
        );
        assert_eq!(names(dir), ["conf.d", "scriptd.yaml"], "no temp file left");
    }
}

//! Writing a rolled-back version's files to disk, so disk, runtime and history agree.
//! Blocking: run it on a blocking thread.

use scriptd_common::config::{self, ConfigFile, ConfigSource};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why a rollback's files could not be written back: the path and the OS error.
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
        .map(|file| stage(base, file))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dirs = BTreeSet::new();
    for (tmp, path) in staged {
        tmp.persist(&path).map_err(|e| at(&path)(e.error))?;
        dirs.insert(path.parent().unwrap_or(base).to_path_buf());
    }
    for (name, path) in &stale {
        tracing::info!(file = %name, "rollback: removing a config file the restored version does not have");
        std::fs::remove_file(path).map_err(at(path))?;
        dirs.insert(path.parent().unwrap_or(base).to_path_buf());
    }
    for dir in &dirs {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at(dir))?;
    }
    Ok(true)
}

/// Step 1 of [`write_back`] for one file: its content in a fsynced temp file beside the file
/// it replaces (`.NAME.XXXXXX.scriptd-rollback`, never matched by an include glob); returns
/// (temp file, target).
fn stage(
    base: &Path,
    file: &ConfigFile,
) -> Result<(tempfile::NamedTempFile, PathBuf), WriteBackError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let link = base.join(&file.name);
    let path = std::fs::canonicalize(&link).unwrap_or(link);
    let dir = path.parent().unwrap_or(base);
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Keep the replaced file's mode (a private config stays private); a new file gets 0644
    // whatever the umask. Never group/other-writable: the daemon would refuse it.
    let mode = std::fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777) & !0o022;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".scriptd-rollback")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(at(dir))?;
    let written = (|| {
        // The umask may have narrowed the mode at creation.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.write_all(file.content.as_bytes())?;
        tmp.as_file().sync_all()
    })();
    written.map_err(at(tmp.path()))?;
    Ok((tmp, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn source(dir: &Path, files: &[(&str, &str)]) -> ConfigSource {
        ConfigSource {
            main: dir.join("scriptd.yaml"),
            files: files
                .iter()
                .map(|(name, content)| ConfigFile {
                    name: (*name).into(),
                    content: (*content).into(),
                })
                .collect(),
        }
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

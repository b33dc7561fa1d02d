//! Where a script's log files are (`NAME.log`, `NAME.log.1` … ) and how they are opened.
//!
//! The daemon runs as root and `log_dir` may be writable by others: whatever is found under a
//! log file's name is opened with `O_NOFOLLOW` (a symlink planted there fails the open
//! instead of sending root's writes, or a client's backlog read, to its target) and
//! `O_NONBLOCK` (a FIFO planted there cannot hang the open), and must then be a regular
//! file. Rotation renames and removes directory entries, which never follow a symlink
//! either: a link planted at `NAME.log.1` is replaced or moved, its target never touched.

use crate::nofollow::open_regular;
pub(super) use crate::nofollow::OpenError;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Opens (creating it if needed) a log file to append to, and to read its last byte.
pub(super) fn open_append(path: &Path) -> Result<File, OpenError> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true).read(true);
    open_regular(path, &opts)
}

/// Opens a log file to read it.
pub(super) fn open_read(path: &Path) -> Result<File, OpenError> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    open_regular(path, &opts)
}

/// Path of a script's log file.
pub fn log_path(dir: &Path, script: &str) -> PathBuf {
    dir.join(format!("{script}.log"))
}

/// Path of the `i`th rotated file (`NAME.log.i`).
pub(super) fn rotated_path(path: &Path, i: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{i}"));
    PathBuf::from(p)
}

/// True when a directory entry exists at `path` (a symlink counts; it is not followed).
fn entry_exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// The rotated files and the current one, oldest first (only those that exist).
pub(super) fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|i| rotated_path(path, i))
        .take_while(|p| entry_exists(p))
        .take(10_000)
        .collect();
    files.reverse();
    if entry_exists(path) {
        files.push(path.to_path_buf());
    }
    files
}

/// Opens the log files to read them, oldest first. What cannot be opened is left out; a
/// refusal (a symlink or a special file at a log file's name) is said in the daemon log.
pub(super) fn open_all_read(path: &Path) -> Vec<File> {
    log_files(path)
        .iter()
        .filter_map(|p| match open_read(p) {
            Ok(f) => Some(f),
            Err(e @ (OpenError::Symlink(_) | OpenError::NotRegular { .. })) => {
                tracing::warn!("log backlog: {e}");
                None
            }
            Err(_) => None, // gone meanwhile (rotated away)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn symlinks_and_special_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret\n").expect("victim");
        let link = dir.path().join("s.log");
        std::os::unix::fs::symlink(&victim, &link).expect("symlink");
        let err = open_append(&link).expect_err("a symlink is refused");
        assert!(matches!(err, OpenError::Symlink(_)), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(matches!(open_read(&link), Err(OpenError::Symlink(_))));
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret\n");

        let fifo = dir.path().join("f.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let err = open_read(&fifo).expect_err("a FIFO is refused");
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert!(open_append(&fifo).is_err());
        let err = open_append(dir.path()).expect_err("a directory is refused");
        assert!(err.to_string().contains("directory"), "{err}");

        let file = dir.path().join("ok.log");
        let mut f = open_append(&file).expect("a new file is created");
        f.write_all(b"x\n").expect("write");
        assert!(open_read(&file).is_ok());
    }

    #[test]
    fn the_file_list_sees_links_without_following_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), "s");
        std::fs::write(&path, "").expect("current");
        std::os::unix::fs::symlink("/nonexistent", rotated_path(&path, 1)).expect("link");
        std::fs::write(rotated_path(&path, 2), "").expect(".2");
        assert_eq!(
            log_files(&path),
            vec![rotated_path(&path, 2), rotated_path(&path, 1), path.clone()]
        );
        assert_eq!(open_all_read(&path).len(), 2);
    }
}

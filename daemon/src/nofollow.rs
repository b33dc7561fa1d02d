//! Opening a file in a directory others might have planted things in, as root: whatever is
//! found under the name is opened with `O_NOFOLLOW` (a symlink planted there fails the open
//! instead of sending root's writes to its target) and `O_NONBLOCK` (a FIFO planted there
//! cannot hang the open), and must then be a regular file. Used for the log files (whose
//! wording the messages below have) and the lock files (which word their own refusals).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A symbolic link sits at the file's name.
    #[error(
        "refusing to open {}: it is a symbolic link, and the daemon never follows one in \
         log_dir (remove it; the daemon creates the file itself)",
        .0.display()
    )]
    Symlink(PathBuf),
    /// Something other than a regular file sits at the file's name.
    #[error(
        "refusing to open {}: it is not a regular file but a {kind} (remove it; the daemon \
         creates the file itself)",
        .path.display()
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The open itself failed.
    #[error("cannot open {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Opens `path` with `opts` plus `O_NOFOLLOW | O_NONBLOCK` (std adds `O_CLOEXEC`), and
/// refuses anything but a regular file.
pub fn open_regular(path: &Path, opts: &OpenOptions) -> Result<File, OpenError> {
    let mut opts = opts.clone();
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::Symlink(path.to_owned()))
        }
        Err(source) => {
            return Err(OpenError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let meta = file.metadata().map_err(|source| OpenError::Io {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_file() {
        return Ok(file);
    }
    Err(OpenError::NotRegular {
        path: path.to_owned(),
        kind: kind_of(&meta.file_type()),
    })
}

/// What a file that is not a regular file is, in words ("FIFO", "directory").
pub fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

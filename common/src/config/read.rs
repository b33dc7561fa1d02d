//! Reading one config file without trusting what sits at its path: only a regular file on
//! a real filesystem is read, never more than [`MAX_FILE_BYTES`], and opening it never
//! blocks (a FIFO would wait for a writer, a device or `/proc/kmsg` for data forever).

use super::limits::MAX_FILE_BYTES;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a config file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, inspecting or reading it failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A FIFO, device, socket or directory.
    #[error(
        "refused {path}: it is a {kind}, not a regular file; config files must be regular files"
    )]
    NotRegular {
        /// The file.
        path: String,
        /// `FIFO`, `character device`, ...
        kind: &'static str,
    },
    /// A file of `/proc`, `/sys` or another kernel filesystem, whose reads have effects or
    /// never end.
    #[error(
        "refused {path}: it is on {fs}, a kernel filesystem whose files are not config; \
         config files must be on a real filesystem"
    )]
    KernelFs {
        /// The file.
        path: String,
        /// `procfs`, `sysfs`, ...
        fs: &'static str,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error(
        "refused {path}: larger than {} MiB, the limit for one config file; split it or \
         check that the include glob matches only config files",
        MAX_FILE_BYTES >> 20
    )]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Not UTF-8.
    #[error("not valid UTF-8 (byte {byte}); save it as UTF-8")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        byte: usize,
    },
}

/// The text of the config file at `path`: opened without blocking, refused unless it is a regular file outside the kernel filesystems,
/// and at most [`MAX_FILE_BYTES`] long.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let shown = || path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown(),
        source,
    };
    // Looked at before opening (opening a device can have effects: `/dev/watchdog` arms the
    // watchdog), and again through the opened file, which is what is read.
    let refusal = |t: std::fs::FileType, fs: nix::sys::statfs::FsType| {
        if let Some(kind) = not_regular(t) {
            Some(ReadError::NotRegular {
                path: shown(),
                kind,
            })
        } else {
            kernel_fs(fs).map(|fs| ReadError::KernelFs { path: shown(), fs })
        }
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let fs = nix::sys::statfs::statfs(path).map_err(|e| io(e.into()))?;
    if let Some(e) = refusal(meta.file_type(), fs.filesystem_type()) {
        return Err(e);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(open_flags())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| io(e.into()))?;
    if let Some(e) = refusal(meta.file_type(), fs.filesystem_type()) {
        return Err(e);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge { path: shown() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the limit too.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    decode(&shown(), bytes)
}

/// The text of a config file whose bytes came from elsewhere (a candidate sent by `ctl`),
/// held to what [`read_text`] holds a file to: at most [`MAX_FILE_BYTES`], UTF-8 (kept as
/// it is, a byte-order mark included, so that it hashes as the file written from it will).
pub fn decode(path: &str, bytes: Vec<u8>) -> Result<String, ReadError> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
        byte: e.utf8_error().valid_up_to(),
    })
}

/// `O_NONBLOCK`: a FIFO put in place after the first look opens at once, to be refused;
/// `O_NOCTTY`: a terminal never becomes the daemon's. Symlinks are followed (a ConfigMap's
/// `..data`).
fn open_flags() -> i32 {
    use nix::fcntl::OFlag;
    (OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits()
}

/// What a file that is not a regular file is, for the error.
fn not_regular(t: std::fs::FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("directory")
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// The name of a kernel filesystem (whose regular-looking files are interfaces, not data).
fn kernel_fs(t: nix::sys::statfs::FsType) -> Option<&'static str> {
    use nix::sys::statfs as fs;
    let known = [
        (fs::PROC_SUPER_MAGIC, "procfs (/proc)"),
        (fs::SYSFS_MAGIC, "sysfs (/sys)"),
        (fs::DEBUGFS_MAGIC, "debugfs"),
        (fs::TRACEFS_MAGIC, "tracefs"),
        (fs::SECURITYFS_MAGIC, "securityfs"),
        (fs::CGROUP_SUPER_MAGIC, "cgroupfs"),
        (fs::CGROUP2_SUPER_MAGIC, "cgroup2fs"),
        (fs::DEVPTS_SUPER_MAGIC, "devpts"),
        (fs::BPF_FS_MAGIC, "bpffs"),
        (fs::SELINUX_MAGIC, "selinuxfs"),
        (fs::SMACK_MAGIC, "smackfs"),
    ];
    known
        .into_iter()
        .find(|(m, _)| *m == t)
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_text(&fifo).unwrap_err();
        assert!(
            e.to_string().contains("it is a FIFO, not a regular file"),
            "{e}"
        );
        let e = read_text(dir.path()).unwrap_err();
        assert!(e.to_string().contains("it is a directory"), "{e}");
        let e = read_text(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
    }

    #[test]
    fn refuses_kernel_filesystems() {
        let e = read_text(Path::new("/proc/self/status")).unwrap_err();
        assert!(e.to_string().contains("procfs (/proc)"), "{e}");
        let e = read_text(Path::new("/sys/kernel/uevent_seqnum")).unwrap_err();
        assert!(e.to_string().contains("sysfs (/sys)"), "{e}");
    }

    #[test]
    fn reads_at_most_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = read_text(&path).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert!(read_text(&path).is_ok());
    }
}

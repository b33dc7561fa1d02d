//! The config file watcher.
//!
//! notify watches the main file's directory and every include directory (not the files:
//! editors replace files by renaming, and a Kubernetes ConfigMap swaps a `..data` symlink).
//! Its callback never blocks: it only `try_send`s into a bounded channel. The watcher task
//! opens a debounce window at the first relevant event, waits until every file written in
//! the window was closed again (so a file is read only once complete), then asks the
//! coordinator for a reload and waits for it, so reloads never overlap and a burst of saves
//! ends with the last content running.

use crate::reload::{Request, Source};
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest wait for a file that was written to be closed before reading it anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// One relevant file-system change.
#[derive(Debug)]
struct Touch {
    path: PathBuf,
    /// Data was written and the file is (as far as we know) still open for writing.
    open: bool,
}

/// What the watcher needs to know about the config layout.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Absolute path of the main file.
    pub main: PathBuf,
    /// Include globs, as written (relative to the main file's directory).
    pub include: Vec<String>,
}

impl Layout {
    fn base(&self) -> &Path {
        self.main.parent().unwrap_or(Path::new("/"))
    }

    /// Directories to watch: the main file's and each include glob's fixed prefix.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.base().to_path_buf()];
        for pattern in &self.include {
            let full = self.base().join(pattern);
            let mut dir = PathBuf::new();
            for comp in full.components() {
                let s = comp.as_os_str().to_string_lossy();
                if s.contains(['*', '?', '[']) {
                    break;
                }
                dir.push(comp);
            }
            // The last fixed component may be the file itself.
            if dir == full {
                dir.pop();
            }
            if dir.is_dir() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// Whether a changed path can affect the config.
    fn relevant(&self, path: &Path) -> bool {
        if path == self.main {
            return true;
        }
        // Kubernetes ConfigMap volumes swap `..data` / `..2024_...` entries.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        {
            return true;
        }
        self.include.iter().any(|p| {
            glob::Pattern::new(&self.base().join(p).to_string_lossy())
                .is_ok_and(|g| g.matches_path(path))
        })
    }
}

/// A regular file of length 0 (following symlinks).
fn empty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Runs the watcher until `cancel`. `layout` is re-read after every reload so new include
/// directories are watched.
pub async fn run(
    layout: Layout,
    debounce: Duration,
    reloads: mpsc::Sender<Request>,
    cancel: CancellationToken,
    layout_of: impl Fn() -> Layout,
) {
    let (tx, mut rx) = mpsc::channel::<Touch>(1024);
    let filter = layout.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Written data or a new file: open until its IN_CLOSE_WRITE arrives. A rename into
        // place, a removal or a new directory (a ConfigMap's `..2026_...`, never "closed")
        // is complete at once.
        let open = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Data(_))
                | EventKind::Create(CreateKind::File | CreateKind::Any | CreateKind::Other)
        );
        let renamed = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Any)
                | EventKind::Remove(_)
                | EventKind::Create(CreateKind::Folder)
        );
        let closed = matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        if !(open || closed || renamed) {
            return;
        }
        for path in event.paths {
            if filter.relevant(&path) {
                // Full channel: a reload is pending anyway; dropping is fine.
                let _ = tx.try_send(Touch { path, open });
            }
        }
    };
    let mut watcher = match RecommendedWatcher::new(handler, notify::Config::default()) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot start the file watcher: {e}; use `ctl reload` or SIGHUP");
            return;
        }
    };
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut rewatch = |watcher: &mut RecommendedWatcher, layout: &Layout| {
        for dir in layout.dirs() {
            if watched.contains(&dir) {
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    watched.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
            }
        }
    };
    rewatch(&mut watcher, &layout);

    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            t = rx.recv() => match t { Some(t) => t, None => return },
        };
        let mut open: HashSet<PathBuf> = HashSet::new();
        // Config files touched in this window.
        let mut touched: HashSet<PathBuf> = HashSet::new();
        let note = |t: Touch, open: &mut HashSet<PathBuf>, touched: &mut HashSet<PathBuf>| {
            if layout.relevant(&t.path) {
                touched.insert(t.path.clone());
            }
            if t.open {
                open.insert(t.path);
            } else {
                open.remove(&t.path);
            }
        };
        note(first, &mut open, &mut touched);
        // The window opens at the first event.
        let window = tokio::time::sleep(debounce);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = &mut window => break,
                Some(t) = rx.recv() => note(t, &mut open, &mut touched),
            }
        }
        // Wait (bounded) for files written in the window to be closed again, and for a
        // touched config file that is empty now to be written: an editor that truncates and
        // writes in two opens leaves it empty in between, and an empty included file would
        // remove its scripts. One that stays empty is read after the bound.
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        while !open.is_empty() || touched.iter().any(|p| empty_file(p)) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                Some(t) = rx.recv() => note(t, &mut open, &mut touched),
            }
        }
        let (reply, done) = oneshot::channel();
        let req = Request {
            reply: Some(reply),
            ..Request::new(Source::Watch)
        };
        if reloads.send(req).await.is_err() {
            return;
        }
        let _ = done.await;
        rewatch(&mut watcher, &layout_of());
    }
}

//! The config file watcher.
//!
//! notify watches the main file's directory and every include directory (not the files:
//! editors replace files by renaming, and a Kubernetes ConfigMap swaps a `..data` symlink).
//! An include directory that does not exist yet is watched through its nearest existing
//! ancestor, so its creation is seen. Its callback never blocks: it only `try_send`s into a
//! bounded channel. The watcher task opens a debounce window at the first relevant event,
//! waits until every file written in the window was closed again (so a file is read only
//! once complete), then asks the coordinator for a reload and waits for it, so reloads never
//! overlap and a burst of saves ends with the last content running.
//!
//! After every reload the layout (the include globs of the main file on disk) is read again
//! and shared with the callback, so a glob added by a reload is watched and filtered on at
//! once. A newly watched directory may have received files before its watch existed: the
//! watcher then reloads once more (a save that changed nothing is harmless: it hashes the
//! same as the running version). An inotify queue overflow or a notify error is treated the
//! same way, as a touch of the main file: everything is read again.

use crate::reload::{Prevalidated, Request, Source, Validations};
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use scriptd_common::config;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Absolute path of the main file.
    main: PathBuf,
    /// Include globs made absolute (joined to the main file's directory).
    patterns: Vec<glob::Pattern>,
    /// The fixed directory part of each include glob, existing or not.
    include_dirs: Vec<PathBuf>,
}

impl Layout {
    /// The layout of a main file at `main` (absolute) whose `include` holds `include`.
    /// Malformed globs are left out (validation reports them).
    pub fn new(main: PathBuf, include: &[String]) -> Self {
        let base = main.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut patterns = Vec::new();
        let mut include_dirs = Vec::new();
        for pattern in include {
            let full = base.join(pattern);
            if let Ok(p) = glob::Pattern::new(&full.to_string_lossy()) {
                patterns.push(p);
            }
            let mut dir = PathBuf::new();
            for comp in full.components() {
                if comp.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                    break;
                }
                dir.push(comp);
            }
            // The last fixed component may be the file itself.
            if dir == full {
                dir.pop();
            }
            if !include_dirs.contains(&dir) {
                include_dirs.push(dir);
            }
        }
        Self {
            main,
            patterns,
            include_dirs,
        }
    }

    /// The layout of the main file on disk now; `None` when it cannot be read (in the middle
    /// of a delete-and-recreate, say).
    fn read(main: &Path) -> Option<Self> {
        let text = config::read_text(main).ok()?;
        Some(Self::new(
            main.to_path_buf(),
            &config::include_patterns(&text),
        ))
    }

    fn base(&self) -> &Path {
        self.main.parent().unwrap_or(Path::new("/"))
    }

    /// Directories to watch: the main file's, and each include directory or, while it does
    /// not exist, its nearest existing ancestor (where its creation shows).
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.base().to_path_buf()];
        for dir in &self.include_dirs {
            let mut dir = dir.as_path();
            while !dir.is_dir() {
                match dir.parent() {
                    Some(parent) => dir = parent,
                    None => break,
                }
            }
            if dir.is_dir() && !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
        dirs
    }

    /// Whether a changed path can affect the config: the main file, a file an include glob
    /// matches (dotfiles excluded, as when reading), a Kubernetes ConfigMap `..` entry, or an
    /// include directory (or one of its ancestors) appearing or going away.
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
        if self.include_dirs.iter().any(|d| d.starts_with(path)) {
            return true;
        }
        self.patterns
            .iter()
            .any(|g| g.matches_path_with(path, config::INCLUDE_MATCH))
    }
}

/// A regular file of length 0 (following symlinks).
fn empty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// Whether a touched config file is empty now, or the main file was touched and is missing:
/// a save still in progress (stats the files on a blocking thread).
async fn half_written(touched: &HashSet<PathBuf>, main: &Path) -> bool {
    let (touched, main) = (touched.clone(), main.to_path_buf());
    tokio::task::spawn_blocking(move || {
        touched.iter().any(|p| empty_file(p)) || (touched.contains(&main) && !main.exists())
    })
    .await
    .unwrap_or(false)
}

/// The layout now. A poisoned lock still holds a whole layout: it is only ever replaced
/// whole.
fn current(layout: &RwLock<Layout>) -> Layout {
    layout.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// What the watcher has seen, for the metrics: plain atomics the callback adds to.
#[derive(Debug, Default)]
pub struct Health {
    /// Events notify delivered (on the watched directories, config files or not).
    pub events: AtomicU64,
    /// Queue overflows (events lost: the config was read again in full).
    pub rescans: AtomicU64,
    /// Errors notify reported (the config was read again in full).
    pub errors: AtomicU64,
    /// Unix ms of the last event, 0 before the first.
    pub last_event_ms: AtomicI64,
}

/// The notify callback: never blocks, only counts, filters and `try_send`s.
fn handler(
    layout: Arc<RwLock<Layout>>,
    tx: mpsc::Sender<Touch>,
    health: Arc<Health>,
) -> impl Fn(notify::Result<notify::Event>) + Send + 'static {
    move |res: notify::Result<notify::Event>| {
        health
            .last_event_ms
            .store(crate::now_ms(), Ordering::Relaxed);
        let main = || {
            layout
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .main
                .clone()
        };
        let event = match res {
            Ok(event) => event,
            Err(e) => {
                health.errors.fetch_add(1, Ordering::Relaxed);
                // Whatever was lost, reading everything again finds it.
                tracing::warn!("file watcher error: {e}; reading the config again");
                let _ = tx.try_send(Touch {
                    path: main(),
                    open: false,
                });
                return;
            }
        };
        health.events.fetch_add(1, Ordering::Relaxed);
        if event.need_rescan() {
            health.rescans.fetch_add(1, Ordering::Relaxed);
            // The inotify queue overflowed: events were lost.
            tracing::warn!("file watcher queue overflowed; reading the config again");
            let _ = tx.try_send(Touch {
                path: main(),
                open: false,
            });
            return;
        }
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
        let layout = layout.read().unwrap_or_else(|e| e.into_inner());
        for path in event.paths {
            if layout.relevant(&path) {
                // Full channel: a reload is pending anyway; dropping is fine.
                let _ = tx.try_send(Touch { path, open });
            }
        }
    }
}

/// The watches in place: directory → its (device, inode) when it was watched, so a
/// directory that was replaced is watched again.
struct Watches {
    watcher: RecommendedWatcher,
    dirs: HashMap<PathBuf, (u64, u64)>,
}

impl Watches {
    /// Watches what `layout` needs and drops what it no longer does; true when a directory
    /// got a new watch.
    fn update(&mut self, layout: &Layout) -> bool {
        let wanted = layout.dirs();
        let stale: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|d| !wanted.contains(d))
            .cloned()
            .collect();
        for dir in stale {
            // Already gone with its directory, or still there: either way not needed.
            let _ = self.watcher.unwatch(&dir);
            self.dirs.remove(&dir);
            tracing::debug!(dir = %dir.display(), "no longer watching");
        }
        let mut added = false;
        for dir in wanted {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if self.dirs.get(&dir) == Some(&id) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    self.dirs.insert(dir, id);
                    added = true;
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
            }
        }
        added
    }
}

/// The file watcher, its watches in place: nothing saved from now on is missed.
pub struct Watcher {
    main: PathBuf,
    layout: Arc<RwLock<Layout>>,
    watches: Watches,
    tx: mpsc::Sender<Touch>,
    rx: mpsc::Receiver<Touch>,
}

/// Watches the config whose main file is `main` (absolute) and started as the files that
/// hash to `running_hash`; a save made since they were read (before the watches existed)
/// is picked up as if it came now. `None` when the watcher cannot be created (said in the
/// daemon log: reloads then need `ctl reload` or SIGHUP). The files are read and the
/// watches set on a blocking thread.
pub async fn start(main: PathBuf, running_hash: String, health: Arc<Health>) -> Option<Watcher> {
    tokio::task::spawn_blocking(move || start_blocking(main, &running_hash, health))
        .await
        .unwrap_or_else(|e| {
            tracing::error!("cannot start the file watcher: {e}; use `ctl reload` or SIGHUP");
            None
        })
}

fn start_blocking(main: PathBuf, running_hash: &str, health: Arc<Health>) -> Option<Watcher> {
    let start = Layout::read(&main).unwrap_or_else(|| Layout::new(main.clone(), &[]));
    let layout = Arc::new(RwLock::new(start.clone()));
    let (tx, rx) = mpsc::channel::<Touch>(1024);
    let watcher = match RecommendedWatcher::new(
        handler(layout.clone(), tx.clone(), health),
        notify::Config::default(),
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("cannot start the file watcher: {e}; use `ctl reload` or SIGHUP");
            return None;
        }
    };
    let mut watches = Watches {
        watcher,
        dirs: HashMap::new(),
    };
    watches.update(&start);
    let moved =
        scriptd_common::config::read_source(&main).map_or(true, |s| s.hash() != running_hash);
    if moved {
        tracing::info!("the config changed while the daemon started; reading it again");
        let _ = tx.try_send(Touch {
            path: main.clone(),
            open: false,
        });
    }
    Some(Watcher {
        main,
        layout,
        watches,
        tx,
        rx,
    })
}

impl Watcher {
    /// Turns saves into reloads, debounced, until `cancel`; validates ahead with
    /// `validations`, the coordinator's cache.
    pub async fn run(
        self,
        debounce: Duration,
        reloads: mpsc::Sender<Request>,
        validations: Validations,
        cancel: CancellationToken,
    ) {
        let Self {
            main,
            layout,
            mut watches,
            tx,
            mut rx,
        } = self;
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            };
            let mut open: HashSet<PathBuf> = HashSet::new();
            // Config files touched in this window (every touch the callback lets through is).
            let mut touched: HashSet<PathBuf> = HashSet::new();
            let note = |t: Touch, open: &mut HashSet<PathBuf>, touched: &mut HashSet<PathBuf>| {
                touched.insert(t.path.clone());
                if t.open {
                    open.insert(t.path);
                } else {
                    open.remove(&t.path);
                }
            };
            note(first, &mut open, &mut touched);
            let since = std::time::Instant::now();
            // The window opens at the first event. Meanwhile the files are read and
            // validated as they are now: a save that is complete already (a rename into
            // place) needs no validation once the window closes; anything written later
            // hashes differently and is validated by the reload itself.
            let ahead = tokio::task::spawn_blocking({
                let (main, validations) = (main.clone(), validations.clone());
                move || Prevalidated::read(&main, &validations)
            });
            let window = tokio::time::sleep(debounce);
            tokio::pin!(window);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = &mut window => break,
                    Some(t) = rx.recv() => note(t, &mut open, &mut touched),
                }
            }
            // Wait (bounded) for files written in the window to be closed again, for a touched
            // config file that is empty now to be written (an editor that truncates and writes in
            // two opens leaves it empty in between, and an empty included file would remove its
            // scripts), and for a main file that was deleted to be created again. What is still
            // so after the bound is read as it is.
            let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
            while !open.is_empty() || half_written(&touched, &main).await {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::info!(
                            open = ?open,
                            "config files still open for writing, empty or missing after {CLOSE_WAIT:?}: \
                             reading the config anyway"
                        );
                        break;
                    }
                    Some(t) = rx.recv() => note(t, &mut open, &mut touched),
                }
            }
            let (reply, done) = oneshot::channel();
            let req = Request {
                reply: Some(reply),
                prevalidated: ahead.await.ok().flatten(),
                since,
                ..Request::new(Source::Watch)
            };
            if reloads.send(req).await.is_err() {
                return;
            }
            let _ = done.await;
            // The reload may have changed the include globs: filter and watch by the new ones
            // (read and watched on a blocking thread, which borrows the watches meanwhile).
            let (main_now, before) = (main.clone(), current(&layout));
            let updated = tokio::task::spawn_blocking(move || {
                let fresh = Layout::read(&main_now).unwrap_or(before);
                let added = watches.update(&fresh);
                (watches, fresh, added)
            })
            .await;
            let (fresh, added);
            (watches, fresh, added) = match updated {
                Ok(updated) => updated,
                Err(e) => {
                    tracing::error!("the file watcher stopped ({e}); use `ctl reload` or SIGHUP");
                    return;
                }
            };
            *layout.write().unwrap_or_else(|e| e.into_inner()) = fresh;
            if added {
                // Files may have landed in a new directory before its watch existed.
                tracing::debug!("a new directory is watched; reading the config again");
                let _ = tx.try_send(Touch {
                    path: main.clone(),
                    open: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(include: &[&str]) -> Layout {
        let include: Vec<String> = include.iter().map(|s| (*s).to_owned()).collect();
        Layout::new(PathBuf::from("/etc/scriptd/scriptd.yaml"), &include)
    }

    #[test]
    fn relevant_paths() {
        let l = layout(&["conf.d/*.yaml", "extra.yaml", "/opt/more/*/x.yaml"]);
        for yes in [
            "/etc/scriptd/scriptd.yaml",
            "/etc/scriptd/..data",
            "/etc/scriptd/conf.d/a.yaml",
            "/etc/scriptd/extra.yaml",
            "/opt/more/q/x.yaml",
            // Include directories, and their ancestors, appearing or going away.
            "/etc/scriptd/conf.d",
            "/opt/more",
            "/opt",
        ] {
            assert!(l.relevant(Path::new(yes)), "{yes} should be relevant");
        }
        for no in [
            "/etc/scriptd/other.yaml",
            "/etc/scriptd/conf.d/a.yml",
            "/etc/scriptd/conf.d/.a.yaml.swp",
            "/etc/scriptd/conf.d/.ansible_tmpXa.yaml",
            "/etc/scriptd/conf",
            "/etc/scriptd/state",
        ] {
            assert!(!l.relevant(Path::new(no)), "{no} should not be relevant");
        }
    }

    #[test]
    fn include_dirs_are_the_fixed_prefixes() {
        let l = layout(&["conf.d/*.yaml", "extra.yaml", "a/b/**/*.yaml"]);
        assert_eq!(
            l.include_dirs,
            [
                PathBuf::from("/etc/scriptd/conf.d"),
                PathBuf::from("/etc/scriptd"),
                PathBuf::from("/etc/scriptd/a/b"),
            ]
        );
    }

    /// What the callback sends for `res`.
    fn touches(l: &Layout, res: notify::Result<notify::Event>) -> Vec<(PathBuf, bool)> {
        let (tx, mut rx) = mpsc::channel(16);
        handler(Arc::new(RwLock::new(l.clone())), tx, Arc::default())(res);
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|t| (t.path, t.open))
            .collect()
    }

    #[test]
    fn the_callback_counts_events_overflows_and_errors() {
        use notify::event::Flag;
        let l = layout(&["conf.d/*.yaml"]);
        let (tx, _rx) = mpsc::channel(16);
        let health = Arc::new(Health::default());
        let h = handler(Arc::new(RwLock::new(l)), tx, health.clone());
        h(Ok(notify::Event::new(EventKind::Create(CreateKind::File))));
        h(Ok(
            notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)
        ));
        h(Err(notify::Error::generic("inotify read failed")));
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(
            (
                get(&health.events),
                get(&health.rescans),
                get(&health.errors)
            ),
            (2, 1, 1)
        );
        assert!(health.last_event_ms.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn an_overflow_or_an_error_touches_the_main_file() {
        use notify::event::Flag;
        let l = layout(&["conf.d/*.yaml"]);
        let main = || vec![(PathBuf::from("/etc/scriptd/scriptd.yaml"), false)];
        let overflow = notify::Event::new(EventKind::Other).set_flag(Flag::Rescan);
        assert_eq!(touches(&l, Ok(overflow)), main());
        let error = notify::Error::generic("inotify read failed");
        assert_eq!(touches(&l, Err(error)), main());
    }

    #[test]
    fn the_callback_filters_by_the_layout_it_is_given() {
        let create = |p: &str| {
            notify::Event::new(EventKind::Create(CreateKind::File)).add_path(PathBuf::from(p))
        };
        let none = layout(&[]);
        assert!(touches(&none, Ok(create("/etc/scriptd/conf.d/a.yaml"))).is_empty());
        let some = layout(&["conf.d/*.yaml"]);
        assert_eq!(
            touches(&some, Ok(create("/etc/scriptd/conf.d/a.yaml"))),
            [(PathBuf::from("/etc/scriptd/conf.d/a.yaml"), true)]
        );
        assert!(touches(&some, Ok(create("/etc/scriptd/conf.d/.a.yaml"))).is_empty());
    }

    #[test]
    fn a_missing_include_dir_is_watched_through_its_nearest_ancestor() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let main = tmp.path().join("scriptd.yaml");
        let l = Layout::new(main, &["a/b/*.yaml".to_owned()]);
        assert_eq!(l.dirs(), [tmp.path().to_path_buf()]);
        std::fs::create_dir_all(tmp.path().join("a")).expect("mkdir a");
        assert_eq!(l.dirs(), [tmp.path().to_path_buf(), tmp.path().join("a")]);
        std::fs::create_dir_all(tmp.path().join("a/b")).expect("mkdir a/b");
        assert_eq!(l.dirs(), [tmp.path().to_path_buf(), tmp.path().join("a/b")]);
    }
}

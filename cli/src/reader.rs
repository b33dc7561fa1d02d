//! Noticing that the reader of stdout went away while nothing is being written, as GNU
//! `tail -f` does: `ctl logs -f quiet | head -n 1` ends when `head` does, not at the next
//! line the script prints.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::AsFd;
use tokio::sync::oneshot;

/// Resolves once stdout is a pipe (or socket) whose reading end was closed; never for a
/// terminal or a file. A thread waits in `poll(2)` asking for no event, so only the error
/// and hang-up conditions that poll always reports wake it; it dies with the process.
pub async fn gone() {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            loop {
                let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {
                        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                            let _ = tx.send(());
                            return;
                        }
                        if revents.contains(PollFlags::POLLNVAL) {
                            return; // stdout is closed: nothing to watch
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        });
    // Without the thread (or with it gone for good) the reader is only noticed at a write.
    match spawned {
        Ok(_) if rx.await.is_ok() => {}
        _ => std::future::pending().await,
    }
}

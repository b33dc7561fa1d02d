//! Ingestion: reading one stream of a run from its pipe, a chunk at a time, into the sink.

use super::record::Stream;
use super::sink::LogSink;
use super::split::Splitter;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

/// Size of one read from a script's pipe.
const READ_CHUNK: usize = 64 << 10;

/// A pipe end a script writes to: a run's stdout or stderr.
pub trait PipeEnd {
    /// The descriptor, to read from directly.
    fn into_fd(self) -> std::io::Result<OwnedFd>;
}

impl PipeEnd for tokio::process::ChildStdout {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        self.into_owned_fd()
    }
}

impl PipeEnd for tokio::process::ChildStderr {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        self.into_owned_fd()
    }
}

impl PipeEnd for OwnedFd {
    fn into_fd(self) -> std::io::Result<OwnedFd> {
        Ok(self)
    }
}

/// Reads one stream of a run until EOF, feeding `sink` as output arrives.
///
/// It waits for the pipe to be readable without holding a buffer (an idle script costs no
/// memory here), then reads chunks of up to 64 KiB until the pipe is empty, each straight
/// into the splitter's buffer; the complete lines of a read become one block (that buffer:
/// one timestamp, one allocation, one file write). A line
/// longer than `log.max_line_bytes` is cut into pieces marked `continued` (at a character
/// boundary when the text is UTF-8), so memory stays bounded whatever the script prints;
/// `\r\n` endings lose the `\r`; invalid UTF-8 is replaced; a last line without a newline
/// is flushed at EOF.
///
/// `stop` ends it early (a process that escaped the run's group still holds the pipe after
/// the run ended): what the pipe holds then is read, the partial last line flushed, and a
/// daemon line says reading stopped.
pub async fn pump(
    pipe: impl PipeEnd,
    sink: Arc<LogSink>,
    run_id: u64,
    stream: Stream,
    stop: CancellationToken,
) {
    let rx = match pipe.into_fd().and_then(pipe::Receiver::from_owned_fd) {
        Ok(rx) => rx,
        Err(e) => {
            let what = stream.as_str();
            sink.system(run_id, format!("cannot read the script's std{what}: {e}"));
            return;
        }
    };
    let _open = sink.hold_file();
    let mut lines = Splitter::default();
    let mut widened = false;
    let mut stopped = false;
    'stream: loop {
        tokio::select! {
            ready = rx.readable() => if ready.is_err() { break },
            _ = stop.cancelled(), if !stopped => stopped = true,
        }
        // After `stop`, only what the pipe holds now (a bounded amount) is still read.
        let mut reads = 0;
        while !stopped || reads < STOP_DRAIN_READS {
            reads += 1;
            match rx.try_read_buf(lines.buffer(READ_CHUNK)) {
                Ok(0) => break 'stream,
                Ok(n) => {
                    if n >= READ_CHUNK && !widened {
                        widened = true;
                        widen(&rx);
                    }
                    let max = sink.max_line_bytes().max(4);
                    sink.append(lines.take(max, run_id, stream));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break 'stream,
            }
        }
        if stopped {
            sink.append(lines.finish(run_id, stream));
            sink.system(
                run_id,
                format!(
                    "stopped reading std{}: the run ended, but a process outside its group \
                     still holds the pipe open",
                    stream.as_str()
                ),
            );
            return;
        }
        // The pipe is empty: give the buffer's room back until the script writes again.
        lines.idle();
    }
    sink.append(lines.finish(run_id, stream));
}

/// Reads of a pipe still made after the pump was told to stop (up to 4 MiB).
const STOP_DRAIN_READS: usize = 64;

/// Pipe capacity for a script that floods its output.
const FLOOD_PIPE: i32 = 1 << 20;

/// Gives the pipe of a script that filled it a bigger buffer, so the script blocks less
/// often while the daemon writes a chunk out. Only flooding streams get one (the kernel
/// counts pipe buffers against the user's limit); when the kernel refuses, nothing changes.
fn widen(rx: &pipe::Receiver) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(F_SETPIPE_SZ) with an integer argument on a descriptor we own.
    unsafe { libc::fcntl(rx.as_raw_fd(), libc::F_SETPIPE_SZ, FLOOD_PIPE) };
}

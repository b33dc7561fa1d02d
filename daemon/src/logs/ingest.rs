//! Ingestion: reading one stream of a run from its pipe, a chunk at a time, into the sink.

use super::record::Stream;
use super::sink::LogSink;
use super::split::Splitter;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

/// Size of one read from a script's pipe.
const READ_CHUNK: usize = 64 << 10;

/// A stream that brings at least [`FLOOD_BYTES`] within [`FLOOD_WINDOW`] floods: it is read
/// on a blocking thread, every [`GATHER`], until it is quiet.
const FLOOD_BYTES: usize = 64 << 10;
const FLOOD_WINDOW: Duration = Duration::from_millis(1);

/// How long a flooding stream's reader waits when the pipe is empty before it reads again;
/// after a second empty read the stream is quiet and waits on the runtime again.
const GATHER: Duration = Duration::from_millis(1);

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
/// A stream that floods (64 KiB within a millisecond) is read on a blocking thread instead,
/// with the pipe taken out of the runtime's epoll and widened: a read of all that came, then
/// a millisecond's sleep while the pipe fills, until the pipe stays empty. Waiting in epoll,
/// the daemon was woken by every write of the script (a 4 KiB write of `seq` at a time), on
/// the writer's CPU, which it took from the writer: the writer lost a fifth of its speed to
/// being preempted ~8,000 times per million lines. Asleep on a timer, the daemon is woken
/// ~1,000 times a second at most and reads big chunks; a follower of a flooding script gets
/// its lines at most a millisecond later.
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
    let fd = match pipe.into_fd() {
        Ok(fd) => fd,
        Err(e) => return cannot_read(&sink, run_id, stream, &e),
    };
    let _open = sink.hold_file();
    let mut reader = Reader {
        lines: Splitter::default(),
        sink,
        run_id,
        stream,
        widened: false,
    };
    let mut fd = fd;
    loop {
        let rx = match pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => rx,
            Err(e) => return cannot_read(&reader.sink, run_id, stream, &e),
        };
        let flood = match watch(&mut reader, rx, &stop).await {
            Watched::Flood(fd) => fd,
            Watched::Ended => return,
        };
        let stop = stop.clone();
        let flooded = tokio::task::spawn_blocking(move || {
            let how = reader.flood(&flood, &stop);
            (reader, how, flood)
        })
        .await;
        match flooded {
            Ok((r, Flooded::Quiet, quiet)) => {
                reader = r;
                fd = quiet;
            }
            Ok(_) => return,
            // The blocking pool is gone: the daemon is stopping.
            Err(_) => return,
        }
    }
}

fn cannot_read(sink: &LogSink, run_id: u64, stream: Stream, e: &std::io::Error) {
    let what = stream.as_str();
    sink.system(run_id, format!("cannot read the script's std{what}: {e}"));
}

/// One stream's reading state, which moves between the runtime and a blocking thread.
struct Reader {
    lines: Splitter,
    sink: Arc<LogSink>,
    run_id: u64,
    stream: Stream,
    widened: bool,
}

impl Reader {
    /// Hands the lines the last read completed to the sink.
    fn take(&mut self) {
        let max = self.sink.max_line_bytes().max(4);
        self.sink
            .append(self.lines.take(max, self.run_id, self.stream));
    }

    /// EOF (or a read error): the partial last line goes to the sink.
    fn end(&mut self) {
        let lines = std::mem::take(&mut self.lines);
        self.sink.append(lines.finish(self.run_id, self.stream));
    }

    /// Told to stop with the pipe still open: the partial last line goes to the sink, and a
    /// daemon line says why reading stopped.
    fn stopped(&mut self) {
        self.end();
        self.sink.system(
            self.run_id,
            format!(
                "stopped reading std{}: the run ended, but a process outside its group \
                 still holds the pipe open",
                self.stream.as_str()
            ),
        );
    }

    /// One read of `fd` into the splitter's buffer (no readiness wait: `fd` does not block).
    fn read(&mut self, fd: &OwnedFd) -> Result<usize, Errno> {
        let buf = self.lines.buffer(READ_CHUNK);
        let len = buf.len();
        buf.resize(len + READ_CHUNK, 0);
        let read = nix::unistd::read(fd, &mut buf[len..]);
        buf.truncate(len + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Gives the pipe of a script that floods its output a bigger buffer, so the script
    /// blocks less often while the daemon writes a chunk out or gathers. Only flooding
    /// streams get one (the kernel counts pipe buffers against the user's limit); when the
    /// kernel refuses, nothing changes.
    fn widen(&mut self, fd: &impl AsRawFd) {
        if !self.widened {
            self.widened = true;
            // SAFETY: fcntl(F_SETPIPE_SZ) with an integer argument on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, FLOOD_PIPE) };
        }
    }

    /// On a blocking thread: reads a flooding stream until it is quiet (back to the runtime)
    /// or done (at its end, or stopped: what the pipe holds is read, and the stream ended).
    fn flood(&mut self, fd: &OwnedFd, stop: &CancellationToken) -> Flooded {
        self.widen(fd);
        let mut empty = 0;
        loop {
            if stop.is_cancelled() {
                for _ in 0..STOP_DRAIN_READS {
                    match self.read(fd) {
                        Ok(0) => break,
                        Ok(_) => self.take(),
                        Err(Errno::EINTR) => {}
                        Err(_) => break,
                    }
                }
                self.stopped();
                return Flooded::Done;
            }
            match self.read(fd) {
                Ok(0) => break,
                Ok(_) => {
                    empty = 0;
                    self.take();
                }
                Err(Errno::EAGAIN) if empty == 0 => {
                    empty += 1;
                    std::thread::sleep(GATHER);
                }
                Err(Errno::EAGAIN) => {
                    self.lines.idle();
                    return Flooded::Quiet;
                }
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        self.end();
        Flooded::Done
    }
}

/// How reading a flooding stream on a blocking thread ended.
enum Flooded {
    /// The pipe stayed empty: wait on the runtime again.
    Quiet,
    /// The stream is done.
    Done,
}

/// How the runtime's watch of a pipe ended.
enum Watched {
    /// At EOF, a read error or `stop`: the stream is done.
    Ended,
    /// The stream floods: read it on a blocking thread.
    Flood(OwnedFd),
}

/// Waits for output on the runtime and reads it until the stream ends, or floods.
async fn watch(reader: &mut Reader, rx: pipe::Receiver, stop: &CancellationToken) -> Watched {
    let mut stopped = false;
    let mut window = (Instant::now(), 0);
    'stream: loop {
        tokio::select! {
            ready = rx.readable() => if ready.is_err() { break },
            _ = stop.cancelled(), if !stopped => stopped = true,
        }
        // After `stop`, only what the pipe holds now (a bounded amount) is still read.
        let mut reads = 0;
        while !stopped || reads < STOP_DRAIN_READS {
            reads += 1;
            match rx.try_read_buf(reader.lines.buffer(READ_CHUNK)) {
                Ok(0) => break 'stream,
                Ok(n) => {
                    reader.take();
                    if stopped {
                        continue;
                    }
                    let now = Instant::now();
                    if now.duration_since(window.0) > FLOOD_WINDOW {
                        window = (now, 0);
                    }
                    window.1 += n;
                    if window.1 >= FLOOD_BYTES && !stop.is_cancelled() {
                        match rx.into_nonblocking_fd() {
                            Ok(fd) => return Watched::Flood(fd),
                            Err(_) => break 'stream,
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break 'stream,
            }
        }
        if stopped {
            reader.stopped();
            return Watched::Ended;
        }
        // The pipe is empty: give the buffer's room back until the script writes again.
        reader.lines.idle();
    }
    reader.end();
    Watched::Ended
}

/// Reads of a pipe still made after the pump was told to stop (up to 4 MiB).
const STOP_DRAIN_READS: usize = 64;

/// Pipe capacity for a script that floods its output.
const FLOOD_PIPE: i32 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::RawLine;
    use crate::logs::sink::tests::{cfg, sink};
    use std::io::Write as _;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flooding_stream_is_read_whole_and_in_order_and_its_pipe_widened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 100, cfg(u64::MAX, 1));
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        let n = 200_000;
        // 4 KiB writes as fast as they go, as `seq` writes: the stream floods.
        let writer = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(4096, std::fs::File::from(tx));
            for i in 0..n {
                writeln!(out, "{i:09} {}", "x".repeat(40)).expect("write");
            }
            let file = out.into_inner().expect("flush");
            // SAFETY: fcntl(F_GETPIPE_SZ) on a descriptor we own.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETPIPE_SZ) }
        });
        pump(rx, s.clone(), 1, Stream::Stdout, CancellationToken::new()).await;
        let size = writer.join().expect("writer");
        assert_eq!(size, FLOOD_PIPE, "the pipe of a flooding stream is widened");
        let text = std::fs::read_to_string(dir.path().join("s.log")).expect("read");
        let texts: Vec<String> = text
            .lines()
            .filter_map(|l| RawLine::parse(l.as_bytes()).and_then(|r| r.to_proto()))
            .map(|l| l.text)
            .collect();
        assert_eq!(texts.len(), n);
        for (i, t) in texts.iter().enumerate() {
            assert_eq!(t, &format!("{i:09} {}", "x".repeat(40)));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_that_never_ends_is_stopped_with_its_lines_in_order_and_a_daemon_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sink(dir.path(), 100, cfg(u64::MAX, 1));
        let (rx, tx) = nix::unistd::pipe().expect("pipe");
        // A process that escaped the run's group and floods until its reader is gone.
        let writer = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::with_capacity(4096, std::fs::File::from(tx));
            let mut i = 0u64;
            while writeln!(out, "{i:09} {}", "x".repeat(40)).is_ok() {
                i += 1;
            }
        });
        let stop = CancellationToken::new();
        let pumping = tokio::spawn(pump(rx, s.clone(), 1, Stream::Stdout, stop.clone()));
        // Stopped while flooding: once well past the 64 KiB that make it a flood.
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.counts().lines[0] < 100_000 {
            assert!(
                Instant::now() < deadline,
                "the flood did not reach the sink"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), pumping)
            .await
            .expect("the pump ends once stopped, the writer still writing")
            .expect("pump");
        writer
            .join()
            .expect("the writer ends once the pipe is closed");
        let text = std::fs::read_to_string(dir.path().join("s.log")).expect("read");
        let lines: Vec<_> = text
            .lines()
            .filter_map(|l| RawLine::parse(l.as_bytes()).and_then(|r| r.to_proto()))
            .collect();
        let (last, out) = lines.split_last().expect("lines");
        assert!(
            last.text.starts_with("stopped reading stdout"),
            "{:?}",
            last.text
        );
        assert!(out.len() >= 100_000);
        for (i, l) in out.iter().enumerate() {
            let want = format!("{i:09} {}", "x".repeat(40));
            // The partial last line, flushed as it was when reading stopped.
            let whole = i + 1 < out.len() || l.text == want;
            assert!(whole || want.starts_with(&l.text), "line {i}: {:?}", l.text);
        }
    }
}

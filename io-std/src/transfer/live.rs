//! The live source of `tryst terminal --live-from CMD`: the command runs
//! (`sh -c`, no stdin, its stderr the daemon's) when a permitted peer asks
//! for the live stream (the share protocol's `Live`), and its stdout is cut
//! into frames of a fixed size, each one real-time datagram on the session.
//!
//! A reader thread of the child's own collects whole frames and hands them
//! to the terminal's loop through a bounded queue, waking it; a frame the
//! queue cannot take (the loop is behind) is dropped and counted: real-time
//! data prefers fresh. The child is killed when the session ends (when the
//! [`LiveChild`] is dropped).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Wake;

/// The default frame: 160 bytes (20 ms of 8 kHz 8-bit audio).
pub const DEFAULT_FRAME: usize = 160;
/// The largest frame: one datagram on a path of the smallest MTU the peer
/// transport uses (1280-byte IPv6 minimum, less the packet's overhead).
pub const MAX_FRAME: usize = 1200;
/// Frames the reader may hold for the loop before it drops new ones.
pub const LIVE_QUEUE: usize = 64;
/// How long after its source's end a live session is closed: the last
/// datagrams leave first.
pub const LINGER: Duration = Duration::from_millis(300);

/// What `--live-from` names: the command and its frame size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSource {
    /// The command line, run with `sh -c`.
    pub command: String,
    /// Bytes of each datagram (1 to [`MAX_FRAME`]).
    pub frame: usize,
}

/// What the reader thread hands the loop.
#[derive(Debug)]
pub enum LiveChunk {
    /// One frame (the last may be shorter).
    Frame(Vec<u8>),
    /// The source ended (its stdout closed), [`LINGER`] ago.
    End,
}

/// A running live source.
#[derive(Debug)]
pub struct LiveChild {
    child: Child,
    frames: flume::Receiver<LiveChunk>,
    /// Frames the reader dropped because the loop was behind.
    dropped: Arc<AtomicU64>,
}

impl LiveChild {
    /// Starts `source`'s command; `wake` is called after each frame.
    pub fn spawn(source: &LiveSource, wake: Wake) -> std::io::Result<LiveChild> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&source.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the live source has no stdout"))?;
        let (tx, frames) = flume::bounded(LIVE_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        let frame = source.frame.clamp(1, MAX_FRAME);
        std::thread::Builder::new()
            .name("tryst-live".into())
            .spawn(move || read_frames(stdout, frame, &tx, &counter, &wake))?;
        Ok(LiveChild {
            child,
            frames,
            dropped,
        })
    }

    /// The next frame or end the reader has, if any (never blocks).
    pub fn next(&self) -> Option<LiveChunk> {
        self.frames.try_recv().ok()
    }

    /// Frames dropped before the loop took them.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LiveChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cuts `stdout` into frames of `frame` bytes as they come.
fn read_frames(
    mut stdout: impl Read,
    frame: usize,
    tx: &flume::Sender<LiveChunk>,
    dropped: &AtomicU64,
    wake: &Wake,
) {
    let mut buf = vec![0u8; frame];
    let mut filled = 0;
    loop {
        match stdout.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        if filled == frame {
            filled = 0;
            match tx.try_send(LiveChunk::Frame(buf.clone())) {
                Ok(()) => wake(),
                Err(flume::TrySendError::Full(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(flume::TrySendError::Disconnected(_)) => return,
            }
        }
    }
    if filled > 0
        && tx
            .try_send(LiveChunk::Frame(buf[..filled].to_vec()))
            .is_err()
    {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
    wake();
    std::thread::sleep(LINGER);
    if tx.send(LiveChunk::End).is_ok() {
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_is_cut_into_frames_and_the_end_follows() {
        let (tx, rx) = flume::bounded(LIVE_QUEUE);
        let dropped = AtomicU64::new(0);
        let wake: Wake = Arc::new(|| {});
        read_frames(&b"abcdefghij"[..], 4, &tx, &dropped, &wake);
        let got: Vec<_> = rx.try_iter().collect();
        assert!(matches!(&got[0], LiveChunk::Frame(f) if f == b"abcd"));
        assert!(matches!(&got[1], LiveChunk::Frame(f) if f == b"efgh"));
        assert!(matches!(&got[2], LiveChunk::Frame(f) if f == b"ij"));
        assert!(matches!(got[3], LiveChunk::End));
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn frames_the_loop_cannot_take_are_dropped_and_counted() {
        let (tx, rx) = flume::bounded(2);
        let dropped = AtomicU64::new(0);
        let wake: Wake = Arc::new(|| {});
        let data = [7u8; 10 * 4];
        std::thread::scope(|s| {
            s.spawn(|| read_frames(&data[..], 4, &tx, &dropped, &wake));
            // Wait until the reader is done (it blocks only on the end).
            while dropped.load(Ordering::Relaxed) < 8 {
                std::thread::yield_now();
            }
            let first: Vec<_> = rx.try_iter().take(2).collect();
            assert_eq!(first.len(), 2);
        });
        assert_eq!(dropped.load(Ordering::Relaxed), 8);
        assert!(matches!(rx.try_recv(), Ok(LiveChunk::End)));
    }

    #[test]
    fn the_child_runs_and_is_killed_with_its_session() {
        let wake: Wake = Arc::new(|| {});
        let source = LiveSource {
            command: "printf 0123456789; exec sleep 60".into(),
            frame: 5,
        };
        let live = LiveChild::spawn(&source, wake).expect("sh runs");
        let pid = live.child.id();
        let mut frames = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while frames.len() < 2 && std::time::Instant::now() < deadline {
            match live.next() {
                Some(LiveChunk::Frame(f)) => frames.push(f),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(frames, [b"01234".to_vec(), b"56789".to_vec()]);
        drop(live);
        // Reaped: no such process any more.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

//! The roles every driver runs, written once: the terminal
//! ([`terminal`]), the session server ([`session_server`]) and the trigger
//! server ([`trigger_server`]), each a [`Driven`](crate::drive::Driven)
//! implementation with its commands, its events and the handle an app
//! holds. A driver (the tokio one of `tryst-tokio`, the blocking one of
//! this crate) only binds sockets, builds the role and runs its loop.
//!
//! The app and the loop talk over `flume` channels, which work blocking
//! and async alike:
//! - commands go app -> loop through [`Commands`] (bounded); a command
//!   that wants an answer carries a reply sender, and the handle method
//!   returns the receiving end as a [`Reply`];
//! - events go loop -> app on an unbounded `flume` channel: receive them
//!   with `recv` / `recv_timeout` (blocking) or `recv_async().await`.
//!
//! **One shape for every handle method**: it returns a [`Reply`] at once
//! (sending never fails visibly there: a loop that is gone makes the reply
//! resolve to its "stopped" error). Async code writes
//! `handle.connect(t, d).await?`, blocking code `handle.connect(t, d).wait()?`.

pub mod relay;
pub mod relay_link;
pub mod session_server;
pub mod terminal;
pub mod trigger_server;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::transfer::Wake;

/// The loop a command was sent to stopped (or stopped before it answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event loop stopped")]
pub struct RoleStopped;

/// The sending side of a role's commands, handed to its handles: a
/// bounded `flume` sender and an optional [`Wake`] called after each send
/// (a blocking loop wakes its poller with it; an async loop awaits the
/// channel and needs none).
pub struct Commands<C> {
    // Declared before `wake`, so it is dropped first: the loop must find the
    // sender gone when the drop's wake arrives, or it sleeps on forever.
    tx: flume::Sender<C>,
    wake: WakeOnDrop,
}

/// The optional [`Wake`] of a [`Commands`], called once more when that
/// handle is dropped: a blocking loop looks at the channel when woken, and
/// the last sender gone is how it learns the app closed it. A field of its
/// own, declared after the sender, so the wake comes after the sender is
/// gone (a `Drop` on `Commands` itself would run before its fields drop).
struct WakeOnDrop(Option<Wake>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        if let Some(wake) = &self.0 {
            wake();
        }
    }
}

impl<C> Clone for Commands<C> {
    fn clone(&self) -> Self {
        Commands {
            tx: self.tx.clone(),
            wake: WakeOnDrop(self.wake.0.clone()),
        }
    }
}

impl<C> std::fmt::Debug for Commands<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("queued", &self.tx.len())
            .field("wakes", &self.wake.0.is_some())
            .finish()
    }
}

impl<C> Commands<C> {
    /// Wraps `tx`; `wake` (if any) is called after each command is queued.
    pub fn new(tx: flume::Sender<C>, wake: Option<Wake>) -> Self {
        Commands {
            tx,
            wake: WakeOnDrop(wake),
        }
    }

    /// A bounded command channel ([`COMMAND_QUEUE`]): the sending side
    /// (calling `wake` after each send, if given) and the receiver a loop
    /// takes.
    pub fn channel(wake: Option<Wake>) -> (Commands<C>, flume::Receiver<C>) {
        let (tx, rx) = flume::bounded(COMMAND_QUEUE);
        (Commands::new(tx, wake), rx)
    }

    /// Queues `command` for the loop, then wakes it. Blocks only while the
    /// loop is [`COMMAND_QUEUE`] commands behind (which only an app that
    /// queues commands without waiting for their replies reaches).
    pub fn send(&self, command: C) -> Result<(), RoleStopped> {
        self.tx.send(command).map_err(|_| RoleStopped)?;
        if let Some(wake) = &self.wake.0 {
            wake();
        }
        Ok(())
    }

    /// Sends the command `make` builds around a reply sender; the reply.
    /// A loop that is gone drops the command, and with it the sender: the
    /// reply then resolves to [`RoleStopped`].
    pub fn request<T, E>(&self, make: impl FnOnce(Answer<T, E>) -> C) -> Reply<T, E> {
        let (answer, reply) = Reply::channel();
        // On failure the command (and its sender) is dropped here.
        let _ = self.send(make(answer));
        reply
    }

    /// Sends a command that has no answer; a reply that says whether it
    /// was queued (ready at once).
    pub fn tell<E: From<RoleStopped>>(&self, command: C) -> Reply<(), E> {
        Reply::ready(self.send(command).map_err(E::from))
    }
}

/// Raises the soft limit on open file descriptors to the hard limit, so a
/// server holds as many streams as the system lets it (one descriptor a
/// stream), and logs the limit now in force; returns it (`None`: unlimited).
/// Every driver calls it before a server binds.
pub fn raise_descriptor_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let now = if limit.current == limit.maximum {
        limit.current
    } else {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit.maximum,
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the descriptor limit");
                limit.current
            }
        }
    };
    match now {
        Some(limit) => tracing::info!(limit, "open file descriptor limit"),
        None => tracing::info!("open file descriptor limit: unlimited"),
    }
    now
}

/// Most commands waiting for a role's loop before [`Commands::send`] waits.
pub const COMMAND_QUEUE: usize = 256;

/// Where a role's loop answers a command: the sending end of a [`Reply`].
pub type Answer<T, E = RoleStopped> = oneshot::Sender<Result<T, E>>;

/// A pending answer of a role's loop: `wait` for it (blocking) or
/// `.await` it. `E` is the command's error, which says [`RoleStopped`]
/// too when the loop stopped before it answered.
#[must_use = "a reply says whether the command was carried out"]
pub struct Reply<T, E = RoleStopped> {
    rx: oneshot::Receiver<Result<T, E>>,
}

impl<T, E> std::fmt::Debug for Reply<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("answered", &self.rx.has_message())
            .finish()
    }
}

impl<T, E> Reply<T, E> {
    /// A reply and the sender its loop answers on.
    pub fn channel() -> (Answer<T, E>, Reply<T, E>) {
        let (tx, rx) = oneshot::channel();
        (tx, Reply { rx })
    }

    /// A reply that is already answered.
    pub fn ready(result: Result<T, E>) -> Reply<T, E> {
        let (tx, reply) = Reply::channel();
        // The receiver is alive (it is `reply`): the send cannot fail.
        let _ = tx.send(result);
        reply
    }
}

impl<T, E: From<RoleStopped>> Reply<T, E> {
    /// Blocks until the loop answers.
    pub fn wait(self) -> Result<T, E> {
        self.rx.recv().unwrap_or(Err(E::from(RoleStopped)))
    }

    /// Blocks until the loop answers or `timeout` passed (`None`).
    pub fn wait_timeout(self, timeout: std::time::Duration) -> Option<Result<T, E>> {
        match self.rx.recv_timeout(timeout) {
            Ok(result) => Some(result),
            Err(oneshot::RecvTimeoutError::Timeout) => None,
            Err(oneshot::RecvTimeoutError::Disconnected) => Some(Err(E::from(RoleStopped))),
        }
    }
}

/// A [`Reply`] being awaited.
#[must_use = "futures do nothing unless awaited"]
pub struct ReplyFuture<T, E> {
    rx: oneshot::AsyncReceiver<Result<T, E>>,
}

impl<T, E> std::fmt::Debug for ReplyFuture<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyFuture").finish_non_exhaustive()
    }
}

impl<T, E: From<RoleStopped>> Future for ReplyFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(E::from(RoleStopped))))
    }
}

impl<T, E: From<RoleStopped>> IntoFuture for Reply<T, E> {
    type Output = Result<T, E>;
    type IntoFuture = ReplyFuture<T, E>;

    fn into_future(self) -> ReplyFuture<T, E> {
        ReplyFuture {
            rx: self.rx.into_future(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Polls `future` to completion on this thread (no runtime needed).
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }

    #[test]
    fn a_reply_is_waited_for_or_awaited() {
        let (answer, reply) = Reply::<u32>::channel();
        let loop_side = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = answer.send(Ok(7));
        });
        assert_eq!(reply.wait(), Ok(7));
        loop_side.join().expect("loop thread");

        let (answer, reply) = Reply::<u32>::channel();
        let loop_side = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = answer.send(Ok(8));
        });
        assert_eq!(block_on(reply.into_future()), Ok(8));
        loop_side.join().expect("loop thread");
    }

    #[test]
    fn a_reply_whose_loop_went_away_says_it_stopped() {
        let (answer, reply) = Reply::<u32>::channel();
        drop(answer);
        assert_eq!(reply.wait(), Err(RoleStopped));
        let (answer, reply) = Reply::<u32>::channel();
        drop(answer);
        assert_eq!(block_on(reply.into_future()), Err(RoleStopped));
        let (_answer, reply) = Reply::<u32>::channel();
        assert_eq!(reply.wait_timeout(Duration::from_millis(10)), None);
    }

    #[test]
    fn the_last_sender_dropped_wakes_the_loop_after_the_channel_is_closed() {
        // The loop checks the channel when woken: if the wake came while the
        // sender still existed, it would see an open channel and sleep on.
        let (tx, rx) = flume::bounded::<u8>(COMMAND_QUEUE);
        let watched = rx.clone();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let wake: Wake = Arc::new(move || {
            if let Ok(mut seen) = record.lock() {
                seen.push(watched.is_disconnected());
            }
        });
        let commands = Commands::new(tx, Some(wake));
        let other = commands.clone();
        drop(other);
        drop(commands);
        let seen = seen.lock().expect("not poisoned").clone();
        assert_eq!(seen, vec![false, true], "the last drop woke before closing");
        assert!(rx.is_disconnected());
    }

    #[test]
    fn commands_wake_the_loop_after_each_send_and_fail_once_it_is_gone() {
        let woken = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&woken);
        let wake: Wake = Arc::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let (tx, rx) = flume::bounded::<u8>(COMMAND_QUEUE);
        let commands = Commands::new(tx, Some(wake));
        assert_eq!(commands.send(1), Ok(()));
        let other = commands.clone();
        assert_eq!(other.send(2), Ok(()));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        // A dropped sender wakes the loop too (it may be the last one).
        drop(other);
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
        drop(rx);
        assert_eq!(commands.send(3), Err(RoleStopped));
        assert_eq!(woken.load(Ordering::SeqCst), 3, "woken for a lost command");
        // A request to a loop that is gone resolves to "stopped".
        let reply: Reply<u8> = commands.request(|_answer| 4);
        assert_eq!(reply.wait(), Err(RoleStopped));
        assert_eq!(commands.tell::<RoleStopped>(5).wait(), Err(RoleStopped));
    }
}

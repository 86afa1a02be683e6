//! Stop signals for the blocking runners: SIGINT and SIGTERM caught by
//! `signal-hook` (its safe iterator API, on a thread of its own) and
//! forwarded into a bounded flume channel, so a runner waits on its
//! role's events and the signals together ([`next`]).
//!
//! Once listened for, a signal no longer ends the process by default
//! (as with tokio's signal handling): the runner decides what it means.

use std::time::Instant;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::CliError;

/// A stop signal the process received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    fn number(self) -> i32 {
        match self {
            StopSignal::Interrupt => SIGINT,
            StopSignal::Terminate => SIGTERM,
        }
    }

    fn from_number(number: i32) -> Option<StopSignal> {
        match number {
            SIGINT => Some(StopSignal::Interrupt),
            SIGTERM => Some(StopSignal::Terminate),
            _ => None,
        }
    }
}

/// Signals received and not yet taken: more than this of them say
/// nothing more (the runner stops at the first).
const SIGNAL_QUEUE: usize = 4;

/// The stop signals being listened for; they stop being forwarded (and
/// the thread ends) when this is dropped.
#[derive(Debug)]
pub struct StopSignals {
    rx: flume::Receiver<StopSignal>,
    handle: Handle,
}

impl StopSignals {
    /// Listens for `which` from now on.
    pub fn listen(which: &[StopSignal]) -> Result<StopSignals, CliError> {
        let numbers: Vec<i32> = which.iter().map(|s| s.number()).collect();
        let mut signals = Signals::new(&numbers)
            .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
        let handle = signals.handle();
        let (tx, rx) = flume::bounded(SIGNAL_QUEUE);
        std::thread::Builder::new()
            .name("tryst-signals".to_owned())
            .spawn(move || {
                for number in signals.forever() {
                    if let Some(signal) = StopSignal::from_number(number) {
                        // A full queue already holds a stop.
                        let _ = tx.try_send(signal);
                    }
                }
            })
            .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
        Ok(StopSignals { rx, handle })
    }

    /// The signals as they arrive.
    pub fn receiver(&self) -> &flume::Receiver<StopSignal> {
        &self.rx
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // Ends the thread's `forever`; the handlers stay installed (and
        // ignore the signals), as tokio's do.
        self.handle.close();
    }
}

/// What a runner waits for next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<T> {
    /// Its role's next event.
    Event(T),
    /// The role's events ended: its loop stopped.
    Closed,
    /// A stop signal.
    Signal(StopSignal),
    /// The deadline passed first.
    Timeout,
}

/// Waits for whichever comes first: an event on `events`, a signal on
/// `signals`, or `deadline` (none: no deadline). A signal channel whose
/// sender is gone only stops being waited on; events still come.
pub fn next<T>(
    events: &flume::Receiver<T>,
    signals: &flume::Receiver<StopSignal>,
    deadline: Option<Instant>,
) -> Next<T> {
    loop {
        // A disconnected receiver is always ready: leave it out, or the
        // wait would spin on it.
        let listen = !(signals.is_disconnected() && signals.is_empty());
        let mut selector = flume::Selector::new().recv(events, |event| match event {
            Ok(event) => Some(Next::Event(event)),
            Err(flume::RecvError::Disconnected) => Some(Next::Closed),
        });
        if listen {
            selector = selector.recv(signals, |signal| signal.ok().map(Next::Signal));
        }
        let picked = match deadline {
            Some(at) => match selector.wait_deadline(at) {
                Ok(picked) => picked,
                Err(flume::select::SelectError::Timeout) => return Next::Timeout,
            },
            None => selector.wait(),
        };
        if let Some(next) = picked {
            return next;
        }
        // The signals' sender went away: wait on the events alone.
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_event_comes_through() {
        let (events_tx, events) = flume::bounded(1);
        let (_signals_tx, signals) = flume::bounded::<StopSignal>(1);
        events_tx.send(7).expect("send");
        assert_eq!(next(&events, &signals, None), Next::Event(7));
    }

    #[test]
    fn a_signal_comes_through() {
        let (_events_tx, events) = flume::bounded::<u8>(1);
        let (signals_tx, signals) = flume::bounded(1);
        signals_tx.send(StopSignal::Terminate).expect("send");
        assert_eq!(
            next(&events, &signals, None),
            Next::Signal(StopSignal::Terminate)
        );
    }

    #[test]
    fn a_signal_from_another_thread_wakes_the_wait() {
        let (_events_tx, events) = flume::bounded::<u8>(1);
        let (signals_tx, signals) = flume::bounded(1);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            signals_tx.send(StopSignal::Interrupt)
        });
        assert_eq!(
            next(&events, &signals, None),
            Next::Signal(StopSignal::Interrupt)
        );
        assert!(sender.join().is_ok());
    }

    #[test]
    fn stopped_events_say_closed() {
        let (events_tx, events) = flume::bounded::<u8>(1);
        let (_signals_tx, signals) = flume::bounded::<StopSignal>(1);
        drop(events_tx);
        assert_eq!(next(&events, &signals, None), Next::Closed);
    }

    #[test]
    fn the_deadline_ends_the_wait() {
        let (_events_tx, events) = flume::bounded::<u8>(1);
        let (_signals_tx, signals) = flume::bounded::<StopSignal>(1);
        let started = Instant::now();
        let at = started + Duration::from_millis(30);
        assert_eq!(next(&events, &signals, Some(at)), Next::Timeout);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn gone_signals_leave_the_events() {
        let (events_tx, events) = flume::bounded(1);
        let (signals_tx, signals) = flume::bounded::<StopSignal>(1);
        drop(signals_tx);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            events_tx.send(3u8)
        });
        assert_eq!(next(&events, &signals, None), Next::Event(3));
        assert!(sender.join().is_ok());
        let at = Instant::now() + Duration::from_millis(10);
        assert_eq!(next(&events, &signals, Some(at)), Next::Closed);
    }

    #[test]
    fn a_queued_signal_is_taken_before_the_sender_is_missed() {
        let (_events_tx, events) = flume::bounded::<u8>(1);
        let (signals_tx, signals) = flume::bounded(1);
        signals_tx.send(StopSignal::Interrupt).expect("send");
        drop(signals_tx);
        assert_eq!(
            next(&events, &signals, None),
            Next::Signal(StopSignal::Interrupt)
        );
    }

    #[test]
    fn a_raised_sigterm_arrives_on_the_channel() {
        let signals = StopSignals::listen(&[StopSignal::Terminate]).expect("listen");
        signal_hook::low_level::raise(SIGTERM).expect("raise");
        assert_eq!(
            signals.receiver().recv_timeout(Duration::from_secs(5)),
            Ok(StopSignal::Terminate)
        );
    }

    #[test]
    fn signal_numbers_map_both_ways() {
        for signal in [StopSignal::Interrupt, StopSignal::Terminate] {
            assert_eq!(StopSignal::from_number(signal.number()), Some(signal));
        }
        assert_eq!(StopSignal::from_number(0), None);
    }
}

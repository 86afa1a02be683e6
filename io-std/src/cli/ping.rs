//! `tryst ping`, written once for both binaries: the round trip to a
//! permitted peer over the direct path, like `tailscale ping`.
//!
//! `tryst ping ... TARGET [--count N] [--interval DUR] [--timeout DUR]`
//! asks for a session with TARGET exactly as `tryst connect` does (same
//! flags, same registration, the same uniform answer and exit code 3 when
//! the request does not succeed), waits for the encrypted direct path, then
//! pings over it: one line per answer (`pong from home (ADDR) via direct in
//! 0.42 ms`) or per ping lost, and a summary (sent, received, loss,
//! min/median/max). Each ping is the core's
//! [`tryst_core::peer::session::PeerSession::ping`]: an ack-eliciting
//! packet whose acknowledgement, the peer's ack delay subtracted, gives the
//! round trip, so the target's daemon answers with no change.
//!
//! Exit code 0 if at least one pong came, 1 if none (or no direct path),
//! and `connect`'s codes otherwise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tryst_core::peer::session::PeerEvent;
use tryst_core::terminal::TerminalEvent;
use tryst_core::wire::{EndReason, SessionId};

use super::connect::{open_session, parse_duration, Checked, ANSWER_TIMEOUT, EXIT_GRACE};
use super::driver::Driver;
use super::signals::{self, Next, StopSignal, StopSignals};
use super::terminal::TerminalCommon;
use super::CliError;
use crate::role::terminal::{Event, TerminalHandle, TerminalOptions};

/// Default `--count`.
pub const DEFAULT_COUNT: u32 = 4;
/// Default `--interval`.
pub const DEFAULT_INTERVAL: &str = "1s";
/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: &str = "2s";
/// How long after its timeout a ping's answer is still waited for locally
/// (the core reports the loss at the timeout; this only guards against a
/// stuck loop).
pub const LOSS_GRACE: Duration = Duration::from_millis(500);
/// Seconds of session asked for beyond the pings' own time.
pub const SESSION_MARGIN_SECS: u64 = 10;

/// `tryst ping`: the round trip to a peer over the direct path.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub common: TerminalCommon,
    /// The device name to reach.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// How many pings to send (at least 1).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_COUNT,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Time between two pings (e.g. 1s, 200ms; bare numbers are seconds).
    #[arg(long, value_name = "DUR", default_value = DEFAULT_INTERVAL, value_parser = parse_duration)]
    pub interval: Duration,
    /// How long one ping's answer may take before it counts as lost.
    #[arg(long, value_name = "DUR", default_value = DEFAULT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What the pings brought back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// Pings sent.
    pub sent: u32,
    /// Round trips of the answered ones, in the order they came.
    pub rtts: Vec<Duration>,
}

impl Tally {
    /// The summary lines: counts and loss, then min/median/max when any
    /// answer came.
    pub fn summary(&self, target: &str) -> Vec<String> {
        let received = self.rtts.len() as u32;
        let loss = if self.sent == 0 {
            0.0
        } else {
            f64::from(self.sent - received) * 100.0 / f64::from(self.sent)
        };
        let mut lines = vec![
            format!("--- {target} ping statistics ---"),
            format!("{} sent, {received} received, {loss:.0}% loss", self.sent),
        ];
        if let Some((min, median, max)) = self.spread() {
            lines.push(format!(
                "round trip min/median/max = {}/{}/{} ms",
                ms(min),
                ms(median),
                ms(max)
            ));
        }
        lines
    }

    /// Min, median (the lower middle for an even count) and max round trip.
    pub fn spread(&self) -> Option<(Duration, Duration, Duration)> {
        let mut sorted = self.rtts.clone();
        sorted.sort();
        let min = *sorted.first()?;
        let max = *sorted.last()?;
        let median = sorted[(sorted.len() - 1) / 2];
        Some((min, median, max))
    }
}

/// A round trip in milliseconds, two decimals.
fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Seconds of session to ask for: every ping's interval and the last one's
/// timeout, plus a margin.
fn session_secs(args: &PingArgs) -> u32 {
    let pings = args
        .interval
        .saturating_mul(args.count)
        .saturating_add(args.timeout);
    let secs = pings.as_secs().saturating_add(SESSION_MARGIN_SECS);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Runs `tryst ping` on `driver`.
pub fn run<D: Driver>(driver: &D, args: PingArgs) -> Result<(), CliError> {
    let checked = Checked::new(&args.common, &args.target)?;
    let (handle, events) = checked.start(driver, TerminalOptions::default())?;
    let session_id = open_session(&handle, &events, &args.target, session_secs(&args))?;
    let result = ping_session(&handle, &events, session_id, &args);
    let _ = handle.close(session_id, EndReason::Completed).wait();
    wait_ended(&events, session_id);
    let _ = handle.shutdown(EXIT_GRACE).wait();
    let tally = result?;
    for line in tally.summary(&args.target) {
        println!("{line}");
    }
    if tally.rtts.is_empty() {
        return Err(CliError::failed(format!("no pong from {}", args.target)));
    }
    Ok(())
}

/// The session's direct path: where the peer is, once it is up.
struct Path {
    /// The peer's address on it.
    peer: Option<SocketAddr>,
    /// Whether the direct path ended.
    ended: bool,
}

impl Path {
    /// Follows one event of `session_id`.
    fn on_event(&mut self, session_id: SessionId, event: &Event) {
        match event {
            Event::Peer {
                session_id: id,
                event,
            } if *id == session_id => match event {
                PeerEvent::Connected { peer_addr, .. }
                | PeerEvent::PathChanged { peer_addr, .. } => {
                    self.peer = Some(*peer_addr);
                }
                PeerEvent::Ended { .. } => self.ended = true,
                _ => {}
            },
            Event::Terminal(TerminalEvent::SessionEnded { session_id: id, .. })
                if *id == session_id =>
            {
                self.ended = true;
            }
            _ => {}
        }
    }
}

/// Waits for the direct path, then pings over it `--count` times (or
/// until Ctrl-C or the session's end), printing each answer.
fn ping_session(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    session_id: SessionId,
    args: &PingArgs,
) -> Result<Tally, CliError> {
    let signals = StopSignals::listen(&[StopSignal::Interrupt, StopSignal::Terminate])?;
    let mut path = Path {
        peer: None,
        ended: false,
    };
    let up_by = Instant::now() + ANSWER_TIMEOUT;
    while path.peer.is_none() {
        if path.ended {
            return Err(CliError::failed(
                "no direct path to the peer: hole punching did not get through",
            ));
        }
        match signals::next(events, signals.receiver(), Some(up_by)) {
            Next::Event(event) => path.on_event(session_id, &event),
            Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
            Next::Signal(_) => return Ok(Tally::default()),
            Next::Timeout => {
                return Err(CliError::failed(
                    "no direct path to the peer: hole punching did not get through",
                ))
            }
        }
    }
    let mut tally = Tally::default();
    for seq in 1..=args.count {
        let started = Instant::now();
        let id = match handle.ping(session_id, args.timeout).wait() {
            Ok(id) => id,
            // The path closed under us (the session's end): stop here.
            Err(_) if path.ended => break,
            Err(e) => return Err(CliError::failed(e)),
        };
        tally.sent += 1;
        let answer_by = started + args.timeout + LOSS_GRACE;
        let mut rtt = None;
        let mut stop = false;
        loop {
            match signals::next(events, signals.receiver(), Some(answer_by)) {
                Next::Event(Event::Peer {
                    session_id: sid,
                    event: PeerEvent::Pong { id: pong, rtt: r },
                }) if sid == session_id && pong == id => {
                    rtt = Some(r);
                    break;
                }
                Next::Event(Event::Peer {
                    session_id: sid,
                    event: PeerEvent::PingLost { id: lost },
                }) if sid == session_id && lost == id => break,
                Next::Event(event) => {
                    path.on_event(session_id, &event);
                    if path.ended {
                        stop = true;
                        break;
                    }
                }
                Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
                Next::Signal(_) => {
                    stop = true;
                    break;
                }
                Next::Timeout => break,
            }
        }
        let peer = path.peer.map_or_else(|| "?".to_owned(), |a| a.to_string());
        match rtt {
            Some(rtt) => {
                println!(
                    "pong from {} ({peer}) via direct in {} ms",
                    args.target,
                    ms(rtt)
                );
                tally.rtts.push(rtt);
            }
            None if stop => {}
            None => println!(
                "ping {seq} to {} ({peer}): no answer within {}",
                args.target,
                humantime::format_duration(args.timeout)
            ),
        }
        if stop || seq == args.count {
            break;
        }
        // The next ping at its interval, following events meanwhile.
        let next_at = started + args.interval;
        loop {
            match signals::next(events, signals.receiver(), Some(next_at)) {
                Next::Event(event) => {
                    path.on_event(session_id, &event);
                    if path.ended {
                        return Ok(tally);
                    }
                }
                Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
                Next::Signal(_) => return Ok(tally),
                Next::Timeout => break,
            }
        }
    }
    Ok(tally)
}

/// Waits a little for the direct path's end after the close (so the CLOSE
/// reaches the peer before the terminal shuts down).
fn wait_ended(events: &flume::Receiver<Event>, session_id: SessionId) {
    let deadline = Instant::now() + EXIT_GRACE;
    while let Ok(event) = events.recv_deadline(deadline) {
        match event {
            Event::Peer {
                session_id: id,
                event: PeerEvent::Ended { .. },
            } if id == session_id => return,
            Event::Terminal(TerminalEvent::SessionEnded { session_id: id, .. })
                if id == session_id =>
            {
                return
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_loss_and_spread() {
        let tally = Tally {
            sent: 4,
            rtts: vec![
                Duration::from_micros(550),
                Duration::from_micros(310),
                Duration::from_micros(420),
            ],
        };
        assert_eq!(
            tally.summary("home"),
            [
                "--- home ping statistics ---",
                "4 sent, 3 received, 25% loss",
                "round trip min/median/max = 0.31/0.42/0.55 ms",
            ]
        );
    }

    #[test]
    fn summary_without_answers_has_no_spread() {
        let tally = Tally {
            sent: 2,
            rtts: Vec::new(),
        };
        assert_eq!(
            tally.summary("home"),
            [
                "--- home ping statistics ---",
                "2 sent, 0 received, 100% loss"
            ]
        );
        assert_eq!(tally.spread(), None);
    }

    #[test]
    fn ping_flags_parse_with_their_defaults() {
        let command = super::super::parse(
            "tryst",
            [
                "tryst",
                "ping",
                "--name",
                "phone",
                "--server",
                "127.0.0.1:7400",
                "--trigger",
                "127.0.0.1:7401",
                "--server-key",
                "k",
                "--state-dir",
                "/s",
                "home",
            ],
        )
        .expect("parses");
        match command {
            super::super::Command::Ping(a) => {
                assert_eq!(a.count, DEFAULT_COUNT);
                assert_eq!(a.interval, Duration::from_secs(1));
                assert_eq!(a.timeout, Duration::from_secs(2));
                assert_eq!(a.target, "home");
            }
            other => panic!("{other:?}"),
        }
    }
}

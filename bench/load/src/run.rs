//! The three loads on the tryst servers: connection set-ups, registrations
//! and keepalives. Each terminal (or pair) is one task; all tasks register
//! first, then start together and run for the measured window.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use rand_core::{OsRng, RngCore};
use tokio::sync::{watch, Semaphore};
use tryst_core::crypto::StaticKeypair;
use tryst_core::ratelimit::{Limit, TokenBucket, CONNECTION_REQUESTS};
use tryst_core::session_server::IDENTITY_REGISTRATIONS;
use tryst_core::terminal::{JudgePolicy, TerminalConfig, TerminalEvent};
use tryst_core::time::Instant;
use tryst_core::wire::{DecisionMode, EndReason, PublicKey, SessionId};

use crate::node::Node;
use crate::stats::Tally;

/// Most simulated terminals in one run (each holds two descriptors).
pub const MAX_TERMINALS: usize = 200_000;
/// Most registrations running at once while the terminals come up.
pub const PREPARE_CONCURRENCY: usize = 128;
/// How long every terminal together may take to register and come online.
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one terminal may take to register and come online.
pub const PREPARE_ONE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one operation may take before it counts as an error (above
/// the session server's 5 s uniform deny delay, so a denial is seen as one).
pub const OP_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a keepalive waits for its ack (the terminal's own ack timeout).
pub const KEEPALIVE_OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Timer jumps tried to make the machine send its next keepalive.
const KEEPALIVE_JUMPS: usize = 4;
/// Pause after an operation that could not even start.
const ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Which load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connection set-ups between pairs (the first embodiment: list).
    Setups {
        /// The second embodiment: the target is asked (permission inquiry).
        inquiry: bool,
    },
    /// Registrations (one Noise IK handshake each, on a new stream).
    Registrations,
    /// Keepalives (one tagged datagram and its tagged ack each).
    Keepalives,
}

/// What a run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The session server (TCP).
    pub control: SocketAddr,
    /// The trigger server (UDP).
    pub trigger: SocketAddr,
    /// The session server's static key.
    pub server_key: PublicKey,
    /// Simulated terminals (set-ups use them in pairs).
    pub terminals: usize,
    /// The measured window.
    pub seconds: f64,
    /// Operations per second offered (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    /// The load.
    pub mode: Mode,
    /// The server process, whose CPU and memory the window is measured for.
    pub server_pid: Option<u32>,
    /// The trigger server's keepalive limit per device, which the
    /// keepalive load honours (the core's `KEEPALIVES` unless the server
    /// was given `--keepalive-limit`).
    pub keepalive_limit: Limit,
}

/// What a run measured, before the server's figures are added.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The merged tally.
    pub tally: Tally,
    /// Terminals that did not register or come online in time.
    pub prepare_failed: usize,
    /// Seconds the preparation took.
    pub prepare_s: f64,
    /// The server's CPU and memory over the window.
    pub server: crate::procs::WindowUsage,
}

/// The source address of terminal `index`: 127.x.y.z over 127.1.0.1
/// onwards (z in 1..=254), one per terminal, so per-source limits see as
/// many sources as terminals, as behind many NATs.
pub fn source(index: usize) -> IpAddr {
    let z = 1 + index % 254;
    let y = (index / 254) % 256;
    let x = 1 + index / (254 * 256);
    let octet = |v: usize| u8::try_from(v).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(127, octet(x), octet(y), octet(z)))
}

/// Real time as a core instant since `origin`.
fn core_now(origin: StdInstant) -> Instant {
    Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// When operations may start: at once while the window lasts (closed
/// loop), or on a shared schedule of `rate` per second (open loop; an
/// operation's latency counts from its slot, so a late start is seen).
pub struct Pace {
    start: StdInstant,
    end: StdInstant,
    rate: Option<f64>,
    next: AtomicU64,
}

impl Pace {
    /// A window from `start` to `end`, open loop at `rate` per second in
    /// total, or closed loop.
    pub fn new(start: StdInstant, end: StdInstant, rate: Option<f64>) -> Pace {
        Pace {
            start,
            end,
            rate: rate.filter(|r| *r > 0.0),
            next: AtomicU64::new(0),
        }
    }

    /// The start of the next operation, after waiting for its slot; `None`
    /// once the window is over.
    pub async fn next_op(&self) -> Option<StdInstant> {
        match self.rate {
            None => {
                let now = StdInstant::now();
                (now < self.end).then_some(now)
            }
            Some(rate) => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                let at = self.start + Duration::from_secs_f64(k as f64 / rate);
                if at >= self.end {
                    return None;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                Some(at)
            }
        }
    }

    /// Waits for a token of `bucket` (the local mirror of a server limit
    /// on one identity) for the operation planned at `t0`; `None` if the
    /// window ends first. The operation's start: `t0` in the open loop (a
    /// wait is part of its latency), the end of the wait in the closed loop.
    async fn take(
        &self,
        t0: StdInstant,
        bucket: &mut TokenBucket,
        origin: StdInstant,
        tally: &mut Tally,
    ) -> Option<StdInstant> {
        let mut waited = false;
        loop {
            match bucket.check(core_now(origin)) {
                Ok(()) => {
                    if !waited {
                        return Some(t0);
                    }
                    tally.throttled += 1;
                    return Some(if self.rate.is_some() {
                        t0
                    } else {
                        StdInstant::now()
                    });
                }
                Err(limited) => {
                    waited = true;
                    let wake = StdInstant::now() + limited.retry_after;
                    if wake >= self.end {
                        return None;
                    }
                    tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
                }
            }
        }
    }
}

/// The local mirror of a server's per-identity `limit`, a tenth slower to
/// refill: the server's clock starts its bucket a little later than ours
/// and a request reaches it a little after we checked, so an exact mirror
/// would now and then be denied where the server is right to deny.
fn mirror(limit: Limit) -> Limit {
    Limit::one_every(limit.capacity(), limit.interval() + limit.interval() / 10)
}

/// A bucket with `limit` that has already spent one token (the
/// preparation's registration or keepalive).
fn spent_bucket(limit: Limit, origin: StdInstant) -> TokenBucket {
    let mut bucket = TokenBucket::new(mirror(limit));
    let _ = bucket.check(core_now(origin));
    bucket
}

/// The shared start signal and the preparation counters.
struct Gate {
    ready: AtomicUsize,
    failed: AtomicUsize,
    start: watch::Receiver<Option<Arc<Pace>>>,
    permits: Semaphore,
}

impl Gate {
    /// Waits for the window; `None` if the run was called off.
    async fn wait(&self) -> Option<Arc<Pace>> {
        let mut rx = self.start.clone();
        let pace = rx.wait_for(|p| p.is_some()).await.ok()?.clone();
        pace
    }
}

/// Runs `plan` to the end.
pub async fn run(plan: Plan) -> Outcome {
    let origin = StdInstant::now();
    let tag = OsRng.next_u32();
    let (start_tx, start_rx) = watch::channel(None);
    let gate = Arc::new(Gate {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        start: start_rx,
        permits: Semaphore::new(PREPARE_CONCURRENCY),
    });
    let terminals = plan.terminals.clamp(1, MAX_TERMINALS);
    let mut tasks = Vec::new();
    let units = match plan.mode {
        Mode::Setups { .. } => (terminals / 2).max(1),
        Mode::Registrations | Mode::Keepalives => terminals,
    };
    for unit in 0..units {
        let plan = plan.clone();
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            match plan.mode {
                Mode::Setups { inquiry } => {
                    pair_task(&plan, unit, tag, inquiry, origin, &gate).await
                }
                Mode::Registrations => registration_task(&plan, unit, tag, origin, &gate).await,
                Mode::Keepalives => keepalive_task(&plan, unit, tag, origin, &gate).await,
            }
        }));
    }
    // Everyone registered (or gave up), or the preparation timed out.
    let prepare_deadline = origin + PREPARE_TIMEOUT;
    while gate.ready.load(Ordering::Relaxed) + gate.failed.load(Ordering::Relaxed) < units
        && StdInstant::now() < prepare_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let prepare_s = origin.elapsed().as_secs_f64();
    let start = StdInstant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(plan.seconds.max(0.1));
    let pace = Arc::new(Pace::new(start, end, plan.rate));
    let _ = start_tx.send(Some(pace));
    let sampler = tokio::spawn(crate::procs::sample_window(plan.server_pid, start, end));
    let mut outcome = Outcome {
        prepare_s,
        ..Outcome::default()
    };
    for task in tasks {
        if let Ok(tally) = task.await {
            outcome.tally.merge(tally);
        }
    }
    outcome.server = sampler.await.unwrap_or_default();
    outcome.prepare_failed = gate.failed.load(Ordering::Relaxed);
    // Terminals that never came up are errors too.
    outcome.tally.errors += outcome.prepare_failed as u64;
    outcome
}

/// A terminal of this run: its name, key, config and sockets.
async fn make_node(
    plan: &Plan,
    index: usize,
    tag: u32,
    origin: StdInstant,
    mode: DecisionMode,
) -> Option<Node> {
    let name = format!("load-{tag:08x}-{index}");
    let mut config = TerminalConfig::new(&name, plan.trigger, plan.server_key).ok()?;
    config.mode = mode;
    config.judge = JudgePolicy::List;
    let keypair = StaticKeypair::generate(&mut OsRng);
    Node::bind(origin, source(index), plan.control, config, keypair)
        .await
        .ok()
}

/// Registers `node` and (if `online`) waits for its first keepalive ack.
async fn bring_up(node: &mut Node, online: bool) -> bool {
    let deadline = tokio::time::Instant::now() + PREPARE_ONE_TIMEOUT;
    let now = node.now();
    node.term.start(now);
    loop {
        while let Some(event) = node.term.poll_event() {
            match event {
                TerminalEvent::Registered { .. } if !online => return true,
                TerminalEvent::Online { .. } => return true,
                TerminalEvent::RegistrationRefused => return false,
                _ => {}
            }
        }
        tokio::select! {
            () = node.turn() => {}
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// Brings `nodes` up under the gate's concurrency bound and counts them.
async fn prepare(gate: &Gate, nodes: &mut [&mut Node], online: bool) -> bool {
    let Ok(_permit) = gate.permits.acquire().await else {
        gate.failed.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    for node in nodes.iter_mut() {
        if !bring_up(node, online).await {
            gate.failed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    }
    gate.ready.fetch_add(1, Ordering::Relaxed);
    true
}

/// Pair `unit`: terminal 2u asks for terminal 2u+1, which allows it, over
/// and over: connection request, trigger, poll, permission list (or
/// inquiry and answer), address inquiry, both address notifications; then
/// both end the session (and the server records it).
async fn pair_task(
    plan: &Plan,
    unit: usize,
    tag: u32,
    inquiry: bool,
    origin: StdInstant,
    gate: &Gate,
) -> Tally {
    let mut tally = Tally::default();
    let target_mode = if inquiry {
        DecisionMode::TerminalJudges
    } else {
        DecisionMode::PermissionList
    };
    let (Some(mut a), Some(mut b)) = (
        make_node(plan, 2 * unit, tag, origin, DecisionMode::PermissionList).await,
        make_node(plan, 2 * unit + 1, tag, origin, target_mode).await,
    ) else {
        gate.failed.fetch_add(1, Ordering::Relaxed);
        return tally;
    };
    let a_name = a.term.config().name().to_owned();
    let b_name = b.term.config().name().to_owned();
    if b.term.allow(&a_name).is_err() || !prepare(gate, &mut [&mut a, &mut b], true).await {
        return tally;
    }
    let Some(pace) = gate.wait().await else {
        return tally;
    };
    // The preparation sent no connection request: a full bucket.
    let mut bucket = TokenBucket::new(mirror(CONNECTION_REQUESTS));
    let mut b_ready: Vec<SessionId> = Vec::new();
    while let Some(t0) = pace.next_op().await {
        let Some(t0) = pace.take(t0, &mut bucket, origin, &mut tally).await else {
            break;
        };
        let now = a.now();
        let Ok(request) = a.term.connect(now, &b_name, 0) else {
            tally.error();
            tokio::time::sleep(ERROR_PAUSE).await;
            continue;
        };
        a.flush();
        let deadline = tokio::time::Instant::from_std(t0 + OP_TIMEOUT);
        let mut a_session = None;
        let mut failed = false;
        loop {
            while let Some(event) = a.term.poll_event() {
                match event {
                    TerminalEvent::SessionReady {
                        request_id,
                        session_id,
                        ..
                    } if request_id == request => a_session = Some(session_id),
                    TerminalEvent::ConnectFailed { request_id } if request_id == request => {
                        failed = true
                    }
                    _ => {}
                }
            }
            while let Some(event) = b.term.poll_event() {
                if let TerminalEvent::SessionReady { session_id, .. } = event {
                    b_ready.push(session_id);
                }
            }
            let both = a_session.is_some_and(|id| b_ready.contains(&id));
            if failed || both {
                break;
            }
            tokio::select! {
                () = a.turn() => {}
                () = b.turn() => {}
                () = tokio::time::sleep_until(deadline) => failed = true,
            }
        }
        if failed {
            tally.error();
        } else {
            tally.complete(t0.elapsed());
        }
        if let Some(id) = a_session {
            let now = a.now();
            let _ = a.term.finish_session(now, &id, EndReason::Completed);
            a.flush();
        }
        let now = b.now();
        for id in b_ready.drain(..) {
            let _ = b.term.finish_session(now, &id, EndReason::Completed);
        }
        b.flush();
    }
    tally
}

/// One terminal of `unit` doing `op` over and over through the window:
/// brought up first (registered; `online`: its first keepalive acked),
/// each operation after a token of the local mirror of the server's
/// `limit`. `op` gets the node and the operation's start and says whether
/// it completed.
#[allow(clippy::too_many_arguments)]
async fn solo_loop(
    plan: &Plan,
    unit: usize,
    tag: u32,
    origin: StdInstant,
    gate: &Gate,
    online: bool,
    limit: Limit,
    mut op: impl AsyncFnMut(&mut Node, StdInstant) -> bool,
) -> Tally {
    let mut tally = Tally::default();
    let Some(mut node) = make_node(plan, unit, tag, origin, DecisionMode::PermissionList).await
    else {
        gate.failed.fetch_add(1, Ordering::Relaxed);
        return tally;
    };
    if !prepare(gate, &mut [&mut node], online).await {
        return tally;
    }
    let Some(pace) = gate.wait().await else {
        return tally;
    };
    let mut bucket = spent_bucket(limit, origin);
    while let Some(t0) = pace.next_op().await {
        let Some(t0) = pace.take(t0, &mut bucket, origin, &mut tally).await else {
            break;
        };
        if op(&mut node, t0).await {
            tally.complete(t0.elapsed());
        } else {
            tally.error();
        }
    }
    tally
}

/// Terminal `unit` registers again and again, each time on a new stream
/// (as after a lost one: the machine presents its registration ticket).
async fn registration_task(
    plan: &Plan,
    unit: usize,
    tag: u32,
    origin: StdInstant,
    gate: &Gate,
) -> Tally {
    let register = async |node: &mut Node, t0: StdInstant| -> bool {
        node.drop_stream();
        let deadline = tokio::time::Instant::from_std(t0 + OP_TIMEOUT);
        let registered = 'op: loop {
            while let Some(event) = node.term.poll_event() {
                match event {
                    TerminalEvent::Registered { .. } => break 'op true,
                    TerminalEvent::RegistrationRefused => break 'op false,
                    _ => {}
                }
            }
            tokio::select! {
                () = node.turn() => {}
                () = tokio::time::sleep_until(deadline) => break 'op false,
            }
        };
        if !registered && !node.term.is_registered() {
            // Refused or stuck: start over for the next operation.
            let now = node.now();
            node.term.start(now);
        }
        registered
    };
    let limit = IDENTITY_REGISTRATIONS;
    solo_loop(plan, unit, tag, origin, gate, false, limit, register).await
}

/// Terminal `unit` sends keepalives as fast as the trigger server's
/// per-device limit allows: its clock skips to the machine's next
/// keepalive instead of waiting the interval; each keepalive waits for its
/// ack (a round trip with a tag checked each way).
async fn keepalive_task(
    plan: &Plan,
    unit: usize,
    tag: u32,
    origin: StdInstant,
    gate: &Gate,
) -> Tally {
    let keepalive = async |node: &mut Node, t0: StdInstant| -> bool {
        node.keepalive_sent = None;
        node.keepalive_acked = None;
        for _ in 0..KEEPALIVE_JUMPS {
            if node.keepalive_sent.is_some() || !node.skip_to_next_timer() {
                break;
            }
        }
        let Some((counter, _)) = node.keepalive_sent else {
            tokio::time::sleep(ERROR_PAUSE).await;
            return false;
        };
        let deadline = tokio::time::Instant::from_std(t0 + KEEPALIVE_OP_TIMEOUT);
        loop {
            if node.keepalive_acked.is_some_and(|(c, _)| c == counter) {
                return true;
            }
            while node.term.poll_event().is_some() {}
            tokio::select! {
                () = node.turn() => {}
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
    };
    solo_loop(
        plan,
        unit,
        tag,
        origin,
        gate,
        true,
        plan.keepalive_limit,
        keepalive,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_distinct_loopback_addresses() {
        let mut seen = std::collections::BTreeSet::new();
        for i in (0..MAX_TERMINALS)
            .step_by(97)
            .chain([0, 253, 254, 65023, 65024])
        {
            let ip = source(i);
            assert!(ip.is_loopback(), "{ip}");
            if let IpAddr::V4(v4) = ip {
                let last = v4.octets()[3];
                assert!((1..=254).contains(&last), "{ip}");
            }
            seen.insert((i, ip));
        }
        let ips: std::collections::BTreeSet<_> = seen.iter().map(|(_, ip)| *ip).collect();
        assert_eq!(ips.len(), seen.len());
        assert_eq!(source(0), IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(source(254), IpAddr::V4(Ipv4Addr::new(127, 1, 1, 1)));
    }
}

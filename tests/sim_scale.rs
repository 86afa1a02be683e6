//! Many terminals on the simulator: 10,000 behind NATs of their own (200 in
//! a debug build, where everything, the crypto first, runs ~35x slower),
//! both servers, 5% loss
//! and duplication with reordering on every terminal link, one simulated
//! hour. Shows registration, keepalives holding 30 s NAT mappings, address
//! expiry of terminals that vanish, and triggers at scale. Prints the wall
//! time: `cargo test --release -p tryst-tests --test sim_scale -- --nocapture`.

use std::time::{Duration, Instant as WallClock};

use tryst_core::terminal::TerminalEvent;
use tryst_core::trigger_server::TriggerEvent;
use tryst_tests::sim::seed::run_with_seeds;
use tryst_tests::sim::world::{Sim, SimConfig, TerminalKind, TerminalSpec};

/// Terminals in the run.
#[cfg(not(debug_assertions))]
const TERMINALS: usize = 10_000;
/// Terminals in the run (debug build: a fiftieth, same shape, so that
/// `cargo test --workspace` stays quick).
#[cfg(debug_assertions)]
const TERMINALS: usize = 200;

/// What runs each terminal. The release run's 10,000 terminals are bare
/// terminals behind the same `Machine` contract, driven by the same driver
/// (an endpoint holds its peer session slots inline, about 700 KB: 10,000
/// of them took 7.2 GB and 60 s against 0.56 GB and 31 s bare, with the
/// same keepalives and results, and this run never uses the direct path);
/// the debug run's 200 are the endpoints that ship.
#[cfg(not(debug_assertions))]
const KIND: TerminalKind = TerminalKind::Bare;
/// What runs each terminal (debug build: the endpoint that ships).
#[cfg(debug_assertions)]
const KIND: TerminalKind = TerminalKind::Endpoint;

/// [`KIND`], or endpoints if `TRYST_SIM_SCALE_ENDPOINTS` is set (to measure
/// the run on what ships; mind the memory).
fn kind() -> TerminalKind {
    if std::env::var_os("TRYST_SIM_SCALE_ENDPOINTS").is_some() {
        TerminalKind::Endpoint
    } else {
        KIND
    }
}

/// Simulated time of the run.
const RUN: Duration = Duration::from_secs(60 * 60);
/// Terminals switched off half-way, whose addresses must expire.
const VANISHING: usize = TERMINALS / 100;
/// Connection requests made at the end.
const REQUESTS: usize = 50;

fn name(i: usize) -> String {
    format!("dev{i:05}")
}

#[test]
fn ten_thousand_terminals_register_and_keep_alive_with_loss() {
    run_with_seeds(&[1], |seed| {
        let wall = WallClock::now();
        let mut sim = Sim::new(
            seed,
            SimConfig {
                log_limit: 4 * TERMINALS,
                terminal_kind: kind(),
                ..SimConfig::lossy(0.05)
            },
        );
        // Each terminal permits its neighbour, so requests can be made later.
        for i in 0..TERMINALS {
            let next = name((i + 1) % TERMINALS);
            sim.add_terminal(TerminalSpec::new(&name(i)).allow(&[&next]).unstarted());
        }
        // Switched on over the first minute, as after a power cut.
        let per_second = TERMINALS.div_ceil(60);
        for chunk in (0..TERMINALS).collect::<Vec<_>>().chunks(per_second) {
            for &t in chunk {
                sim.start(t);
            }
            sim.run_for(Duration::from_secs(1));
        }
        assert!(
            sim.run_until_all_online(Duration::from_secs(300)),
            "not all online after 5 minutes"
        );
        let online_at = sim.elapsed();

        // Half-way, 1% vanish (power cut): the trigger server must forget them.
        let half = RUN / 2;
        sim.run_until(tryst_core::time::Instant::ZERO + half);
        let gone: Vec<usize> = (0..VANISHING).map(|k| k * 100 + 7).collect();
        let gone_devices: Vec<_> = gone
            .iter()
            .filter_map(|&t| sim.terminal(t).terminal().device_id())
            .collect();
        for &t in &gone {
            sim.power_off(t);
        }
        sim.run_until(tryst_core::time::Instant::ZERO + RUN);
        sim.net.forget_closed_streams();

        // Keepalives held every live mapping and address.
        let alive: Vec<usize> = (0..TERMINALS).filter(|t| !gone.contains(t)).collect();
        let offline: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&t| !sim.is_online(t))
            .collect();
        assert!(
            offline.len() <= TERMINALS / 1000 + 1,
            "{} live terminals offline at the end",
            offline.len()
        );
        for &t in &gone {
            assert!(
                !sim.is_online(t),
                "vanished terminal {t} still has an address"
            );
        }
        // Forgotten by the trigger server: their addresses expired, or the
        // session server revoked their keys once their streams were gone.
        let forgotten = sim
            .ts_log()
            .iter()
            .filter(|e| match e {
                TriggerEvent::AddressExpired { device_id }
                | TriggerEvent::KeyRevoked { device_id } => gone_devices.contains(device_id),
                _ => false,
            })
            .count();
        assert_eq!(gone_devices.len(), gone.len());
        assert!(forgotten >= gone.len(), "forgotten {forgotten}");
        let mut lapsed = 0u64;
        let mut keepalives = 0u64;
        let mut reregistrations = 0u64;
        for &t in &alive {
            let node = sim.terminal(t);
            if let Some(nat) = node.nat {
                lapsed += sim.net.nat(nat).stats().mappings_expired;
            }
            keepalives += node.terminal().stats().keepalives_sent;
            reregistrations += node
                .log
                .iter()
                .filter(|e| matches!(e, TerminalEvent::Reregistering { .. }))
                .count() as u64;
        }

        // Triggers work at scale: requests to permitted neighbours.
        let mut ok = 0;
        for k in 0..REQUESTS {
            let from = (k * 97 + 3) % TERMINALS;
            let to = (from + TERMINALS - 1) % TERMINALS; // `to` permits `from`
            if gone.contains(&from) || gone.contains(&to) {
                continue;
            }
            let before = sim.sessions_ready(from).len();
            if sim.connect(from, &name(to), 30).is_err() {
                continue;
            }
            if sim.run_until_true(Duration::from_secs(20), |s| {
                s.sessions_ready(from).len() > before
            }) {
                ok += 1;
            }
        }
        let net = sim.net.stats();
        eprintln!(
            "{TERMINALS} terminals ({:?}), {:?} simulated, 5% loss: wall time {:.2?}; all online after {:?}; \
             {keepalives} keepalives, {lapsed} NAT mappings lapsed, {reregistrations} re-registrations, \
             {forgotten} vanished devices forgotten, {ok}/{REQUESTS} requests ready; {} steps, {} datagrams \
             ({} lost, {} duplicated)",
            kind(),
            sim.elapsed(),
            wall.elapsed(),
            online_at,
            sim.stats().steps,
            net.datagrams_sent,
            net.datagrams_lost,
            net.datagrams_duplicated,
        );
        assert!(
            ok >= REQUESTS * 8 / 10,
            "only {ok} of {REQUESTS} requests succeeded"
        );
        assert!(
            keepalives >= (alive.len() as u64) * 150,
            "keepalives: {keepalives}"
        );
    });
}

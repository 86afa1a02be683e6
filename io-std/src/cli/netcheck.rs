//! `tryst netcheck`, written once for both binaries: what this network's
//! NAT does, measured against the trigger server before any session (like
//! `tailscale netcheck`): the public address the trigger server observes,
//! whether the mapping varies by destination, the filtering, the idle time
//! a mapping survives, and a verdict.
//!
//! It registers like `tryst connect` (same flags and state dir), so its
//! probes are tagged under this registration's UDP key, then runs the
//! core's [`tryst_core::netcheck`] machine on fresh sockets
//! ([`crate::netcheck::run_netcheck`]). The mapping and filtering tests
//! need a trigger server with a probe port (`--probe-listen`). It ends in
//! about `--max-idle` plus 2 s.

use std::time::Duration;

use serde_json::json;
use tryst_core::netcheck::{NetcheckConfig, NetcheckReport, SURVIVE_GRACE};
use tryst_core::wire::{DeviceId, UdpKey, MIN_KEEPALIVE_INTERVAL};

use super::connect::{parse_duration, Checked, EXIT_GRACE};
use super::driver::Driver;
use super::terminal::TerminalCommon;
use super::CliError;
use crate::role::terminal::TerminalOptions;

/// `tryst netcheck`: the NAT between this device and the trigger server.
#[derive(Debug, clap::Args)]
pub struct NetcheckArgs {
    #[command(flatten)]
    pub common: TerminalCommon,
    /// The longest idle time tried (probes after 5, 10, 20, 40 s... up to
    /// it; e.g. 2m). Netcheck takes about this long.
    #[arg(long = "max-idle", value_name = "DUR", default_value = "20s", value_parser = parse_duration)]
    pub max_idle: Duration,
    /// Print one JSON object instead of the text lines.
    #[arg(long)]
    pub json: bool,
}

/// The longest the measuring itself may take beyond `--max-idle`.
const MEASURE_MARGIN: Duration = Duration::from_secs(10);

/// Runs `tryst netcheck` on `driver`.
pub fn run<D: Driver>(driver: &D, args: NetcheckArgs) -> Result<(), CliError> {
    let checked = Checked::new(&args.common, &args.common.name)?;
    let (handle, _events) = checked.start(driver, TerminalOptions::default())?;
    let credentials = handle.udp_credentials().wait();
    let result = match credentials {
        Ok(Some((device_id, key))) => measure(&args, device_id, key),
        Ok(None) => Err(CliError::usage(
            "a terminal runs on this state dir: netcheck registers on its own, stop the \
             terminal (or use another --state-dir and --name) first",
        )),
        Err(e) => Err(CliError::failed(e)),
    };
    let _ = handle.shutdown(EXIT_GRACE).wait();
    let report = result?;
    if args.json {
        println!("{}", to_json(&report));
    } else {
        for line in lines(&report) {
            println!("{line}");
        }
    }
    if report.observed.is_none() {
        return Err(CliError::failed(
            "no answer from the trigger server over UDP",
        ));
    }
    Ok(())
}

fn measure(
    args: &NetcheckArgs,
    device_id: DeviceId,
    key: UdpKey,
) -> Result<NetcheckReport, CliError> {
    let bind = args
        .common
        .bind
        .map(|b| std::net::SocketAddr::new(b.ip(), 0))
        .unwrap_or_else(|| match args.common.trigger {
            std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            std::net::SocketAddr::V6(_) => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
            }
        });
    let config = NetcheckConfig {
        server: args.common.trigger,
        device_id,
        key,
        max_idle: args.max_idle,
        local: None,
        txid_seed: 0,
    };
    let deadline = args.max_idle + SURVIVE_GRACE + MEASURE_MARGIN;
    crate::netcheck::run_netcheck(config, bind, deadline)?
        .ok_or_else(|| CliError::failed("netcheck did not finish in time"))
}

/// The text report, one fact a line, the verdict last.
pub fn lines(r: &NetcheckReport) -> Vec<String> {
    let or_none = |a: Option<std::net::SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
    let mut lines = vec![
        format!("observed address: {}", or_none(r.observed)),
        format!(
            "nat: {}",
            if r.public {
                "none (public address)"
            } else {
                "yes"
            }
        ),
    ];
    match r.probe_port {
        Some(port) => lines.push(format!(
            "mapping: {} (probe port {port} saw {})",
            r.mapping.label(),
            or_none(r.probe_observed)
        )),
        None => lines.push(format!(
            "mapping: {} (the trigger server has no probe port: --probe-listen)",
            r.mapping.label()
        )),
    }
    lines.push(format!(
        "filtering: {} (one server address: address-dependent and endpoint-independent look alike)",
        r.filtering.label()
    ));
    let tried: Vec<String> = r
        .survive
        .iter()
        .map(|s| {
            format!(
                "{}s {}",
                s.delay_secs,
                if s.survived { "ok" } else { "lost" }
            )
        })
        .collect();
    lines.push(format!(
        "mapping survives idle: {} ({})",
        r.survived_secs
            .map_or("less than the shortest probe".to_string(), |s| format!(
                "{s} s"
            )),
        tried.join(", ")
    ));
    if r.survived_secs
        .is_none_or(|s| u64::from(s) < MIN_KEEPALIVE_INTERVAL.as_secs())
    {
        lines.push(format!(
            "warning: keepalives come at most every {} s: this terminal may miss triggers",
            MIN_KEEPALIVE_INTERVAL.as_secs()
        ));
    }
    lines.push(format!("verdict: {}", r.verdict.label()));
    lines
}

/// The report as one JSON object.
pub fn to_json(r: &NetcheckReport) -> serde_json::Value {
    json!({
        "observed": r.observed.map(|a| a.to_string()),
        "probe_observed": r.probe_observed.map(|a| a.to_string()),
        "probe_port": r.probe_port,
        "public": r.public,
        "mapping": r.mapping.label(),
        "mapping_varies": matches!(r.mapping, tryst_core::netcheck::Mapping::VariesByDestination),
        "filtering": r.filtering.label(),
        "survive": r.survive.iter().map(|s| json!({"idle_secs": s.delay_secs, "survived": s.survived})).collect::<Vec<_>>(),
        "survived_secs": r.survived_secs,
        "verdict": r.verdict.label(),
    })
}

//! Baseline 1: `iperf3 -u -l 1350 -b 0` on 127.0.0.1 (one syscall per
//! datagram, no crypto, no reliability). The receiver's goodput is bytes it
//! received over its interval, from the client's `--json` `end.sum_received`.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::procs;
use crate::report::Sample;

/// Runs one iperf3 UDP test sending `size` bytes.
pub fn run_once(size: u64) -> Result<Sample> {
    let port = procs::free_port()?.to_string();
    let server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port, "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `iperf3 -s` (is iperf3 installed? `apt-get install -y iperf3`)")?;
    // The one-off server accepts exactly one control connection, so no probe:
    // give it a moment to listen, then retry the client while it refuses.
    let mut attempt = 0;
    let (client, out) = loop {
        std::thread::sleep(Duration::from_millis(150));
        let mut client = Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "-l",
                "1350",
                "-b",
                "0",
            ])
            .args(["-n", &size.to_string(), "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `iperf3 -c`")?;
        let mut s = String::new();
        if let Some(mut pipe) = client.stdout.take() {
            pipe.read_to_string(&mut s)
                .context("reading iperf3 output")?;
        }
        let exit = procs::wait(&client)?;
        if exit.success() || attempt >= 10 {
            break (exit, s);
        }
        attempt += 1;
    };
    let server_exit = match procs::wait_timeout(&server, Duration::from_secs(10))? {
        Some(e) => e,
        None => bail!("iperf3 server did not exit after the test"),
    };
    let json: Value = serde_json::from_str(&out).context("parsing iperf3 --json output")?;
    if let Some(err) = json.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    if !client.success() {
        bail!("iperf3 client exited with {:?}", client.code);
    }
    let recv = &json["end"]["sum_received"];
    let bytes = recv["bytes"].as_u64().context("end.sum_received.bytes")?;
    let secs = recv["seconds"]
        .as_f64()
        .context("end.sum_received.seconds")?;
    let lost = recv["lost_percent"].as_f64().unwrap_or(0.0);
    let cpu = &json["end"]["cpu_utilization_percent"];
    Ok(Sample {
        bytes,
        secs,
        snd_cpu: client.cpu_secs,
        rcv_cpu: server_exit.cpu_secs,
        note: format!(
            "lost {lost:.1}%; iperf3's own CPU: snd {:.0}% rcv {:.0}%",
            cpu["host_total"].as_f64().unwrap_or(0.0),
            cpu["remote_total"].as_f64().unwrap_or(0.0)
        ),
    })
}

//! Baseline 2: a bulk transfer over quinn (QUIC, TLS 1.3, congestion control,
//! GSO where the kernel offers it: quinn-udp's default), one unidirectional
//! stream, self-signed certificate from rcgen. Sender and receiver are two
//! processes (this binary re-executed with a hidden role subcommand), each on
//! a single-threaded tokio runtime, so each side's CPU is its own rusage.
//!
//! Goodput: bytes the receiving application read from the stream, over the
//! time from its first byte to its last (the receiver measures and prints it).

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use crate::procs;
use crate::report::Sample;

/// Size of the chunk the sender hands quinn per write (shared, never copied by the app).
const CHUNK: usize = 1 << 20;

/// Runs one transfer of `size` bytes between two child processes.
pub fn run_once(size: u64, work: &Path) -> Result<Sample> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let cert = work.join("quinn-cert.der");
    let mut receiver = Command::new(&exe)
        .arg("quinn-recv")
        .arg("--cert-out")
        .arg(&cert)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the quinn receiver")?;
    let mut out = BufReader::new(receiver.stdout.take().context("receiver stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)
        .context("reading the receiver's port")?;
    let port: u16 = match line.trim().strip_prefix("PORT ") {
        Some(p) => p.parse().context("receiver port")?,
        None => {
            procs::kill(&receiver);
            let _ = procs::wait(&receiver);
            bail!("quinn receiver did not start: {line:?}");
        }
    };
    let sender = Command::new(&exe)
        .arg("quinn-send")
        .arg("--connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cert")
        .arg(&cert)
        .arg("--size")
        .arg(size.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the quinn sender")?;
    let mut rest = String::new();
    out.read_to_string(&mut rest)
        .context("reading the receiver's result")?;
    let limit = Duration::from_secs(600);
    let rcv = procs::wait_timeout(&receiver, limit)?.context("quinn receiver hung")?;
    let snd = procs::wait_timeout(&sender, limit)?.context("quinn sender hung")?;
    if !rcv.success() || !snd.success() {
        bail!(
            "quinn: receiver exit {:?}, sender exit {:?}",
            rcv.code,
            snd.code
        );
    }
    let result = rest
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("quinn receiver printed no RESULT")?;
    let mut it = result.split_whitespace();
    let bytes: u64 = it.next().context("bytes")?.parse()?;
    let secs: f64 = it.next().context("secs")?.parse()?;
    if bytes != size {
        bail!("quinn delivered {bytes} of {size} bytes");
    }
    Ok(Sample {
        bytes,
        secs,
        snd_cpu: snd.cpu_secs,
        rcv_cpu: rcv.cpu_secs,
        note: String::new(),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// The receiver role: listens on 127.0.0.1, prints `PORT n`, accepts one
/// connection and one unidirectional stream, reads it to the end, prints
/// `RESULT <bytes> <seconds first byte to last byte>`.
pub fn receiver(cert_out: &PathBuf) -> Result<()> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let cert_der: CertificateDer<'static> = key.cert.der().clone();
    std::fs::write(cert_out, cert_der.as_ref()).context("writing the certificate")?;
    let pkcs8 = PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
    let config = quinn::ServerConfig::with_single_cert(vec![cert_der], pkcs8.into())?;
    runtime()?.block_on(async move {
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
        println!("PORT {}", endpoint.local_addr()?.port());
        let incoming = endpoint.accept().await.context("endpoint closed")?;
        let conn = incoming.await?;
        let mut stream = conn.accept_uni().await?;
        let mut total: u64 = 0;
        let mut first: Option<Instant> = None;
        while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
            if first.is_none() {
                first = Some(Instant::now());
            }
            total += chunk.bytes.len() as u64;
        }
        let last = Instant::now();
        let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        println!("RESULT {total} {secs:.6}");
        Ok(())
    })
}

/// The sender role: connects, opens one unidirectional stream, writes `size`
/// bytes in shared 1 MiB chunks, finishes, and waits until the receiver closes.
pub fn sender(connect: SocketAddr, cert: &PathBuf, size: u64) -> Result<()> {
    let der = std::fs::read(cert).context("reading the receiver's certificate")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der))?;
    let client = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    runtime()?.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(client);
        let conn = endpoint.connect(connect, "localhost")?.await?;
        let mut stream = conn.open_uni().await?;
        let chunk = Bytes::from(vec![0x5a_u8; CHUNK]);
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            stream.write_chunk(chunk.slice(..n)).await?;
            left -= n as u64;
        }
        stream.finish()?;
        conn.closed().await;
        endpoint.wait_idle().await;
        Ok(())
    })
}

//! `tryst-bench aead`: AES-256-GCM sealing speed on packet-sized buffers,
//! the RustCrypto `aes-gcm` crate (tryst-core's data channel) beside `ring`
//! (quinn's rustls provider here). One core, no I/O: the ceiling each AEAD
//! puts on a single-core sender or receiver.

use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use anyhow::Result;

/// Seals `total` bytes in `packet`-byte payloads with each AEAD and prints MB/s.
pub fn run(total: u64, packet: usize) -> Result<()> {
    let key = [7u8; 32];
    let mut buf = vec![0x5a_u8; packet];
    let packets = total.div_ceil(packet as u64);

    let cipher =
        aes_gcm::Aes256Gcm::new_from_slice(&key).map_err(|_| anyhow::anyhow!("aes-gcm key"))?;
    let t = Instant::now();
    for pn in 0..packets {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&pn.to_be_bytes());
        let tag = cipher
            .encrypt_in_place_detached(&nonce.into(), &pn.to_be_bytes(), &mut buf)
            .map_err(|_| anyhow::anyhow!("aes-gcm seal"))?;
        std::hint::black_box(&tag);
    }
    let rc = t.elapsed().as_secs_f64();

    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key)
            .map_err(|_| anyhow::anyhow!("ring key"))?,
    );
    let t = Instant::now();
    for pn in 0..packets {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&pn.to_be_bytes());
        let tag = ring_key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(pn.to_be_bytes()),
                &mut buf,
            )
            .map_err(|_| anyhow::anyhow!("ring seal"))?;
        std::hint::black_box(&tag);
    }
    let ring_secs = t.elapsed().as_secs_f64();
    let bytes = (packets * packet as u64) as f64;
    println!("AES-256-GCM seal, {packets} packets of {packet} bytes, one core:");
    println!("  aes-gcm 0.10 (tryst-core) {:>8.1} MB/s", bytes / rc / 1e6);
    println!(
        "  ring 0.17 (quinn/rustls)  {:>8.1} MB/s",
        bytes / ring_secs / 1e6
    );
    println!("  ratio ring / aes-gcm      {:>8.2}", rc / ring_secs);
    Ok(())
}

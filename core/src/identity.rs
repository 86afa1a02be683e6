//! Long-term identity keys and their text form.
//!
//! Every terminal and server has a long-term X25519 key pair; a terminal's
//! identity is its public key ([`PublicKey`]). The X25519 is
//! `x25519-dalek` 2.x, the one the Noise crate uses, so a [`SecretKey`] can
//! be handed to the Noise channel as its static key.
//!
//! # Key-file format
//!
//! A key is one line of ASCII: a label naming what it is and the format
//! version, one space, the 32 key bytes as 64 hex digits, a newline.
//!
//! ```text
//! tryst-secret-key-v1 <64 lowercase hex digits>\n
//! tryst-public-key-v1 <64 lowercase hex digits>\n
//! ```
//!
//! Writers emit exactly that (85 bytes). Readers also accept the line
//! without its final newline and upper-case hex digits, and refuse anything
//! else with a typed [`KeyTextError`]. A public key may also be given bare,
//! as its 64 hex digits (on a command line). The labels keep a secret key
//! from being taken for a public one, and the `v1` leaves room for another
//! key type later.
//!
//! Nothing here does IO; `tryst-std`'s `keyfile` module reads and writes the
//! files (mode 0600 for secret keys).

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::wire::PublicKey;

/// Length of an X25519 secret key.
pub const SECRET_KEY_LEN: usize = 32;
/// Label of a secret key file (followed by one space and the hex digits).
pub const SECRET_KEY_LABEL: &str = "tryst-secret-key-v1";
/// Label of a public key file (followed by one space and the hex digits).
pub const PUBLIC_KEY_LABEL: &str = "tryst-public-key-v1";
/// Hex digits of a 32-byte key.
pub const KEY_HEX_LEN: usize = 64;
/// Length of a key line as written: label, space, hex digits, newline.
pub const KEY_TEXT_LEN: usize = SECRET_KEY_LABEL.len() + 1 + KEY_HEX_LEN + 1;

// Both labels have the same length, so both lines do.
const _: () = assert!(SECRET_KEY_LABEL.len() == PUBLIC_KEY_LABEL.len());

/// A long-term X25519 secret key. Zeroized on drop; its `Debug` is redacted.
/// It has no `PartialEq`, so it cannot be compared in variable time by accident.
#[derive(Clone)]
pub struct SecretKey([u8; SECRET_KEY_LEN]);

impl SecretKey {
    /// A fresh key from a cryptographic random generator.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> SecretKey {
        let mut key = SecretKey([0; SECRET_KEY_LEN]);
        rng.fill_bytes(&mut key.0);
        key
    }

    /// Wraps raw key bytes (any 32 bytes are a valid X25519 secret: the
    /// scalar is clamped when used).
    pub fn from_bytes(bytes: [u8; SECRET_KEY_LEN]) -> SecretKey {
        SecretKey(bytes)
    }

    /// The raw key bytes, for the Noise channel's static key. Never log them.
    pub fn as_bytes(&self) -> &[u8; SECRET_KEY_LEN] {
        &self.0
    }

    /// The public key that goes with this secret key.
    pub fn public_key(&self) -> PublicKey {
        public_key(self)
    }

    /// The key pair the Noise handshakes take.
    pub fn keypair(&self) -> crate::crypto::StaticKeypair {
        crate::crypto::StaticKeypair::from_secret(self.0)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The public key of `secret`: X25519 of the secret with the base point.
pub fn public_key(secret: &SecretKey) -> PublicKey {
    secret.keypair().public_key()
}

/// True if `key` is a point of small order (or a non-canonical encoding of
/// one). Diffie-Hellman with such a key gives a result that does not depend
/// on the secret, so anyone could complete a Noise handshake as its owner:
/// such a key must never be accepted as an identity. The handshakes use the
/// same check ([`crate::crypto::is_low_order`]).
pub fn is_weak_public_key(key: &PublicKey) -> bool {
    crate::crypto::is_low_order(&key.0)
}

/// Why a key text was refused. No variant carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTextError {
    /// The text does not start with the expected label and a space.
    BadPrefix,
    /// A character that is not a hex digit where the key should be.
    BadHex,
    /// The key has this many hex digits instead of 64.
    WrongLength {
        /// Hex digits found.
        digits: usize,
    },
    /// Something other than one final newline follows the key.
    TrailingGarbage,
}

impl fmt::Display for KeyTextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyTextError::BadPrefix => write!(
                f,
                "not a tryst key (expected `{SECRET_KEY_LABEL} ` or `{PUBLIC_KEY_LABEL} ` before the hex digits)"
            ),
            KeyTextError::BadHex => f.write_str("the key contains a character that is not a hex digit"),
            KeyTextError::WrongLength { digits } => {
                write!(f, "the key has {digits} hex digits instead of {KEY_HEX_LEN}")
            }
            KeyTextError::TrailingGarbage => {
                f.write_str("unexpected text after the key (only one newline may follow it)")
            }
        }
    }
}

impl core::error::Error for KeyTextError {}

/// The text of a secret key file. Zeroized on drop; `Debug` is redacted.
pub struct SecretKeyText([u8; KEY_TEXT_LEN]);

impl SecretKeyText {
    /// The bytes to write to the file.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretKeyText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKeyText {}

impl fmt::Debug for SecretKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeyText(<redacted>)")
    }
}

/// The text of a public key file, `tryst-public-key-v1 <hex>\n`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKeyText([u8; KEY_TEXT_LEN]);

impl PublicKeyText {
    /// The whole line, newline included.
    pub fn as_str(&self) -> &str {
        // Always ASCII: a label, a space, hex digits and a newline.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Just the 64 hex digits (the bare form accepted on command lines).
    pub fn hex(&self) -> &str {
        let start = PUBLIC_KEY_LABEL.len() + 1;
        self.as_str()
            .get(start..start + KEY_HEX_LEN)
            .unwrap_or_default()
    }
}

impl fmt::Debug for PublicKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PublicKeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `label`, a space, `key` in lower-case hex and a newline.
fn format_line(label: &str, key: &[u8; 32]) -> [u8; KEY_TEXT_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'\n'; KEY_TEXT_LEN];
    let (head, rest) = out.split_at_mut(label.len());
    head.copy_from_slice(label.as_bytes());
    let (space, hex) = rest.split_at_mut(1);
    space.copy_from_slice(b" ");
    for (pair, byte) in hex.chunks_exact_mut(2).zip(key) {
        pair.copy_from_slice(&[
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 0x0f)],
        ]);
    }
    out
}

/// The value of one hex digit.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `text` = 64 hex digits, optionally followed by one newline, into `out`.
fn parse_hex_key(text: &[u8], out: &mut [u8; 32]) -> Result<(), KeyTextError> {
    let end = text
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(text.len());
    let (digits, tail) = text.split_at(end);
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(KeyTextError::BadHex);
    }
    if digits.len() != KEY_HEX_LEN {
        return Err(KeyTextError::WrongLength {
            digits: digits.len(),
        });
    }
    if !(tail.is_empty() || tail == b"\n") {
        return Err(KeyTextError::TrailingGarbage);
    }
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(KeyTextError::BadHex);
        };
        *byte = (hi << 4) | lo;
    }
    Ok(())
}

/// `text` after `label` and one space, or `BadPrefix`.
fn after_label<'t>(text: &'t [u8], label: &str) -> Result<&'t [u8], KeyTextError> {
    text.strip_prefix(label.as_bytes())
        .and_then(|rest| rest.strip_prefix(b" "))
        .ok_or(KeyTextError::BadPrefix)
}

/// The text of a secret key file for `key`.
pub fn format_secret_key(key: &SecretKey) -> SecretKeyText {
    SecretKeyText(format_line(SECRET_KEY_LABEL, &key.0))
}

/// Reads a secret key file's contents.
pub fn parse_secret_key(text: &[u8]) -> Result<SecretKey, KeyTextError> {
    let hex = after_label(text, SECRET_KEY_LABEL)?;
    // Decoded in place, so a failure leaves nothing behind but zeros.
    let mut key = SecretKey([0; SECRET_KEY_LEN]);
    parse_hex_key(hex, &mut key.0)?;
    Ok(key)
}

/// The text of a public key file for `key`.
pub fn format_public_key(key: &PublicKey) -> PublicKeyText {
    PublicKeyText(format_line(PUBLIC_KEY_LABEL, &key.0))
}

/// Reads a public key: a public key file's contents, or the bare 64 hex
/// digits (each optionally followed by one newline).
pub fn parse_public_key(text: &[u8]) -> Result<PublicKey, KeyTextError> {
    let hex = match after_label(text, PUBLIC_KEY_LABEL) {
        Ok(hex) => hex,
        // Bare hex starts with a digit; anything else is a wrong label.
        Err(e) if text.starts_with(SECRET_KEY_LABEL.as_bytes()) => return Err(e),
        Err(e) if !text.first().is_some_and(u8::is_ascii_hexdigit) => return Err(e),
        Err(_) => text,
    };
    let mut key = [0; 32];
    parse_hex_key(hex, &mut key)?;
    Ok(PublicKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    /// A deterministic generator for tests (never use outside them).
    struct CountingRng(u8);

    impl RngCore for CountingRng {
        fn next_u32(&mut self) -> u32 {
            rand_core::impls::next_u32_via_fill(self)
        }
        fn next_u64(&mut self) -> u64 {
            rand_core::impls::next_u64_via_fill(self)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl CryptoRng for CountingRng {}

    /// RFC 7748 section 6.1, Alice's key pair.
    const ALICE_SECRET: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn secret_text(hex: &str) -> std::string::String {
        format!("{SECRET_KEY_LABEL} {hex}\n")
    }

    #[test]
    fn public_key_matches_the_rfc_7748_vector() {
        let secret = parse_secret_key(secret_text(ALICE_SECRET).as_bytes()).unwrap();
        assert_eq!(format_public_key(&secret.public_key()).hex(), ALICE_PUBLIC);
    }

    #[test]
    fn generated_keys_come_from_the_injected_generator() {
        let a = SecretKey::generate(&mut CountingRng(0));
        let b = SecretKey::generate(&mut CountingRng(0));
        let c = SecretKey::generate(&mut CountingRng(100));
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), c.as_bytes());
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), c.public_key());
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let key = parse_secret_key(secret_text(ALICE_SECRET).as_bytes()).unwrap();
        let shown = format!("{key:?} {:?}", format_secret_key(&key));
        assert!(!shown.contains("77076d"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn secret_key_text_round_trips_in_the_documented_form() {
        let key = SecretKey::generate(&mut CountingRng(7));
        let text = format_secret_key(&key);
        assert_eq!(text.as_bytes().len(), KEY_TEXT_LEN);
        let s = core::str::from_utf8(text.as_bytes()).unwrap();
        assert!(s.starts_with("tryst-secret-key-v1 "));
        assert!(s.ends_with('\n'));
        let hex = &s[20..84];
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let back = parse_secret_key(text.as_bytes()).unwrap();
        assert_eq!(back.as_bytes(), key.as_bytes());
    }

    #[test]
    fn public_key_text_round_trips_in_file_and_bare_form() {
        let key = SecretKey::generate(&mut CountingRng(9)).public_key();
        let text = format_public_key(&key);
        assert_eq!(
            text.as_str(),
            format!("{PUBLIC_KEY_LABEL} {}\n", text.hex())
        );
        assert_eq!(parse_public_key(text.as_str().as_bytes()), Ok(key));
        assert_eq!(parse_public_key(text.hex().as_bytes()), Ok(key));
        let upper = text.hex().to_uppercase();
        assert_eq!(parse_public_key(upper.as_bytes()), Ok(key));
        let no_newline = text.as_str().trim_end();
        assert_eq!(parse_public_key(no_newline.as_bytes()), Ok(key));
    }

    #[test]
    fn key_text_errors_name_what_is_wrong() {
        let good = ALICE_SECRET;
        let cases: &[(std::string::String, KeyTextError)] = &[
            (
                format!("tryst-public-key-v1 {good}\n"),
                KeyTextError::BadPrefix,
            ),
            (
                format!("tryst-secret-key-v2 {good}\n"),
                KeyTextError::BadPrefix,
            ),
            (
                format!("tryst-secret-key-v1{good}\n"),
                KeyTextError::BadPrefix,
            ),
            (format!("{good}\n"), KeyTextError::BadPrefix),
            (std::string::String::new(), KeyTextError::BadPrefix),
            (secret_text(&good.replace('7', "g")), KeyTextError::BadHex),
            (
                secret_text(&good[..62]),
                KeyTextError::WrongLength { digits: 62 },
            ),
            (
                secret_text(&format!("{good}00")),
                KeyTextError::WrongLength { digits: 66 },
            ),
            (secret_text(""), KeyTextError::WrongLength { digits: 0 }),
            (
                format!("{SECRET_KEY_LABEL} {good}\n\n"),
                KeyTextError::TrailingGarbage,
            ),
            (
                format!("{SECRET_KEY_LABEL} {good} x\n"),
                KeyTextError::TrailingGarbage,
            ),
            (
                format!("{SECRET_KEY_LABEL} {good}\r\n"),
                KeyTextError::TrailingGarbage,
            ),
        ];
        for (text, expected) in cases {
            let got = parse_secret_key(text.as_bytes()).map(|_| ()).unwrap_err();
            assert_eq!(got, *expected, "{text:?}");
        }
        assert!(parse_secret_key(&[0xff; 200]).is_err());
    }

    #[test]
    fn a_secret_key_is_never_read_as_a_public_key() {
        let text = secret_text(ALICE_SECRET);
        assert_eq!(
            parse_public_key(text.as_bytes()),
            Err(KeyTextError::BadPrefix)
        );
        assert_eq!(
            parse_public_key(b"ssh-ed25519 AAAA"),
            Err(KeyTextError::BadPrefix)
        );
        assert_eq!(
            parse_public_key(&ALICE_PUBLIC.as_bytes()[..40]),
            Err(KeyTextError::WrongLength { digits: 40 })
        );
    }

    #[test]
    fn small_order_public_keys_are_weak() {
        // From libsodium's blocklist: u = 0 (order 2), u = 1 (order 4),
        // u = p - 1, and u = p + 1 (a non-canonical encoding of u = 1).
        let zero = PublicKey([0; 32]);
        let mut one = [0u8; 32];
        one[0] = 1;
        // p - 1 (order 2), encoded little-endian.
        let mut p_minus_1 = [0xffu8; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        let mut p_plus_1 = p_minus_1;
        p_plus_1[0] = 0xee;
        for weak in [
            zero,
            PublicKey(one),
            PublicKey(p_minus_1),
            PublicKey(p_plus_1),
        ] {
            assert!(is_weak_public_key(&weak), "{weak:?}");
        }
        let real = SecretKey::generate(&mut CountingRng(3)).public_key();
        assert!(!is_weak_public_key(&real));
    }
}

//! Onboarding (issue 17): one invite string that carries where the
//! servers are and the session server's public key, so a household sets
//! a device up with `tryst terminal --invite STRING --state-dir DIR`
//! instead of copying addresses and 64 hex digits.
//!
//! The string is `TRYST1:` and the base32 (RFC 4648, no padding) of:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | flags: bit 0 a device name follows the key; bit 1 a one-time enrolment code follows the name (needs bit 0); other bits 0 |
//! | 1+n | the control host (TCP): kind 4 + 4 bytes, kind 6 + 16 bytes, or kind 0 + 1-byte length + a DNS name |
//! | 2 | the control port, big-endian |
//! | 1+n | the trigger host (UDP), as the control host |
//! | 2 | the trigger port, big-endian |
//! | 32 | the session server's public key |
//! | 1+n | (flag bit 0) the device name: 1-byte length + UTF-8 |
//! | 16 | (flag bit 1) the one-time enrolment code for that name (`tryst invite --enrol NAME`) |
//! | 4 | checksum: the first 4 bytes of SHA-256 of everything before it |
//!
//! `1` in the prefix is the version; the prefix is read in any case. The
//! upper-case form fits a QR code's alphanumeric mode (`tryst invite
//! --qr`). `tryst server` writes the invite to `DIR/invite` at every start
//! (for `tryst invite --data-dir DIR` to print again) and prints it.
//!
//! `tryst invite --enrol NAME` mints a one-time enrolment code for a
//! `--closed` server: 16 random bytes, stored in the server's store only
//! as their SHA-256 with an expiry (`--expires`, 24 h by default), and put
//! in the invite. A terminal started with that invite sends the code inside
//! its Noise handshake; the server enrols its key for NAME once.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use data_encoding::BASE32_NOPAD;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tryst_core::session_server::enrol_code_hash;
use tryst_core::wire::{Name, PublicKey, ENROL_CODE_LEN};

use super::connect::parse_duration;
use super::end::{ask_server, store_error};
use super::server::ensure_data_dir;
use super::CliError;
use crate::store::{key_hex, now_us, OperatorCommand, StoreLocation, StoredEnrolCode};

/// The invite's prefix (its version is the `1`).
pub const PREFIX: &str = "TRYST1:";
/// The prefix's part before the version.
const SCHEME: &str = "TRYST";
/// The file in the server's data dir that holds the current invite.
pub const INVITE_FILE: &str = "invite";
/// Bytes of the checksum.
pub const CHECKSUM_LEN: usize = 4;
/// Longest DNS name in an invite.
pub const MAX_HOST_LEN: usize = 253;
/// Longest invite text read (two longest hosts and a longest name).
pub const MAX_INVITE_LEN: usize = 1024;
/// Flag bit: a device name follows the key.
const FLAG_NAME: u8 = 0x01;
/// Flag bit: a one-time enrolment code follows the name.
const FLAG_CODE: u8 = 0x02;
/// How long an enrolment code is valid unless `--expires` says.
pub const DEFAULT_CODE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Host kinds.
const HOST_NAME: u8 = 0;
const HOST_V4: u8 = 4;
const HOST_V6: u8 = 6;

/// Why a string is not a usable invite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// No `TRYST1:` prefix.
    #[error("not a tryst invite (it starts with {PREFIX})")]
    NotAnInvite,
    /// A `TRYSTn:` prefix of another version.
    #[error("an invite of version {0}, which this tryst does not read (it reads version 1)")]
    UnknownVersion(String),
    /// Not base32, or its checksum does not match: mistyped or cut.
    #[error("the invite is corrupted (mistyped or cut short): check it was copied whole")]
    Corrupted,
    /// The checksum matches but the content is not an invite this version writes.
    #[error("the invite is malformed: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_INVITE_LEN`].
    #[error("the invite is longer than {MAX_INVITE_LEN} characters")]
    TooLong,
}

/// Where one server is: an IP address or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address.
    Ip(IpAddr),
    /// A DNS name, resolved by the terminal.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

impl Host {
    /// `--public-addr HOST`: an IP address (v6 with or without brackets) or a DNS name.
    pub fn parse(text: &str) -> Result<Host, String> {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let ok = !text.is_empty()
            && text.len() <= MAX_HOST_LEN
            && text.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            Ok(Host::Name(text.to_ascii_lowercase()))
        } else {
            Err(format!("{text:?} is neither an IP address nor a DNS name"))
        }
    }
}

/// What an invite carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The session server's control host (TCP).
    pub control_host: Host,
    /// Its port.
    pub control_port: u16,
    /// The trigger server's host (UDP).
    pub trigger_host: Host,
    /// Its port.
    pub trigger_port: u16,
    /// The session server's public key.
    pub server_key: PublicKey,
    /// The device name it is meant for, if the operator gave one.
    pub name: Option<String>,
    /// The one-time enrolment code for that name (`--enrol`); only with a name.
    pub code: Option<[u8; ENROL_CODE_LEN]>,
}

impl Invite {
    /// `host:port` of the session server, as `--server` takes it.
    pub fn server_arg(&self) -> String {
        format!("{}:{}", self.control_host, self.control_port)
    }

    /// `host:port` of the trigger server, as `--trigger` takes it.
    pub fn trigger_arg(&self) -> String {
        format!("{}:{}", self.trigger_host, self.trigger_port)
    }

    /// The invite as text (`TRYST1:` and upper-case base32).
    pub fn encode(&self) -> String {
        let code = self.code.filter(|_| self.name.is_some());
        let flags = match (&self.name, code) {
            (Some(_), Some(_)) => FLAG_NAME | FLAG_CODE,
            (Some(_), None) => FLAG_NAME,
            (None, _) => 0,
        };
        let mut bytes = vec![flags];
        put_host(&mut bytes, &self.control_host);
        bytes.extend_from_slice(&self.control_port.to_be_bytes());
        put_host(&mut bytes, &self.trigger_host);
        bytes.extend_from_slice(&self.trigger_port.to_be_bytes());
        bytes.extend_from_slice(&self.server_key.0);
        if let Some(name) = &self.name {
            // Names are at most 64 bytes (checked where one is given).
            let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
        }
        if let Some(code) = code {
            bytes.extend_from_slice(&code);
        }
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        format!("{PREFIX}{}", BASE32_NOPAD.encode(&bytes))
    }

    /// Reads an invite (any case, surrounding white space ignored).
    pub fn decode(text: &str) -> Result<Invite, InviteError> {
        let text = text.trim();
        if text.len() > MAX_INVITE_LEN {
            return Err(InviteError::TooLong);
        }
        let upper = text.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix(SCHEME) else {
            return Err(InviteError::NotAnInvite);
        };
        let Some((version, body)) = rest.split_once(':') else {
            return Err(InviteError::NotAnInvite);
        };
        if version != "1" {
            if !version.is_empty()
                && version.len() <= 4
                && version.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(InviteError::UnknownVersion(version.to_owned()));
            }
            return Err(InviteError::NotAnInvite);
        }
        let bytes = BASE32_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| InviteError::Corrupted)?;
        if bytes.len() < CHECKSUM_LEN + 1 {
            return Err(InviteError::Corrupted);
        }
        let (content, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        let expected = Sha256::digest(content);
        // Not a secret: a plain comparison is fine.
        if expected[..CHECKSUM_LEN] != *sum {
            return Err(InviteError::Corrupted);
        }
        let mut cursor = Cursor(content);
        let flags = cursor.byte()?;
        if flags & !(FLAG_NAME | FLAG_CODE) != 0 {
            return Err(InviteError::Malformed("unknown flags"));
        }
        if flags & FLAG_CODE != 0 && flags & FLAG_NAME == 0 {
            return Err(InviteError::Malformed(
                "an enrolment code without a device name",
            ));
        }
        let control_host = cursor.host()?;
        let control_port = cursor.port()?;
        let trigger_host = cursor.host()?;
        let trigger_port = cursor.port()?;
        let mut key = [0u8; 32];
        key.copy_from_slice(cursor.take(32)?);
        let name = if flags & FLAG_NAME != 0 {
            let len = usize::from(cursor.byte()?);
            let name = std::str::from_utf8(cursor.take(len)?)
                .map_err(|_| InviteError::Malformed("the device name is not UTF-8"))?;
            Name::new(name).map_err(|_| InviteError::Malformed("not a device name"))?;
            Some(name.to_owned())
        } else {
            None
        };
        let code = if flags & FLAG_CODE != 0 {
            let mut code = [0u8; ENROL_CODE_LEN];
            code.copy_from_slice(cursor.take(ENROL_CODE_LEN)?);
            Some(code)
        } else {
            None
        };
        if !cursor.0.is_empty() {
            return Err(InviteError::Malformed("bytes after the end"));
        }
        Ok(Invite {
            control_host,
            control_port,
            trigger_host,
            trigger_port,
            server_key: PublicKey(key),
            name,
            code,
        })
    }
}

fn put_host(bytes: &mut Vec<u8>, host: &Host) {
    match host {
        Host::Ip(IpAddr::V4(ip)) => {
            bytes.push(HOST_V4);
            bytes.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            bytes.push(HOST_V6);
            bytes.extend_from_slice(&ip.octets());
        }
        Host::Name(name) => {
            // At most MAX_HOST_LEN (checked by Host::parse).
            let name = &name.as_bytes()[..name.len().min(MAX_HOST_LEN)];
            bytes.push(HOST_NAME);
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
        }
    }
}

/// A byte cursor over a decoded invite.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InviteError> {
        if self.0.len() < n {
            return Err(InviteError::Malformed("cut short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, InviteError> {
        Ok(self.take(1)?[0])
    }

    fn port(&mut self) -> Result<u16, InviteError> {
        let b = self.take(2)?;
        match u16::from_be_bytes([b[0], b[1]]) {
            0 => Err(InviteError::Malformed("port 0")),
            port => Ok(port),
        }
    }

    fn host(&mut self) -> Result<Host, InviteError> {
        match self.byte()? {
            HOST_V4 => {
                let b: [u8; 4] = self
                    .take(4)?
                    .try_into()
                    .map_err(|_| InviteError::Malformed("cut short"))?;
                Ok(Host::Ip(IpAddr::from(b)))
            }
            HOST_V6 => {
                let b: [u8; 16] = self
                    .take(16)?
                    .try_into()
                    .map_err(|_| InviteError::Malformed("cut short"))?;
                Ok(Host::Ip(IpAddr::from(b)))
            }
            HOST_NAME => {
                let len = usize::from(self.byte()?);
                let name = std::str::from_utf8(self.take(len)?)
                    .map_err(|_| InviteError::Malformed("the host is not a DNS name"))?;
                Host::parse(name).map_err(|_| InviteError::Malformed("the host is not a DNS name"))
            }
            _ => Err(InviteError::Malformed("unknown host kind")),
        }
    }
}

/// The invite of a server listening on `control` and `trigger`, reached
/// at `public` if given (needed when it listens on 0.0.0.0 or [::]);
/// `None` when it listens on every address and no `public` host is given.
pub fn server_invite(
    control: SocketAddr,
    trigger: SocketAddr,
    public: Option<&Host>,
    key: &PublicKey,
) -> Option<Invite> {
    let host = |addr: SocketAddr| match public {
        Some(host) => Some(host.clone()),
        None if addr.ip().is_unspecified() => None,
        None => Some(Host::Ip(addr.ip())),
    };
    Some(Invite {
        control_host: host(control)?,
        control_port: control.port(),
        trigger_host: host(trigger)?,
        trigger_port: trigger.port(),
        server_key: *key,
        name: None,
        code: None,
    })
}

/// Writes the current invite to `dir/invite` (mode 0600, replaced), or
/// removes a stale one when there is none.
pub fn store_invite(dir: &Path, invite: Option<&Invite>) -> Result<(), CliError> {
    let path = dir.join(INVITE_FILE);
    match invite {
        Some(invite) => {
            let tmp = dir.join(format!("{INVITE_FILE}.tmp"));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut file = options.open(&tmp)?;
                writeln!(file, "{}", invite.encode())?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| CliError::failed(format!("{}: {e}", path.display())))
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CliError::failed(format!("{}: {e}", path.display())))
            }
            _ => Ok(()),
        },
    }
}

/// Arguments of `tryst invite`.
#[derive(Debug, clap::Args)]
pub struct InviteArgs {
    /// The server's data dir (where `tryst server` wrote the invite).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The device the invite is for: a terminal that uses it takes this
    /// name unless it is given --name.
    #[arg(long, value_name = "NAME", conflicts_with = "enrol")]
    pub name: Option<String>,
    /// Mint a one-time enrolment code for the device NAME (for a
    /// `--closed` server): the first terminal that registers as NAME with
    /// this invite is enrolled for its key; the store keeps only the
    /// code's SHA-256.
    #[arg(long, value_name = "NAME")]
    pub enrol: Option<String>,
    /// How long the enrolment code is valid (with --enrol): `24h`, `30m`, ...
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "enrol")]
    pub expires: Option<Duration>,
    /// Also show the invite as a QR code.
    #[arg(long)]
    pub qr: bool,
}

/// `tryst invite`: prints the invite of the server in `--data-dir` again.
pub fn run(args: InviteArgs) -> Result<(), CliError> {
    let path = args.data_dir.join(INVITE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::usage(format!(
                "no invite in {}: start `tryst server --data-dir {}` once (with --public-addr HOST if it listens on 0.0.0.0 or [::])",
                args.data_dir.display(),
                args.data_dir.display()
            )))
        }
        Err(e) => return Err(CliError::usage(format!("{}: {e}", path.display()))),
    };
    let mut invite =
        Invite::decode(&text).map_err(|e| CliError::failed(format!("{}: {e}", path.display())))?;
    if let Some(name) = args.name.as_ref().or(args.enrol.as_ref()) {
        Name::new(name)
            .map_err(|e| CliError::usage(format!("{name:?} is not a device name: {e}")))?;
        invite.name = Some(name.clone());
    }
    if let Some(name) = &args.enrol {
        let lifetime = args.expires.unwrap_or(DEFAULT_CODE_LIFETIME);
        invite.code = Some(mint_code(&args.data_dir, name, lifetime)?);
        print_invite(&invite, args.qr)?;
        println!(
            "  one-time enrolment code for {name}: valid once, for {}",
            humantime::format_duration(lifetime)
        );
        return Ok(());
    }
    print_invite(&invite, args.qr)
}

/// Mints a one-time enrolment code for `name`, valid for `lifetime`:
/// stores its SHA-256 and expiry in the store of `dir` and tells a running
/// server; returns the code (the only copy, for the invite).
fn mint_code(dir: &Path, name: &str, lifetime: Duration) -> Result<[u8; ENROL_CODE_LEN], CliError> {
    if lifetime.is_zero() {
        return Err(CliError::usage("--expires must be longer than 0"));
    }
    let mut code = [0u8; ENROL_CODE_LEN];
    OsRng.fill_bytes(&mut code);
    let lifetime_us = u64::try_from(lifetime.as_micros()).unwrap_or(u64::MAX);
    let stored = StoredEnrolCode {
        hash: enrol_code_hash(&code),
        name: name.to_owned(),
        expires_us: now_us().saturating_add(lifetime_us),
    };
    let location = StoreLocation::DataDir(dir.to_path_buf());
    ensure_data_dir(dir)?;
    let store = location.create("").map_err(store_error)?;
    store.add_enrol_code(&stored).map_err(store_error)?;
    drop(store);
    match ask_server(&location, OperatorCommand::EnrolCode(stored))? {
        None => {}
        Some(answer) if answer == "ok" => {}
        Some(answer) => {
            return Err(CliError::failed(format!(
                "the running server refused the enrolment code: {answer}"
            )))
        }
    }
    Ok(code)
}

/// Prints `invite: STRING`, the servers it points at, and the QR code if asked.
pub fn print_invite(invite: &Invite, qr: bool) -> Result<(), CliError> {
    let text = invite.encode();
    println!("invite: {text}");
    println!(
        "  session server {}, trigger server {}, key {}",
        invite.server_arg(),
        invite.trigger_arg(),
        key_hex(&invite.server_key)
    );
    println!(
        "  on the device: tryst terminal --invite {text} --state-dir DIR{}",
        if invite.name.is_some() {
            ""
        } else {
            " --name NAME"
        }
    );
    if qr {
        println!("{}", qr_text(&text)?);
    }
    Ok(())
}

/// `text` as a QR code drawn with Unicode half blocks (two rows a line).
pub fn qr_text(text: &str) -> Result<String, CliError> {
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| CliError::failed(format!("cannot draw the QR code: {e}")))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build())
}

/// The id of the invite flag on `terminal` and `connect`.
pub const INVITE_ARG: &str = "invite";

/// Fills `--server`, `--trigger`, `--server-key` (and `--name` if the
/// invite names the device) of the subcommand `args` invoke from its
/// `--invite` (given as a flag, a variable or in the config file), as
/// defaults: the flags conflict with `--invite` when given themselves.
pub fn apply(
    command: clap::Command,
    args: &[std::ffi::OsString],
) -> Result<clap::Command, CliError> {
    let lenient = command
        .clone()
        .mut_subcommands(|sub| sub.mut_args(|a| a.required(false)).ignore_errors(true))
        .ignore_errors(true);
    let Ok(matches) = lenient.try_get_matches_from(args) else {
        return Ok(command);
    };
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(command);
    };
    let Ok(Some(text)) = sub.try_get_one::<String>(INVITE_ARG) else {
        return Ok(command);
    };
    let invite = Invite::decode(text).map_err(|e| CliError::usage(format!("--invite: {e}")))?;
    let name = name.to_owned();
    Ok(command.mut_subcommand(name, |sub| {
        let sub = sub
            .mut_arg("server", |a| {
                a.default_value(invite.server_arg()).required(false)
            })
            .mut_arg("trigger", |a| {
                a.default_value(invite.trigger_arg()).required(false)
            })
            .mut_arg("server_key", |a| {
                a.default_value(key_hex(&invite.server_key)).required(false)
            });
        match &invite.name {
            Some(device) => {
                sub.mut_arg("name", |a| a.default_value(device.clone()).required(false))
            }
            None => sub,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: Option<&str>) -> Invite {
        Invite {
            control_host: Host::Ip("192.0.2.7".parse().expect("ip")),
            control_port: 7400,
            trigger_host: Host::Name("tryst.example.org".into()),
            trigger_port: 7401,
            server_key: PublicKey([7; 32]),
            name: name.map(str::to_owned),
            code: None,
        }
    }

    #[test]
    fn an_enrolment_code_round_trips_and_needs_a_name() {
        let mut invite = sample(Some("home"));
        invite.code = Some([0x5a; ENROL_CODE_LEN]);
        let text = invite.encode();
        assert_eq!(Invite::decode(&text), Ok(invite.clone()));
        // Flags 0x02 alone (a code without a name), checksum recomputed.
        let mut bytes = BASE32_NOPAD
            .decode(&text.as_bytes()[PREFIX.len()..])
            .expect("base32");
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        bytes[0] = FLAG_CODE;
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        let forged = format!("{PREFIX}{}", BASE32_NOPAD.encode(&bytes));
        assert_eq!(
            Invite::decode(&forged),
            Err(InviteError::Malformed(
                "an enrolment code without a device name"
            ))
        );
        // Cut short: the code's bytes missing.
        let mut short = BASE32_NOPAD
            .decode(&text.as_bytes()[PREFIX.len()..])
            .expect("base32");
        short.truncate(short.len() - CHECKSUM_LEN - 1);
        let sum = Sha256::digest(&short);
        short.extend_from_slice(&sum[..CHECKSUM_LEN]);
        let cut = format!("{PREFIX}{}", BASE32_NOPAD.encode(&short));
        assert_eq!(
            Invite::decode(&cut),
            Err(InviteError::Malformed("cut short"))
        );
    }

    #[test]
    fn invites_round_trip_in_any_case() {
        for invite in [sample(None), sample(Some("kitchen"))] {
            let text = invite.encode();
            assert!(text.starts_with(PREFIX), "{text}");
            assert_eq!(Invite::decode(&text), Ok(invite.clone()));
            assert_eq!(Invite::decode(&text.to_ascii_lowercase()), Ok(invite));
        }
    }

    #[test]
    fn a_changed_character_is_corruption() {
        let text = sample(None).encode();
        let mut chars: Vec<char> = text.chars().collect();
        let i = PREFIX.len() + 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let changed: String = chars.into_iter().collect();
        assert_eq!(Invite::decode(&changed), Err(InviteError::Corrupted));
        assert_eq!(
            Invite::decode(&text[..text.len() - 3]),
            Err(InviteError::Corrupted)
        );
        assert_eq!(Invite::decode("hello"), Err(InviteError::NotAnInvite));
        assert_eq!(
            Invite::decode("TRYST2:AAAA"),
            Err(InviteError::UnknownVersion("2".into()))
        );
    }

    #[test]
    fn an_unspecified_listen_address_needs_a_public_host() {
        let any: SocketAddr = "0.0.0.0:7400".parse().expect("addr");
        let trig: SocketAddr = "0.0.0.0:7401".parse().expect("addr");
        let key = PublicKey([1; 32]);
        assert!(server_invite(any, trig, None, &key).is_none());
        let host = Host::parse("vpn.example.net").expect("host");
        let invite = server_invite(any, trig, Some(&host), &key).expect("invite");
        assert_eq!(invite.server_arg(), "vpn.example.net:7400");
        assert!(Host::parse("bad host").is_err());
        assert_eq!(
            Host::parse("[::1]"),
            Ok(Host::Ip("::1".parse().expect("ip")))
        );
    }
}

//! `tryst keygen --out FILE`: a new long-term key pair. The secret key goes
//! to FILE (mode 0600, written atomically, never over an existing file
//! unless `--force`), the public key to `FILE.pub` and to stdout, as the
//! 64 hex digits other commands take (`--server-key`, `tryst enroll`).

use std::path::{Path, PathBuf};

use crate::keyfile::{self, IfExists, KeyFileError};
use rand_core::OsRng;
use tryst_core::identity::SecretKey;
use tryst_core::wire::PublicKey;

use super::CliError;
use crate::store::key_hex;

/// Arguments of `tryst keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (mode 0600); the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE (and FILE.pub) if they exist.
    #[arg(long)]
    pub force: bool,
}

/// Writes the key pair and prints the public key.
pub fn run(args: KeygenArgs) -> Result<(), CliError> {
    let if_exists = if args.force {
        IfExists::Replace
    } else {
        IfExists::Refuse
    };
    let public = create_key(&args.out, if_exists)?;
    println!("{}", key_hex(&public));
    Ok(())
}

/// `FILE.pub` for the secret key file `FILE`.
pub fn public_key_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Generates a key pair, writes the secret key to `path` and the public
/// key to `path.pub`; returns the public key.
pub fn create_key(path: &Path, if_exists: IfExists) -> Result<PublicKey, CliError> {
    let secret = SecretKey::generate(&mut OsRng);
    keyfile::write_secret_key(path, &secret, if_exists).map_err(key_error)?;
    let public = secret.public_key();
    keyfile::write_public_key(&public_key_path(path), &public, IfExists::Replace)
        .map_err(key_error)?;
    Ok(public)
}

/// Reads the secret key at `path`, creating it (and `path.pub`) first if
/// there is none; returns it and whether it was created.
pub fn load_or_create(path: &Path) -> Result<(SecretKey, bool), CliError> {
    if !path.exists() {
        let secret = SecretKey::generate(&mut OsRng);
        keyfile::write_secret_key(path, &secret, IfExists::Refuse).map_err(key_error)?;
        keyfile::write_public_key(
            &public_key_path(path),
            &secret.public_key(),
            IfExists::Replace,
        )
        .map_err(key_error)?;
        return Ok((secret, true));
    }
    let secret = keyfile::read_secret_key(path).map_err(key_error)?;
    Ok((secret, false))
}

/// A public key given as hex, a `tryst-public-key-v1` line, or a file.
pub fn public_key_arg(text: &str) -> Result<PublicKey, CliError> {
    keyfile::read_public_key(text).map_err(key_error)
}

/// Key file problems (missing, unreadable, insecure, malformed, already
/// there) are configuration errors: exit 2.
pub fn key_error(e: KeyFileError) -> CliError {
    CliError::usage(e)
}

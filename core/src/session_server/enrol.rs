//! One-time enrolment codes (issue 17): an operator's invite for a closed
//! server carries a random code bound to one device name; the server holds
//! only the code's SHA-256 and its expiry. A terminal that sends the code
//! with its registration (an `EnrolRegister`, inside the Noise channel) for
//! a name still unbound has its key enrolled for the name, as the operator's
//! enrolment would, and the code is spent: the [`SessionFact::EnrolCodeUsed`]
//! comes out before the `RegisterAck` that acknowledges it. A spent, expired
//! or wrong code, or one for another name, enrols nothing: the registration
//! goes on as if no code had been sent (a closed server refuses it as ever).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{SessionFact, SessionServer};
use crate::time::Instant;
use crate::wire::{Name, PublicKey, ENROL_CODE_LEN};

/// Most enrolment codes the server holds at once.
pub const MAX_ENROL_CODES: usize = 1024;
/// Bytes of a code's hash (SHA-256).
pub const ENROL_CODE_HASH_LEN: usize = 32;

/// The hash a code is kept under: SHA-256 of its 16 bytes.
pub fn enrol_code_hash(code: &[u8; ENROL_CODE_LEN]) -> [u8; ENROL_CODE_HASH_LEN] {
    Sha256::digest(code).into()
}

/// One unspent code, as the store keeps it: never the code itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolCode {
    /// The device name it enrols.
    pub name: String,
    /// SHA-256 of the code.
    pub hash: [u8; ENROL_CODE_HASH_LEN],
    /// It is refused from this instant on (the driver's clock).
    pub expires: Instant,
}

/// Why [`SessionServer::add_enrol_code`] refused a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolCodeError {
    /// [`MAX_ENROL_CODES`] unexpired codes are held already.
    Full,
    /// The code has expired already.
    Expired,
    /// The name is not a valid device name.
    BadName,
}

impl core::fmt::Display for EnrolCodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EnrolCodeError::Full => "the server holds its maximum of enrolment codes",
            EnrolCodeError::Expired => "the enrolment code has expired",
            EnrolCodeError::BadName => "not a device name",
        })
    }
}

/// The unspent codes.
#[derive(Debug, Default)]
pub(super) struct EnrolCodes {
    codes: Vec<EnrolCode>,
}

impl EnrolCodes {
    /// Drops the codes expired at `now`.
    fn prune(&mut self, now: Instant) {
        self.codes.retain(|c| c.expires > now);
    }

    /// Removes and returns the unexpired code for `name` whose hash is
    /// `hash` (each candidate compared in constant time).
    fn take(
        &mut self,
        now: Instant,
        name: &str,
        hash: &[u8; ENROL_CODE_HASH_LEN],
    ) -> Option<EnrolCode> {
        self.prune(now);
        let mut found = None;
        for (i, code) in self.codes.iter().enumerate() {
            let same: bool = code.hash.ct_eq(hash).into();
            if same && code.name == name {
                found = Some(i);
            }
        }
        found.map(|i| self.codes.swap_remove(i))
    }
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// Holds an enrolment code (minted by the operator, e.g. at start from
    /// the store's unspent codes, or at run time from `tryst invite
    /// --enrol`). A code with the hash of one already held replaces it.
    /// Expiry is judged by the latest time the server was given.
    pub fn add_enrol_code(&mut self, mut code: EnrolCode) -> Result<(), EnrolCodeError> {
        let now = self.clock.latest();
        // Held under the name's canonical form, as registrations arrive.
        code.name = crate::names::canonical(&code.name).map_err(|_| EnrolCodeError::BadName)?;
        if code.expires <= now {
            return Err(EnrolCodeError::Expired);
        }
        let codes = &mut self.enrol;
        codes.prune(now);
        codes.codes.retain(|c| c.hash != code.hash);
        if codes.codes.len() >= MAX_ENROL_CODES {
            return Err(EnrolCodeError::Full);
        }
        codes.codes.push(code);
        Ok(())
    }

    /// Unspent, unexpired enrolment codes held.
    pub fn enrol_code_count(&self) -> usize {
        let now = self.clock.latest();
        self.enrol.codes.iter().filter(|c| c.expires > now).count()
    }

    /// A registration of `name` by `key` carried `code`: if the name is
    /// unbound and the code is an unspent, unexpired one for it, the key is
    /// enrolled and the fact queued (out before any transmit). A code for a
    /// name already bound (to this key or another) is left unspent.
    pub(super) fn redeem_enrol_code(
        &mut self,
        now: Instant,
        name: Name<'_>,
        key: PublicKey,
        code: &[u8; ENROL_CODE_LEN],
    ) {
        if self.registry.key_of(name).is_some() {
            return;
        }
        let hash = enrol_code_hash(code);
        let Some(held) = self.enrol.take(now, name.as_str(), &hash) else {
            self.out.counters.enrol_codes_refused += 1;
            return;
        };
        if self.registry.enroll(name, key).is_err() {
            // The registry is full or the key is weak: nothing enrolled, so
            // the code stays unspent.
            self.enrol.codes.push(held);
            self.out.counters.enrol_codes_refused += 1;
            return;
        }
        self.out.counters.enrol_codes_used += 1;
        self.out.fact(SessionFact::EnrolCodeUsed {
            name: name.as_str().to_string(),
            key,
            hash,
        });
    }
}

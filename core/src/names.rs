//! The session server's name bindings: which public key owns which device
//! name (needs the `alloc` feature; only servers use it).
//!
//! The seed trusts every name a terminal claims. Here a name belongs to one
//! X25519 public key, the identity the Noise handshake proved:
//!
//! - [`TrustMode::TrustOnFirstUse`]: the first key to register a free name
//!   owns it from then on ([`Registration::NewBinding`]); the operator may
//!   also [`enroll`](NameRegistry::enroll) names beforehand.
//! - [`TrustMode::Closed`]: only (name, key) pairs the operator enrolled may
//!   register; nothing is ever bound by a terminal.
//!
//! A key presenting itself for a name bound to another key is refused, and
//! the refusal carries an [`ImpersonationAttempt`] for the operator's log.
//! What the terminal is told is always the same [`RegistrationRefused`]
//! value, whatever the reason, so a probe learns nothing about which names
//! exist or which keys are enrolled.
//!
//! Bindings are durable facts: a driver persists each
//! [`Registration::NewBinding`] (or the whole [`bindings`](NameRegistry::bindings)
//! list) and replays them into a fresh table with
//! [`from_bindings`](NameRegistry::from_bindings) after a restart.
//!
//! Memory is bounded by [`MAX_BOUND_NAMES`] names of at most
//! [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes each; past that,
//! registrations of new names are refused (and reported as
//! [`RefusalReason::RegistryFull`]).
//!
//! Names people cannot tell apart are one name: the session server takes
//! every name it is given (a registration's, a request's target and
//! requester, a permission list's entries) in its [`canonical`] form
//! (Unicode NFKC and full case folding) before it binds or compares it, so
//! `HOME`, `home` and `ｈｏｍｅ` (fullwidth) are the same device and no
//! second key can take a look-alike of a bound name.

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;

use crate::identity::is_weak_public_key;
use crate::wire::{ErrorCode, Name, NameError, PublicKey};

/// The canonical form of a device name, the one the server binds and
/// compares: NFKC, then full Unicode case folding, then NFKC again (folding
/// can undo a composition), so that it is stable under a second pass. A
/// name whose canonical form is not a valid [`Name`] (longer than
/// [`MAX_NAME_LEN`](crate::wire::MAX_NAME_LEN) bytes once expanded, a
/// control character) is refused with the reason.
pub fn canonical(name: &str) -> Result<String, NameError> {
    let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc();
    let folded = icu_casemap::CaseMapperBorrowed::new()
        .fold_string(&nfkc.normalize(name))
        .into_owned();
    let canonical = nfkc.normalize(&folded).into_owned();
    Name::new(&canonical)?;
    Ok(canonical)
}

/// The most names a registry binds (about 15 MB of table at most).
pub const MAX_BOUND_NAMES: usize = 100_000;

/// Who may bind a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustMode {
    /// The first key to register a free name owns it.
    TrustOnFirstUse,
    /// Only operator-enrolled (name, key) pairs may register.
    Closed,
}

/// A registration that was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Registration {
    /// The name was free and is now bound to the key: a durable fact to persist.
    NewBinding,
    /// The name was already bound to this key (re-registration, or an
    /// enrolled pair registering); nothing new to persist.
    AlreadyBound,
}

/// What a refused terminal is told. It is one value, the same for every
/// reason, so it leaks none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegistrationRefused;

impl RegistrationRefused {
    /// The error code to send back.
    pub const fn error_code(self) -> ErrorCode {
        ErrorCode::RegistrationRefused
    }
}

/// A key tried to register a name bound to another key: an event for the
/// operator's log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImpersonationAttempt {
    /// The name it claimed.
    pub name: String,
    /// The key it presented (not the bound one).
    pub presented_key: PublicKey,
}

/// Why a registration was refused: for the operator, never for the terminal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The name is bound to another key.
    Impersonation(ImpersonationAttempt),
    /// Closed mode, and the name is not enrolled.
    NotEnrolled,
    /// The registry holds [`MAX_BOUND_NAMES`] (or its configured limit) names.
    RegistryFull,
    /// The key is a small-order point, which anyone could "prove" to own.
    WeakKey,
    /// The name's [`canonical`] form is not a valid name (too long once
    /// expanded).
    BadName(NameError),
}

/// A refused registration: the uniform answer for the terminal and the
/// reason for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refused {
    /// What to tell the terminal; the same for every refusal.
    pub answer: RegistrationRefused,
    /// What to log.
    pub reason: RefusalReason,
}

impl Refused {
    fn because(reason: RefusalReason) -> Refused {
        Refused {
            answer: RegistrationRefused,
            reason,
        }
    }

    /// The impersonation event to report, if this was one.
    pub fn impersonation(&self) -> Option<&ImpersonationAttempt> {
        match &self.reason {
            RefusalReason::Impersonation(attempt) => Some(attempt),
            _ => None,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            RefusalReason::Impersonation(a) => write!(
                f,
                "registration refused: {:?} is bound to another key than {:?}",
                a.name, a.presented_key
            ),
            RefusalReason::NotEnrolled => f.write_str("registration refused: not enrolled"),
            RefusalReason::RegistryFull => f.write_str("registration refused: registry full"),
            RefusalReason::WeakKey => f.write_str("registration refused: weak public key"),
            RefusalReason::BadName(e) => write!(f, "registration refused: {e} once normalised"),
        }
    }
}

impl core::error::Error for Refused {}

/// Why an operator's enrolment (or a replayed binding) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnrollError {
    /// The name is bound to another key; [`NameRegistry::unbind`] it first.
    BoundToAnotherKey,
    /// The registry is full.
    RegistryFull,
    /// The key is a small-order point and can never be an identity.
    WeakKey,
    /// The name's [`canonical`] form is not a valid name.
    BadName(NameError),
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrollError::BoundToAnotherKey => {
                f.write_str("the name is bound to another key (unbind it first)")
            }
            EnrollError::RegistryFull => f.write_str("the name registry is full"),
            EnrollError::WeakKey => f.write_str("the key is a small-order point"),
            EnrollError::BadName(e) => write!(f, "{e} once normalised"),
        }
    }
}

impl core::error::Error for EnrollError {}

/// Device name -> bound public key, in bounded memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRegistry {
    mode: TrustMode,
    limit: usize,
    bound: BTreeMap<String, PublicKey>,
}

impl NameRegistry {
    /// An empty registry holding up to [`MAX_BOUND_NAMES`] names.
    pub fn new(mode: TrustMode) -> NameRegistry {
        NameRegistry::with_limit(mode, MAX_BOUND_NAMES)
    }

    /// An empty registry holding up to `limit` names (at most [`MAX_BOUND_NAMES`]).
    pub fn with_limit(mode: TrustMode, limit: usize) -> NameRegistry {
        NameRegistry {
            mode,
            limit: limit.min(MAX_BOUND_NAMES),
            bound: BTreeMap::new(),
        }
    }

    /// A registry holding `bindings` (persisted facts replayed after a
    /// restart), with the default limit.
    pub fn from_bindings<'a, I>(mode: TrustMode, bindings: I) -> Result<NameRegistry, EnrollError>
    where
        I: IntoIterator<Item = (Name<'a>, PublicKey)>,
    {
        let mut registry = NameRegistry::new(mode);
        for (name, key) in bindings {
            registry.enroll(name, key)?;
        }
        Ok(registry)
    }

    /// Handles a terminal's registration of `name` with the key its Noise
    /// handshake proved.
    pub fn register(&mut self, name: Name<'_>, key: PublicKey) -> Result<Registration, Refused> {
        let name =
            canonical(name.as_str()).map_err(|e| Refused::because(RefusalReason::BadName(e)))?;
        match self.bound.get(&name) {
            Some(bound) if *bound == key => Ok(Registration::AlreadyBound),
            Some(_) => Err(Refused::because(RefusalReason::Impersonation(
                ImpersonationAttempt {
                    name,
                    presented_key: key,
                },
            ))),
            None => match self.mode {
                TrustMode::Closed => Err(Refused::because(RefusalReason::NotEnrolled)),
                TrustMode::TrustOnFirstUse => {
                    self.bind(name, key).map_err(|e| {
                        Refused::because(match e {
                            EnrollError::WeakKey => RefusalReason::WeakKey,
                            EnrollError::BadName(e) => RefusalReason::BadName(e),
                            // A free name cannot be bound to another key.
                            EnrollError::RegistryFull | EnrollError::BoundToAnotherKey => {
                                RefusalReason::RegistryFull
                            }
                        })
                    })?;
                    Ok(Registration::NewBinding)
                }
            },
        }
    }

    /// The operator binds `name` to `key` ahead of any registration (the
    /// only way names get bound in closed mode). Enrolling the same pair
    /// twice is fine; re-keying a name takes an explicit
    /// [`unbind`](NameRegistry::unbind) first.
    pub fn enroll(&mut self, name: Name<'_>, key: PublicKey) -> Result<(), EnrollError> {
        let name = canonical(name.as_str()).map_err(EnrollError::BadName)?;
        match self.bound.get(&name) {
            Some(bound) if *bound == key => Ok(()),
            Some(_) => Err(EnrollError::BoundToAnotherKey),
            None => self.bind(name, key),
        }
    }

    /// The operator frees `name` (a lost or retired device); returns the key
    /// it was bound to.
    pub fn unbind(&mut self, name: Name<'_>) -> Option<PublicKey> {
        self.bound.remove(&canonical(name.as_str()).ok()?)
    }

    /// The key `name` (in any of its spellings) is bound to.
    pub fn key_of(&self, name: Name<'_>) -> Option<PublicKey> {
        self.bound.get(&canonical(name.as_str()).ok()?).copied()
    }

    /// Every binding, in name order, for a driver to persist.
    pub fn bindings(&self) -> impl Iterator<Item = (Name<'_>, PublicKey)> + '_ {
        // Every stored name was a valid `Name` when bound, so none is skipped.
        self.bound
            .iter()
            .filter_map(|(name, key)| Name::new(name).ok().map(|name| (name, *key)))
    }

    /// Number of bound names.
    pub fn len(&self) -> usize {
        self.bound.len()
    }

    /// True if no name is bound.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }

    /// The trust mode.
    pub fn mode(&self) -> TrustMode {
        self.mode
    }

    /// The most names this registry binds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Binds a free name, already canonical.
    fn bind(&mut self, name: String, key: PublicKey) -> Result<(), EnrollError> {
        if is_weak_public_key(&key) {
            return Err(EnrollError::WeakKey);
        }
        if self.bound.len() >= self.limit {
            return Err(EnrollError::RegistryFull);
        }
        self.bound.insert(name, key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn canonical_names_fold_case_and_compatibility_forms() {
        for (spelled, canonical_form) in [
            ("home", "home"),
            ("HOME", "home"),
            ("Home", "home"),
            ("\u{ff28}\u{ff2f}\u{ff2d}\u{ff25}", "home"), // fullwidth ＨＯＭＥ
            ("Stra\u{df}e", "strasse"),                   // ß folds to ss
            ("Cafe\u{301}", "caf\u{e9}"),                 // e + combining acute: é
            ("CAF\u{c9}", "caf\u{e9}"),
            ("\u{2160}", "i"),                              // Roman numeral one
            ("\u{212b}ngstr\u{f6}m", "\u{e5}ngstr\u{f6}m"), // Angstrom sign
        ] {
            assert_eq!(
                canonical(spelled).as_deref(),
                Ok(canonical_form),
                "{spelled:?}"
            );
            // Stable: the canonical form is its own canonical form.
            assert_eq!(canonical(canonical_form).as_deref(), Ok(canonical_form));
        }
        // Distinct names stay distinct.
        assert_ne!(canonical("home1"), canonical("home2"));
    }

    #[test]
    fn a_name_too_long_once_folded_or_with_a_control_character_is_refused() {
        // Three Arabic ligatures are 9 bytes; NFKC spells each out in 33.
        let long = "\u{fdfa}\u{fdfa}\u{fdfa}";
        assert!(Name::new(long).is_ok());
        assert_eq!(canonical(long), Err(NameError::TooLong));
        assert_eq!(canonical("a\u{7}b"), Err(NameError::ControlCharacter));
        assert_eq!(canonical(""), Err(NameError::Empty));
    }

    #[test]
    fn a_look_alike_of_a_bound_name_is_the_same_name() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        let owner = SecretKey::from_bytes([3; 32]).public_key();
        let other = SecretKey::from_bytes([4; 32]).public_key();
        let name = |s| Name::new(s).unwrap();
        assert_eq!(
            r.register(name("home"), owner),
            Ok(Registration::NewBinding)
        );
        assert_eq!(
            r.register(name("HOME"), owner),
            Ok(Registration::AlreadyBound)
        );
        let refused = r.register(name("\u{ff48}ome"), other).unwrap_err();
        assert!(matches!(refused.reason, RefusalReason::Impersonation(_)));
        assert_eq!(r.key_of(name("Home")), Some(owner));
        assert_eq!(
            r.bindings()
                .map(|(n, _)| n.as_str().to_string())
                .collect::<Vec<_>>(),
            ["home"]
        );
        assert_eq!(r.unbind(name("HoMe")), Some(owner));
        assert!(r.is_empty());
    }

    fn name(s: &str) -> Name<'_> {
        Name::new(s).unwrap()
    }

    fn key(seed: u8) -> PublicKey {
        SecretKey::from_bytes([seed; 32]).public_key()
    }

    #[test]
    fn first_key_binds_a_free_name_and_can_register_again() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        assert_eq!(
            r.register(name("TERM1"), key(1)),
            Ok(Registration::NewBinding)
        );
        assert_eq!(
            r.register(name("TERM1"), key(1)),
            Ok(Registration::AlreadyBound)
        );
        assert_eq!(r.key_of(name("TERM1")), Some(key(1)));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn second_key_for_bound_name_is_refused_and_reported() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        r.register(name("TERM1"), key(1)).unwrap();
        let refused = r.register(name("TERM1"), key(2)).unwrap_err();
        assert_eq!(refused.answer, RegistrationRefused);
        assert_eq!(refused.answer.error_code(), ErrorCode::RegistrationRefused);
        assert_eq!(
            refused.impersonation(),
            Some(&ImpersonationAttempt {
                // Reported in its canonical form.
                name: "term1".into(),
                presented_key: key(2),
            })
        );
        // The binding did not move.
        assert_eq!(r.key_of(name("TERM1")), Some(key(1)));
        assert_eq!(
            r.register(name("TERM1"), key(1)),
            Ok(Registration::AlreadyBound)
        );
    }

    #[test]
    fn one_key_may_hold_several_names_and_case_does_not_make_another_name() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        r.register(name("TERM1"), key(1)).unwrap();
        assert!(r.register(name("term1"), key(2)).is_err());
        assert_eq!(
            r.register(name("term2"), key(2)),
            Ok(Registration::NewBinding)
        );
        assert_eq!(
            r.register(name("camera"), key(1)),
            Ok(Registration::NewBinding)
        );
    }

    #[test]
    fn closed_mode_accepts_only_enrolled_pairs() {
        let mut r = NameRegistry::new(TrustMode::Closed);
        r.enroll(name("TERM1"), key(1)).unwrap();
        assert_eq!(
            r.register(name("TERM1"), key(1)),
            Ok(Registration::AlreadyBound)
        );
        assert_eq!(
            r.register(name("TERM1"), key(1)),
            Ok(Registration::AlreadyBound)
        );
        assert!(r.register(name("TERM3"), key(3)).is_err());
        assert_eq!(r.len(), 1, "closed mode never binds on registration");
    }

    #[test]
    fn closed_mode_refuses_unenrolled_key_with_same_answer_as_unknown_name() {
        let mut r = NameRegistry::new(TrustMode::Closed);
        r.enroll(name("TERM1"), key(1)).unwrap();
        r.enroll(name("TERM3"), key(3)).unwrap();
        let wrong_key = r.register(name("TERM1"), key(9)).unwrap_err();
        let unknown_name = r.register(name("nobody"), key(9)).unwrap_err();
        let enrolled_key_wrong_name = r.register(name("nobody"), key(3)).unwrap_err();
        let others_name = r.register(name("TERM1"), key(3)).unwrap_err();
        for refused in [
            &wrong_key,
            &unknown_name,
            &enrolled_key_wrong_name,
            &others_name,
        ] {
            assert_eq!(refused.answer, RegistrationRefused);
            assert_eq!(refused.answer.error_code(), ErrorCode::RegistrationRefused);
        }
        // The operator still learns that a bound name was claimed.
        assert!(wrong_key.impersonation().is_some());
        assert!(others_name.impersonation().is_some());
        assert_eq!(unknown_name.reason, RefusalReason::NotEnrolled);
        assert_eq!(enrolled_key_wrong_name.reason, RefusalReason::NotEnrolled);
    }

    #[test]
    fn registrations_beyond_the_limit_are_refused_with_the_same_answer() {
        let mut r = NameRegistry::with_limit(TrustMode::TrustOnFirstUse, 2);
        r.register(name("a"), key(1)).unwrap();
        r.register(name("b"), key(2)).unwrap();
        let refused = r.register(name("c"), key(3)).unwrap_err();
        assert_eq!(refused.answer, RegistrationRefused);
        assert_eq!(refused.reason, RefusalReason::RegistryFull);
        assert_eq!(r.len(), 2);
        // Bound names still re-register.
        assert_eq!(
            r.register(name("a"), key(1)),
            Ok(Registration::AlreadyBound)
        );
        assert_eq!(r.enroll(name("d"), key(4)), Err(EnrollError::RegistryFull));
    }

    #[test]
    fn the_limit_never_exceeds_max_bound_names() {
        assert_eq!(
            NameRegistry::new(TrustMode::Closed).limit(),
            MAX_BOUND_NAMES
        );
        let r = NameRegistry::with_limit(TrustMode::Closed, usize::MAX);
        assert_eq!(r.limit(), MAX_BOUND_NAMES);
    }

    #[test]
    fn small_order_keys_can_never_bind_a_name() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        let zero = PublicKey([0; 32]);
        let refused = r.register(name("TERM1"), zero).unwrap_err();
        assert_eq!(refused.answer, RegistrationRefused);
        assert_eq!(refused.reason, RefusalReason::WeakKey);
        assert_eq!(r.enroll(name("TERM1"), zero), Err(EnrollError::WeakKey));
        assert!(r.is_empty());
    }

    #[test]
    fn enrolment_never_silently_rebinds_a_name() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        r.register(name("TERM1"), key(1)).unwrap();
        assert_eq!(r.enroll(name("TERM1"), key(1)), Ok(()));
        assert_eq!(
            r.enroll(name("TERM1"), key(2)),
            Err(EnrollError::BoundToAnotherKey)
        );
        // Re-keying is explicit: unbind, then enroll.
        assert_eq!(r.unbind(name("TERM1")), Some(key(1)));
        assert_eq!(r.enroll(name("TERM1"), key(2)), Ok(()));
        assert_eq!(
            r.register(name("TERM1"), key(2)),
            Ok(Registration::AlreadyBound)
        );
    }

    #[test]
    fn bindings_replayed_into_a_fresh_registry_restore_it() {
        let mut r = NameRegistry::new(TrustMode::TrustOnFirstUse);
        r.register(name("TERM1"), key(1)).unwrap();
        r.register(name("téléphone"), key(2)).unwrap();
        r.enroll(name("camera"), key(3)).unwrap();
        let persisted: Vec<(String, PublicKey)> = r
            .bindings()
            .map(|(n, k)| (n.as_str().to_string(), k))
            .collect();
        let restored = NameRegistry::from_bindings(
            TrustMode::TrustOnFirstUse,
            persisted.iter().map(|(n, k)| (name(n), *k)),
        )
        .unwrap();
        assert_eq!(restored, r);
        // The restored table still refuses the impersonator.
        let mut restored = restored;
        assert!(restored
            .register(name("TERM1"), key(9))
            .unwrap_err()
            .impersonation()
            .is_some());
    }

    #[test]
    fn conflicting_replayed_bindings_are_an_error() {
        let conflicting = [(name("TERM1"), key(1)), (name("TERM1"), key(2))];
        assert_eq!(
            NameRegistry::from_bindings(TrustMode::Closed, conflicting),
            Err(EnrollError::BoundToAnotherKey)
        );
    }
}

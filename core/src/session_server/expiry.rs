//! Unused name bindings expire (issue 12): with trust on first use a name
//! costs one registration, so without expiry bindings pile up forever and
//! squatted names never come free. Each binding's last-seen time (its last
//! confirmed registration) is a durable fact, [`SessionFact::NameSeen`]; a
//! binding unseen for [`SessionConfig::binding_ttl`](super::SessionConfig)
//! is removed ([`SessionFact::NameUnbound`]), unless its name is live.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};

use rand_core::{CryptoRng, RngCore};

use super::{SessionFact, SessionServer, Timer, BINDING_SEEN_RESOLUTION, MAX_EXPIRIES_PER_RUN};
use crate::time::Instant;
use crate::wire::Name;

/// When each binding was last seen, and the expiry timer.
#[derive(Debug, Default)]
pub(super) struct Seen {
    at: BTreeMap<String, Instant>,
    /// (last seen, name), oldest first.
    by_age: BTreeSet<(Instant, String)>,
    timer: Option<Instant>,
}

impl Seen {
    /// Sets `name`'s last-seen time.
    fn set(&mut self, name: &str, at: Instant) {
        if let Some(old) = self.at.insert(name.to_string(), at) {
            self.by_age.remove(&(old, name.to_string()));
        }
        self.by_age.insert((at, name.to_string()));
    }

    /// Forgets `name`.
    pub(super) fn remove(&mut self, name: &str) {
        if let Some(old) = self.at.remove(name) {
            self.by_age.remove(&(old, name.to_string()));
        }
    }
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// `name`'s registration was confirmed at `now`: its last-seen time
    /// moves, and is stored when the stored one is older than
    /// [`BINDING_SEEN_RESOLUTION`].
    pub(super) fn binding_seen(&mut self, now: Instant, name: &str) {
        // Kept at the stored time until that is stale, so the store and the
        // machine agree on when the binding expires.
        let stored = self.seen.at.get(name).copied();
        if stored.is_some_and(|at| now < at + BINDING_SEEN_RESOLUTION) {
            return;
        }
        self.seen.set(name, now);
        self.out.fact(SessionFact::NameSeen {
            name: name.to_string(),
            at: now,
        });
        self.arm_binding_expiry(now);
    }

    /// A stored [`SessionFact::NameSeen`] after a restart.
    pub(super) fn restore_binding_seen(&mut self, name: &str, at: Instant) {
        self.seen.set(name, at);
        let now = self.clock.latest();
        self.arm_binding_expiry(now);
    }

    /// Arms the expiry timer for the oldest binding (none without a TTL).
    fn arm_binding_expiry(&mut self, now: Instant) {
        let Some(ttl) = self.config.binding_ttl else {
            return;
        };
        if now + ttl <= now {
            // The end of the clock (see `bindings_expired`).
            return;
        }
        match self.seen.by_age.first() {
            Some((oldest, _)) => {
                let at = (*oldest + ttl).max(now);
                if self.seen.timer != Some(at) {
                    self.timers
                        .arm(Timer::BindingExpiry, &mut self.seen.timer, at);
                }
            }
            None => self
                .timers
                .disarm(Timer::BindingExpiry, &mut self.seen.timer),
        }
    }

    /// The expiry timer fired: bindings unseen for the TTL go, at most
    /// [`MAX_EXPIRIES_PER_RUN`] per run. A live name is seen now instead.
    pub(super) fn bindings_expired(&mut self, now: Instant) {
        self.seen.timer = None;
        let Some(ttl) = self.config.binding_ttl else {
            return;
        };
        // At the end of the clock every deadline saturates to `now`: a
        // refreshed binding would be due again at once and the timer loop
        // would spin. Expire nothing any more.
        if now + ttl <= now {
            return;
        }
        for _ in 0..MAX_EXPIRIES_PER_RUN {
            let Some((oldest, name)) = self.seen.by_age.first().cloned() else {
                break;
            };
            if oldest + ttl > now {
                break;
            }
            let in_use =
                self.reg.live.contains_key(&name) || self.reg.unconfirmed.contains_key(&name);
            let key = Name::new(&name).ok().and_then(|n| self.registry.key_of(n));
            match key {
                Some(_) if in_use => {
                    self.seen.set(&name, now);
                    self.out.fact(SessionFact::NameSeen {
                        name: name.clone(),
                        at: now,
                    });
                }
                Some(key) => {
                    if let Ok(n) = Name::new(&name) {
                        self.registry.unbind(n);
                    }
                    self.seen.remove(&name);
                    self.out.counters.bindings_expired += 1;
                    self.out.fact(SessionFact::NameUnbound { name, key });
                }
                // Unbound meanwhile (by the operator): nothing to expire.
                None => self.seen.remove(&name),
            }
        }
        let more_due = self
            .seen
            .by_age
            .first()
            .is_some_and(|(oldest, _)| *oldest + ttl <= now);
        let next_run = now + core::time::Duration::from_millis(1);
        if more_due && next_run > now {
            // The rest next run, after other inputs had their turn.
            self.timers
                .arm(Timer::BindingExpiry, &mut self.seen.timer, next_run);
        } else {
            self.arm_binding_expiry(now);
        }
    }
}

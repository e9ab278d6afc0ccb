//! Tokens verified recently, so a client that presents one token on every request (a runner,
//! `drpcli`, a plugin) pays its signature check, decoding and claims once rather than on each:
//! together they were the largest part of a one-event POST's own work.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use super::Identity;

/// Most tokens remembered; bounds memory when many clients (or forged tokens) come by.
pub(super) const TOKEN_CACHE_CAPACITY: usize = 10_000;

struct Verified {
    identity: Identity,
    /// The token's expiry, in Unix seconds: it is no hit from then on.
    expires: u64,
}

#[derive(Default)]
struct Entries {
    by_token: HashMap<String, Verified>,
    /// Counts the clears: a verification that began before one is not remembered.
    generation: u64,
}

/// Identities of tokens verified since the last change of any user or role.
#[derive(Default)]
pub(super) struct TokenCache {
    entries: RwLock<Entries>,
}

impl TokenCache {
    /// The identity `token` was verified as, unless it has expired at `now`.
    pub(super) fn get(&self, token: &str, now: u64) -> Option<Identity> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let hit = entries.by_token.get(token)?;
        (hit.expires > now).then(|| hit.identity.clone())
    }

    /// The generation to hand to [`Self::insert`] for a verification that starts now.
    pub(super) fn generation(&self) -> u64 {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    /// Remembers `token`'s identity, verified from `generation` on, unless users or roles
    /// changed meanwhile.
    pub(super) fn insert(&self, token: &str, identity: Identity, expires: u64, generation: u64) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.generation != generation {
            return;
        }
        if entries.by_token.len() >= TOKEN_CACHE_CAPACITY {
            // Any victim will do: a miss only costs one more verification.
            if let Some(victim) = entries.by_token.keys().next().cloned() {
                entries.by_token.remove(&victim);
            }
        }
        entries
            .by_token
            .insert(token.to_owned(), Verified { identity, expires });
    }

    /// Forgets every token: a user or role changed, and a token never grants more than its
    /// user holds now (or anything once the user is gone).
    pub(super) fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.by_token.clear();
        entries.generation = entries.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::Claims;
    use super::*;

    fn identity(name: &str) -> Identity {
        Identity {
            principal: format!("user:{name}"),
            user: Some(name.to_owned()),
            claims: Arc::new(Claims::new(Vec::new())),
            expires: Some(100),
        }
    }

    #[test]
    fn a_remembered_token_is_a_hit_until_it_expires() {
        let cache = TokenCache::default();
        cache.insert("t", identity("bob"), 100, cache.generation());
        assert_eq!(
            cache.get("t", 99).map(|i| i.principal),
            Some("user:bob".into())
        );
        assert!(cache.get("t", 100).is_none());
        assert!(cache.get("other", 99).is_none());
    }

    #[test]
    fn a_verification_that_began_before_a_change_is_not_remembered() {
        let cache = TokenCache::default();
        let before = cache.generation();
        cache.insert("t", identity("bob"), 100, before);
        cache.clear();
        assert!(cache.get("t", 1).is_none());
        cache.insert("u", identity("bob"), 100, before);
        assert!(cache.get("u", 1).is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = TokenCache::default();
        for i in 0..TOKEN_CACHE_CAPACITY + 10 {
            cache.insert(&format!("t{i}"), identity("bob"), 100, cache.generation());
        }
        let entries = cache.entries.read().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(entries.by_token.len(), TOKEN_CACHE_CAPACITY);
    }
}

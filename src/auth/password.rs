//! Password hashing (argon2id PHC strings) and the cache of recently verified Basic credentials.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Argon2, password_hash};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

use super::{AuthError, Identity};

/// How long a verified password is trusted without hashing it again.
pub(super) const BASIC_CACHE_TTL: Duration = Duration::from_secs(5 * 60);

/// Most cached logins kept; bounds memory when many users (or guesses) come by.
pub(super) const BASIC_CACHE_CAPACITY: usize = 10_000;

/// Bytes of random salt per password, as argon2 recommends.
const SALT_BYTES: usize = 16;

/// `N` bytes from the operating system's secure generator.
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Crypto("the system random generator failed".into()))?;
    Ok(bytes)
}

/// The argon2id hasher: the crate's defaults, or a cheap parameter set so tests stay fast.
fn hasher() -> Argon2<'static> {
    #[cfg(not(test))]
    {
        Argon2::default()
    }
    #[cfg(test)]
    {
        let cheap = argon2::Params::new(8, 1, 1, None).unwrap_or_default();
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, cheap)
    }
}

/// The argon2id PHC string of a password, with a fresh random salt.
pub(super) fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<SALT_BYTES>()?)
        .map_err(|e| AuthError::Crypto(format!("cannot encode a password salt: {e}")))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Crypto(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the stored PHC string; an unreadable PHC string is corrupt storage.
pub(super) fn verify_password(phc: &str, password: &str) -> Result<bool, AuthError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| AuthError::Corrupt(format!("a stored password hash is unreadable: {e}")))?;
    ::metrics::counter!(crate::metrics::PASSWORD_VERIFICATIONS).increment(1);
    // The parameters come from the PHC string, so hashes made with other settings still verify.
    match hasher().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(AuthError::Corrupt(format!(
            "a stored password hash cannot be checked: {e}"
        ))),
    }
}

struct CachedLogin {
    /// The user's Secret when the password was verified; a new password changes it.
    secret: String,
    identity: Identity,
    cached_at: Instant,
}

/// Recently verified Basic credentials, so a reconnecting client does not cost an argon2 run.
///
/// Keys are HMAC(process-random key, user 0x00 password): the password itself is never kept,
/// and the key dies with the process. A hit counts only while the user's Secret is unchanged.
pub(super) struct BasicCache {
    key: hmac::Key,
    entries: Mutex<HashMap<Vec<u8>, CachedLogin>>,
    /// Checks in progress, by the same slots: each ends (its sender drops) when its check does.
    checking: Mutex<HashMap<Vec<u8>, flume::Receiver<()>>>,
}

/// Whether a request is the one to check its Basic credentials, or another request with the
/// same ones is checking them already: a client that opens many connections at once with one
/// password (a restarted runner, a pool of publishers) costs one hash and one of its address's
/// few places for checks in progress, not one per connection.
pub(crate) enum Check<'a> {
    /// This request checks them; others with the same credentials wait until this is dropped.
    First(Checking<'a>),
    /// Another request is checking them: the receiver disconnects when it is done, and its
    /// answer is then in the cache if the password was right.
    Wait(flume::Receiver<()>),
}

/// The check in progress of one set of credentials, ended when dropped.
pub(crate) struct Checking<'a> {
    cache: &'a BasicCache,
    slot: Vec<u8>,
    _done: flume::Sender<()>,
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        // Removed before the sender drops, so a woken waiter that finds no cached login
        // starts a check of its own instead of waiting on this finished one.
        self.cache
            .checking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.slot);
    }
}

impl BasicCache {
    /// An empty cache with a fresh random key.
    pub(super) fn new() -> Result<BasicCache, AuthError> {
        Ok(BasicCache {
            key: hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>()?),
            entries: Mutex::new(HashMap::new()),
            checking: Mutex::new(HashMap::new()),
        })
    }

    /// Joins the check in progress of these credentials, or starts one.
    pub(super) fn join(&self, user: &str, password: &str) -> Check<'_> {
        let slot = self.slot(user, password);
        let mut checking = self.checking.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = checking.get(&slot) {
            return Check::Wait(done.clone());
        }
        let (sender, done) = flume::bounded(0);
        checking.insert(slot.clone(), done);
        Check::First(Checking {
            cache: self,
            slot,
            _done: sender,
        })
    }

    fn slot(&self, user: &str, password: &str) -> Vec<u8> {
        // User names hold no control characters, so 0x00 separates them unambiguously.
        let mut context = hmac::Context::with_key(&self.key);
        context.update(user.as_bytes());
        context.update(&[0]);
        context.update(password.as_bytes());
        context.sign().as_ref().to_vec()
    }

    /// The cached identity for these credentials, if verified less than [`BASIC_CACHE_TTL`] ago
    /// while the user's Secret was `current_secret`.
    pub(super) fn get(&self, user: &str, password: &str, current_secret: &str) -> Option<Identity> {
        let slot = self.slot(user, password);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&slot)?;
        if entry.secret == current_secret && entry.cached_at.elapsed() < BASIC_CACHE_TTL {
            return Some(entry.identity.clone());
        }
        entries.remove(&slot);
        None
    }

    /// Remembers credentials verified while the user's Secret was `secret`.
    pub(super) fn insert(&self, user: &str, password: &str, secret: &str, identity: Identity) {
        let slot = self.slot(user, password);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= BASIC_CACHE_CAPACITY && !entries.contains_key(&slot) {
            entries.retain(|_, entry| entry.cached_at.elapsed() < BASIC_CACHE_TTL);
            if entries.len() >= BASIC_CACHE_CAPACITY {
                // Any victim will do: a miss only costs one more hash.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(
            slot,
            CachedLogin {
                secret: secret.to_owned(),
                identity,
                cached_at: Instant::now(),
            },
        );
    }

    /// Forgets every cached login, so a change of roles or claims applies to the next request.
    pub(super) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Claims;

    fn identity(name: &str) -> Identity {
        Identity {
            principal: format!("user:{name}"),
            user: Some(name.into()),
            claims: Arc::new(Claims::default()),
            expires: None,
        }
    }

    #[test]
    fn a_hashed_password_verifies_and_another_does_not() {
        let phc = hash_password("hunter2").unwrap_or_default();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(matches!(verify_password(&phc, "hunter2"), Ok(true)));
        assert!(matches!(verify_password(&phc, "hunter3"), Ok(false)));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        assert_ne!(hash_password("a").ok(), hash_password("a").ok());
    }

    #[test]
    fn an_unreadable_stored_hash_is_corrupt_storage() {
        assert!(matches!(
            verify_password("plain", "plain"),
            Err(AuthError::Corrupt(_))
        ));
    }

    #[test]
    fn a_cache_hit_needs_the_same_password_and_secret() {
        let cache = BasicCache::new().unwrap_or_else(|e| panic!("{e}"));
        cache.insert("bob", "pw", "secret-1", identity("bob"));
        assert!(cache.get("bob", "pw", "secret-1").is_some());
        assert!(cache.get("bob", "other", "secret-1").is_none());
        assert!(cache.get("bo", "bpw", "secret-1").is_none());
        assert!(cache.get("bob", "pw", "secret-2").is_none());
        // A stale entry is dropped, so it cannot come back.
        assert!(cache.get("bob", "pw", "secret-1").is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = BasicCache::new().unwrap_or_else(|e| panic!("{e}"));
        for i in 0..BASIC_CACHE_CAPACITY + 5 {
            cache.insert(&format!("user{i}"), "pw", "s", identity("x"));
        }
        assert_eq!(cache.len(), BASIC_CACHE_CAPACITY);
    }
}

//! Signed, expiring tokens: `base64url(payload) "." base64url(HMAC-SHA256(payload))`.
//!
//! The payload is compact JSON (see [`Payload`]); the alphabet of base64url and the `.` separator
//! mean a token never contains `:`, which is how the `token` parameter tells it from
//! `user:password` (`docs/protocol.md` §2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::claims::Claim;

/// The payload layout version; a token of another version is a bad token.
const PAYLOAD_VERSION: u8 = 1;

/// Shortest token lifetime accepted.
pub(super) const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);

/// Longest token lifetime accepted: three years, beyond which a leaked token is a liability.
pub(super) const MAX_TOKEN_TTL: Duration = Duration::from_secs(3 * 365 * 24 * 3600);

/// Bytes of SHA-256(user Secret) kept in a token: enough to tell secrets apart, nothing more.
const FINGERPRINT_BYTES: usize = 12;

/// A minted token and what it grants, answered by `GET /api/v3/users/{name}/token` (DRP shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Token {
    /// The opaque token to send as `Authorization: Bearer …` or `?token=…`.
    #[serde(rename = "Token")]
    pub token: String,
    /// What the token grants and until when.
    #[serde(rename = "Info")]
    pub info: TokenInfo,
}

/// The readable description of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenInfo {
    /// Who the token speaks for (`user:<name>`, `runner:<uuid>`).
    #[serde(rename = "Principal")]
    pub principal: String,
    /// The user, for a user's token.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The roles granted, for a user's token.
    #[serde(rename = "Roles", default)]
    pub roles: Vec<String>,
    /// The explicit claims granted, for a machine token.
    #[serde(rename = "Claims", default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// When the token stops working, RFC 3339 in UTC.
    #[serde(rename = "Expires")]
    pub expires: String,
    /// The lifetime the token was minted with, in seconds.
    #[serde(rename = "Ttl")]
    pub ttl: u64,
}

/// What a token carries, signed. Field names are short because the token travels in every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Payload {
    #[serde(rename = "v")]
    pub version: u8,
    #[serde(rename = "p")]
    pub principal: String,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// Expiry, unix seconds.
    #[serde(rename = "e")]
    pub expires: u64,
    /// Fingerprint of the user's Secret at minting; a new password changes the Secret.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Payload {
    /// A payload of the current version expiring `ttl` from now; the TTL must be validated.
    pub(super) fn new(principal: String, ttl_secs: u64) -> Payload {
        Payload {
            version: PAYLOAD_VERSION,
            principal,
            user: None,
            roles: Vec::new(),
            claims: Vec::new(),
            expires: unix_now().saturating_add(ttl_secs),
            fingerprint: None,
        }
    }

    /// The readable description of a token with this payload.
    pub(super) fn info(&self, ttl_secs: u64) -> TokenInfo {
        TokenInfo {
            principal: self.principal.clone(),
            user: self.user.clone(),
            roles: self.roles.clone(),
            claims: self.claims.clone(),
            expires: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(self.expires),
            )
            .to_string(),
            ttl: ttl_secs,
        }
    }
}

/// Signs and checks tokens with the server's token secret.
pub(super) struct TokenSigner {
    key: hmac::Key,
}

impl TokenSigner {
    /// A signer keyed by the 32-byte secret from the `meta` tree.
    pub(super) fn new(secret: &[u8]) -> TokenSigner {
        TokenSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The token for a payload.
    pub(super) fn seal(&self, payload: &Payload) -> Result<String, AuthError> {
        let json = serde_json::to_vec(payload)
            .map_err(|e| AuthError::Crypto(format!("cannot encode the token: {e}")))?;
        let body = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.key, body.as_bytes());
        Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// The payload of a token whose signature is ours and that has not expired at `now`.
    pub(super) fn open(&self, token: &str, now: u64) -> Result<Payload, AuthError> {
        let (body, tag) = token.split_once('.').ok_or(AuthError::BadToken)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| AuthError::BadToken)?;
        // Constant-time comparison, before anything in the payload is believed.
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| AuthError::BadToken)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AuthError::BadToken)?;
        let payload: Payload = serde_json::from_slice(&json).map_err(|_| AuthError::BadToken)?;
        if payload.version != PAYLOAD_VERSION {
            return Err(AuthError::BadToken);
        }
        if payload.expires <= now {
            return Err(AuthError::ExpiredToken);
        }
        Ok(payload)
    }
}

/// The lifetime in whole seconds, if it is within [`MIN_TOKEN_TTL`]`..=`[`MAX_TOKEN_TTL`].
pub(super) fn validate_ttl(ttl: Duration) -> Result<u64, AuthError> {
    if (MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        Ok(ttl.as_secs())
    } else {
        Err(AuthError::Invalid(format!(
            "token lifetime must be between {} and {} seconds",
            MIN_TOKEN_TTL.as_secs(),
            MAX_TOKEN_TTL.as_secs()
        )))
    }
}

/// A short digest of a user's Secret, so a token can be checked against the current one.
pub(super) fn fingerprint(secret: &str) -> String {
    let hash = digest::digest(&digest::SHA256, secret.as_bytes());
    let bytes = hash.as_ref();
    URL_SAFE_NO_PAD.encode(bytes.get(..FINGERPRINT_BYTES).unwrap_or(bytes))
}

/// Seconds since the unix epoch (0 if the clock is before it).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        TokenSigner::new(&[7u8; 32])
    }

    #[test]
    fn a_sealed_token_opens_to_the_same_payload_and_has_no_colon() {
        let mut payload = Payload::new("user:bob".into(), 60);
        payload.user = Some("bob".into());
        payload.roles = vec!["superuser".into()];
        let token = signer().seal(&payload).unwrap_or_default();
        assert!(!token.contains(':'));
        assert_eq!(signer().open(&token, unix_now()).ok(), Some(payload));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_bad() {
        let token = TokenSigner::new(&[8u8; 32])
            .seal(&Payload::new("user:bob".into(), 60))
            .unwrap_or_default();
        assert!(matches!(
            signer().open(&token, unix_now()),
            Err(AuthError::BadToken)
        ));
    }

    #[test]
    fn garbage_is_a_bad_token() {
        for garbage in ["", ".", "abc", "abc.def", "a.b.c", "!!!.???", "eyJ2IjoxfQ."] {
            assert!(
                matches!(signer().open(garbage, unix_now()), Err(AuthError::BadToken)),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_token_is_expired_from_its_expiry_second_on() {
        let payload = Payload::new("runner:x".into(), 10);
        let token = signer().seal(&payload).unwrap_or_default();
        assert!(signer().open(&token, payload.expires - 1).is_ok());
        assert!(matches!(
            signer().open(&token, payload.expires),
            Err(AuthError::ExpiredToken)
        ));
    }

    #[test]
    fn lifetimes_outside_one_second_to_three_years_are_invalid() {
        assert!(validate_ttl(Duration::from_millis(999)).is_err());
        assert_eq!(validate_ttl(Duration::from_secs(1)).ok(), Some(1));
        assert!(validate_ttl(MAX_TOKEN_TTL).is_ok());
        assert!(validate_ttl(MAX_TOKEN_TTL + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn token_info_reports_expiry_in_rfc3339() {
        let mut payload = Payload::new("user:bob".into(), 60);
        payload.expires = 0;
        assert_eq!(payload.info(60).expires, "1970-01-01T00:00:00Z");
    }
}

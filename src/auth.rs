//! Users, roles, claims, passwords and signed tokens (`docs/protocol.md` §2 and §5).
//!
//! - [`credentials`](credentials()): what a request presents (`Authorization` or `?token=`).
//! - [`Claims`]: what an identity may see and do.
//! - [`AuthStore`]: users and roles in memory, mirrored to sled; authentication and tokens.
//!
//! Authentication has a fast path that is safe on a core thread (tokens, cached passwords) and
//! a slow path (argon2id) for a blocking thread; see [`AuthStore::authenticate_fast`].

mod claims;
mod credentials;
mod hash_pool;
mod password;
mod store;
mod throttle;
mod token;
mod token_cache;

use std::sync::Arc;

pub(crate) use claims::{Claim, Claims, Role};
pub(crate) use credentials::{Credentials, credentials};
pub(crate) use hash_pool::{HASH_QUEUE, HASH_THREADS, HashPool};
pub(crate) use password::Check;
pub(crate) use store::{
    AccountWrite, AdminPassword, AdminStart, AuthStore, DEFAULT_ADMIN_USER, FastAuth,
    HashedPassword, NewUser, TOKEN_SECRET_BYTES, new_token_secret,
};
pub(crate) use throttle::{Budget, LoginThrottle, ThrottledBy};
pub(crate) use token::Token;

/// Reads a field that may be JSON `null` as its empty value, as Go does: drpcli sends every
/// field of its model, an unset list as `null` (`"Roles":null`). Use with `#[serde(default)]`.
pub(crate) fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    let value: Option<T> = serde::Deserialize::deserialize(deserializer)?;
    Ok(value.unwrap_or_default())
}

/// Why a request could not be authenticated or authorized, or a user or role change failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carried no credentials.
    #[error(
        "authentication required: send an Authorization header (Basic or Bearer) or a token parameter"
    )]
    Missing,
    /// The credentials could not be read (unknown scheme, bad base64, no `:`).
    #[error("unreadable credentials: {0}")]
    Malformed(String),
    /// No user has the given name.
    #[error("authentication failed: unknown user or wrong password")]
    UnknownUser,
    /// The password does not match the user's.
    #[error("authentication failed: unknown user or wrong password")]
    BadPassword,
    /// The token is not one of ours, is damaged, or its user was deleted or changed password.
    #[error(
        "the token is not valid (damaged, from another server, or its user changed password or was deleted); get a new token"
    )]
    BadToken,
    /// The token's lifetime is over.
    #[error("the token has expired; get a new token")]
    ExpiredToken,
    /// Too many failed logins from the client's address or for the user name: no password is
    /// verified until the budget refills (429 with `Retry-After`).
    #[error("too many logins {}; retry in {retry_after} s", by.describe())]
    Throttled {
        /// Which budget is spent.
        by: ThrottledBy,
        /// Whole seconds until one more attempt is allowed.
        retry_after: u64,
    },
    /// Every password-verification thread is busy and the queue is full (503; retry shortly).
    #[error("too many logins are being checked at once; retry in a second")]
    Busy,
    /// The identity lacks the claim the request needs; made by [`Identity::require`].
    #[error("{principal} lacks the claim {needed}")]
    Forbidden {
        /// The principal that asked.
        principal: String,
        /// The claim needed, as `scope:action:specific`.
        needed: String,
    },
    /// A user, role, claim, password or token lifetime failed validation (422, as in DRP).
    #[error("{0}")]
    Invalid(String),
    /// A user or role with that name already exists.
    #[error("{kind} {name:?} already exists")]
    Exists {
        /// `users` or `roles`, the object type as in routes and events.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The change conflicts with the current state (a role still held by users).
    #[error("{0}")]
    Conflict(String),
    /// No user or role has that name.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// `users` or `roles`, the object type as in routes and events.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The sled database failed.
    #[error("the user store failed: {}", crate::store::sled_reason(.0))]
    Store(sled::Error),
    /// Stored auth data cannot be read (damaged, or written by a newer herald).
    #[error("the user store holds unreadable data: {0}")]
    Corrupt(String),
    /// The system random generator or a hash computation failed.
    #[error("a cryptographic operation failed: {0}")]
    Crypto(String),
}

impl From<sled::Error> for AuthError {
    fn from(error: sled::Error) -> AuthError {
        AuthError::Store(error)
    }
}

impl AuthError {
    /// The HTTP status for this error (`docs/protocol.md` §2: 401 for missing or unreadable
    /// credentials, 403 for credentials that do not authenticate or authorize).
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::Malformed(_) => 401,
            AuthError::UnknownUser
            | AuthError::BadPassword
            | AuthError::BadToken
            | AuthError::ExpiredToken
            | AuthError::Forbidden { .. } => 403,
            AuthError::NotFound { .. } => 404,
            AuthError::Exists { .. } | AuthError::Conflict(_) => 409,
            AuthError::Invalid(_) => 422,
            AuthError::Throttled { .. } => 429,
            AuthError::Busy => 503,
            AuthError::Store(_) | AuthError::Corrupt(_) | AuthError::Crypto(_) => 500,
        }
    }

    /// The `reason` label of `herald_auth_failures_total` for the six authentication failures
    /// (see [`AuthError::is_authentication_failure`]); other variants get a descriptive word.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::UnknownUser => "unknown_user",
            AuthError::BadPassword => "bad_password",
            AuthError::BadToken => "bad_token",
            AuthError::ExpiredToken => "expired_token",
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::Invalid(_) => "invalid",
            AuthError::Throttled { .. } => "throttled",
            AuthError::Busy => "busy",
            AuthError::Exists { .. } => "exists",
            AuthError::Conflict(_) => "conflict",
            AuthError::NotFound { .. } => "not_found",
            AuthError::Store(_) | AuthError::Corrupt(_) | AuthError::Crypto(_) => "internal",
        }
    }

    /// Whether this is one of the failures counted in `herald_auth_failures_total`.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            AuthError::Missing
                | AuthError::Malformed(_)
                | AuthError::UnknownUser
                | AuthError::BadPassword
                | AuthError::BadToken
                | AuthError::ExpiredToken
        )
    }
}

/// Who a request or connection is, and what it may do; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// `user:<name>` or `runner:<uuid>` (`docs/protocol.md` §2).
    pub principal: String,
    /// The user, when the principal is one.
    pub user: Option<String>,
    /// The union of the identity's claims, fixed when it authenticated.
    pub claims: Arc<Claims>,
    /// When the credentials stop working, in Unix seconds: a token's expiry; `None` for a
    /// password, which does not expire.
    pub expires: Option<u64>,
}

impl Identity {
    /// Nothing when the identity holds the claim `scope:action:specific`, else the 403 naming it:
    /// the one authorization check every route makes.
    pub(crate) fn require(
        &self,
        scope: &str,
        action: &str,
        specific: &str,
    ) -> Result<(), AuthError> {
        if self.claims.allows(scope, action, specific) {
            Ok(())
        } else {
            Err(self.forbidden(scope, action, specific))
        }
    }

    /// The 403 for lacking the claim `scope:action:specific`, for a route whose check is wider
    /// than one claim (listing needs some claim on the type, whatever its key).
    pub(crate) fn forbidden(&self, scope: &str, action: &str, specific: &str) -> AuthError {
        AuthError::Forbidden {
            principal: self.principal.clone(),
            needed: format!("{scope}:{action}:{specific}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unreadable_credentials_are_401_and_failed_ones_403() {
        assert_eq!(AuthError::Missing.status(), 401);
        assert_eq!(AuthError::Malformed(String::new()).status(), 401);
        for failed in [
            AuthError::UnknownUser,
            AuthError::BadPassword,
            AuthError::BadToken,
            AuthError::ExpiredToken,
            AuthError::Forbidden {
                principal: "user:alice".into(),
                needed: "users:get:bob".into(),
            },
        ] {
            assert_eq!(failed.status(), 403, "{failed:?}");
        }
        assert_eq!(AuthError::Invalid(String::new()).status(), 422);
    }

    #[test]
    fn metric_reasons_use_the_documented_labels() {
        let labelled = [
            (AuthError::Missing, "missing"),
            (AuthError::Malformed(String::new()), "malformed"),
            (AuthError::UnknownUser, "unknown_user"),
            (AuthError::BadPassword, "bad_password"),
            (AuthError::BadToken, "bad_token"),
            (AuthError::ExpiredToken, "expired_token"),
        ];
        for (error, reason) in labelled {
            assert_eq!(error.metric_reason(), reason);
            assert!(error.is_authentication_failure());
        }
        assert!(!AuthError::Invalid(String::new()).is_authentication_failure());
    }

    #[test]
    fn a_missing_claim_is_forbidden_and_named_with_the_principal() {
        let identity = Identity {
            principal: "user:alice".into(),
            user: Some("alice".into()),
            claims: Arc::new(Claims::new([Claim::new("users", "get", "alice")])),
            expires: None,
        };
        assert!(identity.require("users", "get", "alice").is_ok());
        let refused = identity.require("users", "get", "bob");
        assert!(
            matches!(&refused, Err(AuthError::Forbidden { .. })),
            "{refused:?}"
        );
        let error = refused.err().unwrap_or(AuthError::Missing);
        assert_eq!(error.status(), 403);
        assert_eq!(
            error.to_string(),
            "user:alice lacks the claim users:get:bob"
        );
    }
}

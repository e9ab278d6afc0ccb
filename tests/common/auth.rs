//! Credentials as a client presents them, and the admin every harness server starts with.

use base64::Engine;

/// The admin user every server starts with.
pub const ADMIN: &str = "rocketskates";
/// The admin password the harness configures unless a test asks for DRP's default.
pub const ADMIN_PASSWORD: &str = "harness-admin-pw";
/// DRP's default admin password, used when none is configured.
pub const DRP_DEFAULT_PASSWORD: &str = "r0cketsk8ts";

/// Credentials as a client presents them.
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials at all.
    None,
    /// `Authorization: Basic base64(user:password)`.
    Basic(String, String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A raw `Authorization` header value, for malformed credentials.
    Header(String),
    /// A query parameter (`token` or `Token`) holding a token or `user:password`.
    Query(&'static str, String),
}

impl Auth {
    /// The admin with the harness password.
    pub fn admin() -> Auth {
        Auth::basic(ADMIN, ADMIN_PASSWORD)
    }

    /// Basic credentials.
    pub fn basic(user: &str, password: &str) -> Auth {
        Auth::Basic(user.to_string(), password.to_string())
    }

    /// A bearer token in the `Authorization` header.
    pub fn bearer(token: &str) -> Auth {
        Auth::Bearer(token.to_string())
    }

    /// `?token=<value>`.
    pub fn query(value: &str) -> Auth {
        Auth::Query("token", value.to_string())
    }

    /// The `Authorization` header value, if these credentials travel in one.
    pub fn header_value(&self) -> Option<String> {
        match self {
            Auth::Basic(user, password) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            Auth::Header(raw) => Some(raw.clone()),
            Auth::None | Auth::Query(..) => None,
        }
    }

    /// `path` with this auth's query parameter appended, if it is one.
    pub(super) fn apply_to_path(&self, path: &str) -> String {
        match self {
            Auth::Query(name, value) => {
                let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
                let joiner = if path.contains('?') { '&' } else { '?' };
                format!("{path}{joiner}{name}={encoded}")
            }
            _ => path.to_string(),
        }
    }
}

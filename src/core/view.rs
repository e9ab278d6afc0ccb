//! How the connections API shows one connection, live or closed (`docs/protocol.md` §6).

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `ExpiresAt` of credentials that never expire (a password): Go's zero time, as DRP sends it.
pub(crate) const NEVER_EXPIRES: &str = "0001-01-01T00:00:00Z";

/// `ExpiresAt` for credentials expiring at `expires` (Unix seconds), or never.
pub(crate) fn expires_at(expires: Option<u64>) -> String {
    match expires {
        Some(seconds) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
        }
        None => NEVER_EXPIRES.to_owned(),
    }
}

fn never_expires() -> String {
    NEVER_EXPIRES.to_owned()
}

/// One connection, live or closed (`docs/protocol.md` §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConnectionView {
    /// `ip:port` of the peer; unique among live connections.
    #[serde(rename = "RemoteAddr")]
    pub remote_addr: String,
    /// Who authenticated.
    #[serde(rename = "Principal")]
    pub principal: String,
    /// When the connection authenticated (RFC 3339).
    #[serde(rename = "CreateTime")]
    pub create_time: String,
    /// When the connection's credentials expire (RFC 3339), [`NEVER_EXPIRES`] for a password.
    #[serde(rename = "ExpiresAt", default = "never_expires")]
    pub expires_at: String,
    /// `websocket` or `api`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The cluster node that serves it; absent on a single node.
    #[serde(rename = "Node", default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Registered filters (websockets).
    #[serde(rename = "Filters", default)]
    pub filters: Vec<String>,
    /// Events written to the socket.
    #[serde(rename = "EventsSent", default)]
    pub events_sent: u64,
    /// Bytes written to the socket.
    #[serde(rename = "BytesSent", default)]
    pub bytes_sent: u64,
    /// Seq of the last event written.
    #[serde(rename = "LastSeq", default)]
    pub last_seq: u64,
    /// When it closed (closed connections only).
    #[serde(rename = "CloseTime", default, skip_serializing_if = "Option::is_none")]
    pub close_time: Option<String>,
    /// Why it closed (closed connections only).
    #[serde(
        rename = "CloseReason",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub close_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_rfc_3339_in_utc_or_gos_zero_time_and_old_records_read_as_never() {
        assert_eq!(expires_at(None), "0001-01-01T00:00:00Z");
        assert_eq!(expires_at(Some(1_800_000_000)), "2027-01-15T08:00:00Z");
        let before_expiry = r#"{"RemoteAddr":"127.0.0.1:1","Principal":"user:a","CreateTime":"2026-11-27T00:00:00Z","Type":"api"}"#;
        let old: ConnectionView = serde_json::from_str(before_expiry).unwrap();
        assert_eq!(old.expires_at, NEVER_EXPIRES);
    }
}

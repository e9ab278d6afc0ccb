//! What herald says about itself: `GET /api/v3/info` and the `Info` of every token answer carry
//! DRP's Info fields, which drpcli and drppy-client read (drppy-client refuses an Info without
//! them), beside herald's own (`Epoch`, `FirstSeq`, `LastSeq`, `Durability`, …).
//!
//! On-disk layout: `meta` key [`SERVER_ID_KEY`] = this server's id, a UUID v4 as UTF-8 text,
//! made on the first start and kept for the data directory's life (DRP's `id` and `uuid`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::auth::Token;
use crate::wire::http::Response;

pub(crate) use crate::store::db::SERVER_ID_KEY;

/// The DRP features herald implements, named as DRP names them (clients test for them).
const FEATURES: [&str; 2] = ["api-v3", "roles"];

/// What Info reports, as plain values read from the running server for one client.
#[derive(Debug, Clone)]
pub(crate) struct ServerFacts<'a> {
    /// This server's id (DRP's `id` and `uuid`).
    pub server_id: &'a str,
    /// The address and port the client reached.
    pub reached: SocketAddr,
    /// The machine's host name, or `""`.
    pub host_name: String,
    /// How long the server has run.
    pub uptime: Duration,
    /// Cores serving connections.
    pub cores: usize,
    /// `io_uring` or `epoll`.
    pub driver: &'a str,
    /// The log's epoch.
    pub epoch: &'a str,
    /// Oldest retained Seq.
    pub first_seq: u64,
    /// Newest stored Seq.
    pub last_seq: u64,
    /// `sync` or `batched`.
    pub durability: &'static str,
    /// Whether the admin user still has the default password.
    pub default_password: bool,
    /// A cluster node's `Cluster` object; `None` on a single node.
    pub cluster: Option<Value>,
}

/// Why the server's id could not be read or made.
#[derive(Debug, Error)]
pub enum InfoError {
    /// sled failed.
    #[error("the server id could not be stored: {0}")]
    Store(#[from] sled::Error),
    /// The stored id is not a UUID.
    #[error(
        "the server id in the database is not a UUID; the data directory is damaged or not herald's"
    )]
    Corrupt,
}

/// The server's id from `meta`, made and stored on the first start.
pub(crate) fn open_server_id(db: &sled::Db) -> Result<String, InfoError> {
    let meta = crate::store::db::meta(db)?;
    if let Some(stored) = meta.get(SERVER_ID_KEY)? {
        return std::str::from_utf8(&stored)
            .ok()
            .and_then(|text| uuid::Uuid::try_parse(text).ok())
            .map(|id| id.hyphenated().to_string())
            .ok_or(InfoError::Corrupt);
    }
    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    meta.insert(SERVER_ID_KEY, id.as_bytes())?;
    meta.flush()?;
    Ok(id)
}

/// The answer of `GET /api/v3/info`.
pub(crate) fn server_info(facts: &ServerFacts) -> Map<String, Value> {
    let mut warnings = Vec::new();
    if facts.default_password {
        warnings.push("the admin user rocketskates still has the default password r0cketsk8ts; set --admin-password or change it");
    }
    let reached = facts.reached;
    let id = facts.server_id;
    let version = env!("CARGO_PKG_VERSION");
    let info = json!({
        "Version": version,
        "Uptime": facts.uptime.as_secs(),
        "Cores": facts.cores,
        "Driver": facts.driver,
        "Epoch": facts.epoch,
        "FirstSeq": facts.first_seq,
        "LastSeq": facts.last_seq,
        "Durability": facts.durability,
        "DefaultPassword": facts.default_password,
        "Warnings": warnings,
    });
    let mut info = info;
    if let (Some(cluster), Some(object)) = (&facts.cluster, info.as_object_mut()) {
        object.insert("Cluster".into(), cluster.clone());
    }
    // DRP's Info: herald serves the API and the event stream, and no DHCP, PXE, TFTP, BINL,
    // DNS or file server, so those are off with port 0.
    let drp = json!({
        "address": reached.ip().to_string(),
        "api_port": reached.port(),
        "arch": go_arch(),
        "os": std::env::consts::OS,
        "version": version,
        "id": id,
        "local_id": id,
        "uuid": id,
        "server_hostname": facts.host_name,
        "features": FEATURES,
        "stats": [],
        "errors": [],
        "manager": false,
        "file_port": 0,
        "secure_file_port": 0,
        "dhcp_port": 0,
        "binl_port": 0,
        "dns_port": 0,
        "tftp_port": 0,
        "extra_api_ports": [],
        "extra_file_ports": [],
        "extra_secure_file_ports": [],
        "prov_enabled": false,
        "secure_prov_enabled": false,
        "dhcp_enabled": false,
        "binl_enabled": false,
        "dns_enabled": false,
        "tftp_enabled": false,
        // A single node: high availability is off and this node is the active one.
        "ha_enabled": false,
        "ha_id": id,
        "ha_is_active": true,
        "ha_status": "Up",
        "ha_consensus_id": "",
        "ha_active_id": id,
        "ha_virtual_address": "",
        "ha_passive_state": [],
    });
    let mut fields = Map::new();
    for part in [info, drp] {
        if let Value::Object(part) = part {
            fields.extend(part);
        }
    }
    fields
}

/// `GET /api/v3/info`.
pub(crate) fn response(facts: &ServerFacts) -> Response {
    Response::json(200, &server_info(facts))
}

/// A token answer as DRP shapes it: `Token`, and an `Info` that is the server's Info with what
/// the token grants (`Principal`, `Roles`, `Expires`, …) beside it.
pub(crate) fn token_answer(facts: &ServerFacts, token: &Token) -> Value {
    let mut info = server_info(facts);
    if let Ok(Value::Object(granted)) = serde_json::to_value(&token.info) {
        info.extend(granted);
    }
    json!({"Token": token.token, "Info": info})
}

/// This build's architecture as Go (`GOARCH`) and so DRP name it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        "mips" if cfg!(target_endian = "little") => "mipsle",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_id_is_made_once_and_kept() {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .unwrap_or_else(|e| panic!("sled: {e}"));
        let first = open_server_id(&db).unwrap_or_else(|e| panic!("{e}"));
        assert!(uuid::Uuid::try_parse(&first).is_ok(), "{first}");
        let again = open_server_id(&db).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, again);
        let meta = db.open_tree("meta").unwrap_or_else(|e| panic!("{e}"));
        meta.insert(SERVER_ID_KEY, b"not a uuid".as_slice())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(open_server_id(&db), Err(InfoError::Corrupt)));
    }

    #[test]
    fn info_reports_the_values_it_is_handed_and_the_address_the_client_reached() {
        let facts = ServerFacts {
            server_id: "6e7a3b5c-0d1f-4c2a-9a8b-1f2e3d4c5b6a",
            reached: SocketAddr::from(([10, 0, 0, 7], 8092)),
            host_name: "hub".into(),
            uptime: Duration::from_secs(42),
            cores: 2,
            driver: "epoll",
            epoch: "e1",
            first_seq: 3,
            last_seq: 9,
            durability: "sync",
            default_password: true,
            cluster: None,
        };
        let info = server_info(&facts);
        assert_eq!(info["Uptime"], 42);
        assert_eq!(info["Epoch"], "e1");
        assert_eq!(
            (info["FirstSeq"].as_u64(), info["LastSeq"].as_u64()),
            (Some(3), Some(9))
        );
        assert_eq!(info["Durability"], "sync");
        assert_eq!(info["address"], "10.0.0.7");
        assert_eq!(info["api_port"], 8092);
        assert_eq!(info["uuid"], facts.server_id);
        assert_eq!(info["server_hostname"], "hub");
        assert_eq!(info["Warnings"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn the_architecture_has_its_go_name() {
        let arch = go_arch();
        assert!(!arch.is_empty());
        assert_ne!(arch, "x86_64");
        assert_ne!(arch, "aarch64");
    }
}

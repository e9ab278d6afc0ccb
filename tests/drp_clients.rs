//! DRP's own clients against herald: each test sends what drpcli v4.8 (a Go net/http client
//! that marshals its whole Go model) or drppy-client sends, byte for byte where it matters, and
//! checks what that client needs of the answer.

mod common;

use std::time::{Duration, SystemTime};

use common::{Auth, HttpReply, Options, RawHttp, Server, eventually, unique};
use serde_json::{Value, json};

/// Go's zero `time.Time`, as drpcli marshals a time the user never set.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A keep-alive connection that speaks as drpcli does: Go's net/http headers in Go's order.
struct Drpcli {
    http: RawHttp,
    host: String,
}

impl Drpcli {
    fn connect(server: &Server) -> Drpcli {
        Drpcli {
            http: server.raw(),
            host: server.addr().to_string(),
        }
    }

    /// One request with `authorization` (a whole header value) and an optional JSON body.
    fn send(
        &mut self,
        method: &str,
        path: &str,
        authorization: &str,
        body: Option<&str>,
    ) -> HttpReply {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\n",
            self.host
        );
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str(&format!("Authorization: {authorization}\r\n"));
        if body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("Accept-Encoding: gzip\r\n\r\n");
        request.push_str(body.unwrap_or_default());
        self.http
            .send(request.as_bytes())
            .expect("send the request");
        self.http
            .read_response(Duration::from_secs(10))
            .expect("read the answer")
    }
}

/// drpcli refuses every answer but a 304 whose Content-Type is not `application/json`.
fn assert_json_content_type(reply: &HttpReply) {
    let content_type = reply.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "drpcli would say 'Cannot handle content-type {content_type:?}': {reply:?}"
    );
}

fn basic(server: &Server) -> String {
    server
        .admin()
        .header_value()
        .expect("basic credentials travel in a header")
}

/// The stored event with this Seq, read back as the admin.
fn stored_event(server: &Server, seq: u64) -> Value {
    let events = server.read_log_through(&server.admin(), seq - 1, None, seq);
    events
        .into_iter()
        .find(|e| e["Seq"] == seq)
        .unwrap_or_else(|| panic!("event {seq} is not in the log"))
}

fn parse_utc(text: &str) -> SystemTime {
    assert!(text.ends_with('Z'), "{text} is not in UTC");
    humantime::parse_rfc3339_weak(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// What `drpcli events post` sends for `{"Type":…,"Action":…,"Key":…}`: the whole Go Event.
fn drpcli_event(ty: &str, time: &str) -> String {
    json!({
        "Time": time, "Type": ty, "Action": "post", "Key": "k1",
        "Principal": "", "Object": null, "Original": null,
    })
    .to_string()
}

#[test]
fn drpclis_events_post_sequence_is_answered_204_with_a_json_content_type() {
    let server = Server::shared();
    let ty = unique("drpcli");
    let mut drpcli = Drpcli::connect(server);
    let since = server.info()["LastSeq"].as_u64().unwrap_or_default();
    let before = SystemTime::now();

    // drpcli logs in for a token with the password, then sends the token.
    let token_reply = drpcli.send(
        "GET",
        "/api/v3/users/rocketskates/token?ttl=600",
        &basic(server),
        None,
    );
    assert_eq!(token_reply.status, 200, "{token_reply:?}");
    assert_json_content_type(&token_reply);
    let token = token_reply.json()["Token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    for authorization in [format!("Bearer {token}"), basic(server)] {
        let reply = drpcli.send(
            "POST",
            "/api/v3/events",
            &authorization,
            Some(&drpcli_event(&ty, GO_ZERO_TIME)),
        );
        assert_eq!(reply.status, 204, "{reply:?}");
        assert_json_content_type(&reply);
        let seq = common::herald_seq(&reply);
        assert!(seq > since);
        let stored = stored_event(server, seq);
        assert_eq!(stored["Type"], ty.as_str());
        let time = stored["Time"].as_str().unwrap_or_default();
        assert!(
            parse_utc(time) >= before - Duration::from_secs(1),
            "Go's zero time must become the receive time, not {time}"
        );
    }
}

#[test]
fn a_time_with_an_offset_is_stored_in_utc() {
    let server = Server::shared();
    let mut drpcli = Drpcli::connect(server);
    let ty = unique("offset");
    for (sent, stored) in [
        ("2026-12-05T10:00:00-05:00", "2026-12-05T15:00:00Z"),
        ("2026-12-05T10:00:00.5+05:30", "2026-12-05T04:30:00.5Z"),
        ("2026-12-05T10:00:00Z", "2026-12-05T10:00:00Z"),
    ] {
        let reply = drpcli.send(
            "POST",
            "/api/v3/events",
            &basic(server),
            Some(&drpcli_event(&ty, sent)),
        );
        assert_eq!(reply.status, 204, "{sent}: {reply:?}");
        assert_eq!(
            stored_event(server, common::herald_seq(&reply))["Time"],
            stored
        );
    }
    let refused = drpcli.send(
        "POST",
        "/api/v3/events",
        &basic(server),
        Some(&drpcli_event(&ty, "2026-12-05T10:00:00")),
    );
    common::assert_drp_error(&refused, 400);
}

#[test]
fn every_answer_without_a_body_carries_a_json_content_type() {
    let server = Server::shared();
    let mut http = server.raw();
    let authorization = basic(server);
    for head_path in [
        "/api/v3/info",
        "/api/v3/profiles/global",
        "/api/v3/events?limit=1",
    ] {
        http.send(
            format!("HEAD {head_path} HTTP/1.1\r\nHost: herald\r\nAuthorization: {authorization}\r\n\r\n")
                .as_bytes(),
        )
        .expect("send HEAD");
        let reply = http
            .read_head(Duration::from_secs(10))
            .expect("HEAD answer");
        assert_eq!(reply.status, 200, "HEAD {head_path}: {reply:?}");
        assert_json_content_type(&reply);
    }
    let published = server.post_events(
        &server.admin(),
        &common::event("ct", "post", "k").to_string(),
    );
    assert_eq!(published.status, 204);
    assert!(published.body.is_empty());
    assert_json_content_type(&published);
}

/// What `drpcli machines create '{"Name":…}'` sends: the whole Go Machine with its zero values.
fn drpcli_machine(name: &str) -> Value {
    json!({
        "Validated": false, "Available": false, "Errors": null, "ReadOnly": false,
        "Meta": null, "Endpoint": "", "Bundle": "", "Partial": false,
        "Name": name, "Description": "", "Uuid": "", "CurrentJob": "", "Address": "",
        "Stage": "", "BootEnv": "", "Profiles": null, "Params": null, "Tasks": null,
        "CurrentTask": 0, "Runnable": false, "Secret": "", "OS": "", "HardwareAddrs": null,
        "Workflow": "", "WorkflowComplete": false, "Arch": "", "Locked": false, "Context": "",
        "Pool": "", "PoolAllocated": false, "PoolStatus": "", "JobState": "",
        "JobExitState": "", "JobResultErrors": null,
    })
}

#[test]
fn drpclis_machines_create_gets_a_random_uuid_and_a_runnable_machine() {
    let server = Server::shared();
    let mut drpcli = Drpcli::connect(server);
    let mut seen = Vec::new();
    for kind in ["machines", "clusters", "resource_brokers"] {
        for body in [
            drpcli_machine(&unique("m")),
            json!({"Name": unique("m")}),
            json!({"Name": unique("m"), "Uuid": null}),
        ] {
            let reply = drpcli.send(
                "POST",
                &format!("/api/v3/{kind}"),
                &basic(server),
                Some(&body.to_string()),
            );
            assert_eq!(reply.status, 201, "{kind} {body}: {reply:?}");
            assert_json_content_type(&reply);
            let created = reply.json();
            let uuid = created["Uuid"].as_str().unwrap_or_default().to_owned();
            let parsed = uuid::Uuid::try_parse(&uuid).unwrap_or_else(|e| panic!("{uuid:?}: {e}"));
            assert_eq!(parsed.get_version_num(), 4, "{uuid}");
            assert_eq!(created["Runnable"], true, "{kind}: {created}");
            assert_eq!(created["Profiles"], json!([]));
            assert_eq!(created["Params"], json!({}));
            assert_eq!(created["Meta"], json!({}));
            // What `machines wait <uuid> Runnable true` reads.
            let shown = drpcli.send(
                "GET",
                &format!("/api/v3/{kind}/{uuid}"),
                &basic(server),
                None,
            );
            assert_eq!(shown.json()["Runnable"], true);
            seen.push(uuid);
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 9, "every create got its own UUID");
}

#[test]
fn drpclis_users_and_roles_create_with_null_lists_are_accepted() {
    let server = Server::shared();
    let mut drpcli = Drpcli::connect(server);
    let role = unique("role");
    let role_body = json!({
        "Validated": false, "Available": false, "Errors": null, "ReadOnly": false,
        "Meta": null, "Endpoint": "", "Bundle": "", "Name": role, "Description": "",
        "Documentation": "", "Claims": null,
    });
    let reply = drpcli.send(
        "POST",
        "/api/v3/roles",
        &basic(server),
        Some(&role_body.to_string()),
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_eq!(reply.json()["Claims"], json!([]));

    let user = unique("u");
    let user_body = json!({
        "Validated": false, "Available": false, "Errors": null, "ReadOnly": false,
        "Meta": null, "Endpoint": "", "Bundle": "", "Name": user, "Description": "",
        "Secret": "", "Roles": null, "ActiveTenant": "",
    });
    let reply = drpcli.send(
        "POST",
        "/api/v3/users",
        &basic(server),
        Some(&user_body.to_string()),
    );
    assert_eq!(reply.status, 201, "{reply:?}");
    assert_json_content_type(&reply);
    assert_eq!(reply.json()["Roles"], json!([]));

    // A PUT carries the whole model too.
    let reply = drpcli.send(
        "PUT",
        &format!("/api/v3/users/{user}"),
        &basic(server),
        Some(&user_body.to_string()),
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let claim = json!({"Scope": "profiles", "Action": "get", "Specific": null});
    let reply = drpcli.send(
        "PUT",
        &format!("/api/v3/roles/{role}"),
        &basic(server),
        Some(&json!({"Name": role, "Claims": [claim], "Meta": null}).to_string()),
    );
    // A claim needs every field: null is empty, so this one is refused as such, not as bad JSON.
    common::assert_drp_error(&reply, 422);
}

#[test]
fn null_is_the_empty_value_for_every_field_of_every_object_kind() {
    let server = Server::shared();
    for kind in [
        "profiles",
        "params",
        "machines",
        "clusters",
        "resource_brokers",
    ] {
        let body = json!({
            "Name": unique("n"), "Description": null, "Meta": null, "Params": null,
            "Profiles": null, "Secure": null, "Runnable": null,
        });
        let reply = server.request(
            "POST",
            &format!("/api/v3/{kind}"),
            &server.admin(),
            Some(&body.to_string()),
        );
        assert_eq!(reply.status, 201, "{kind}: {reply:?}");
        let created = reply.json();
        assert_eq!(created["Description"], "", "{kind}");
        assert_eq!(created["Meta"], json!({}), "{kind}");
        if kind == "params" {
            assert_eq!(created["Secure"], false);
        } else {
            assert_eq!(created["Params"], json!({}), "{kind}");
            assert_eq!(created["Profiles"], json!([]), "{kind}");
        }
    }
}

#[test]
fn info_answers_drps_info_fields_beside_heralds_own() {
    let server = Server::shared();
    let info = server.info();
    let strings = [
        "address",
        "arch",
        "ha_consensus_id",
        "ha_id",
        "ha_status",
        "id",
        "local_id",
        "os",
        "uuid",
        "version",
        "Version",
        "Epoch",
        "Durability",
        "Driver",
    ];
    let numbers = [
        "api_port",
        "binl_port",
        "dhcp_port",
        "dns_port",
        "file_port",
        "secure_file_port",
        "tftp_port",
        "FirstSeq",
        "LastSeq",
        "Cores",
        "Uptime",
    ];
    let flags = [
        "binl_enabled",
        "dhcp_enabled",
        "dns_enabled",
        "ha_is_active",
        "manager",
        "prov_enabled",
        "secure_prov_enabled",
        "tftp_enabled",
        "DefaultPassword",
    ];
    for field in strings {
        assert!(info[field].is_string(), "{field} is not a string: {info}");
    }
    for field in numbers {
        assert!(info[field].is_u64(), "{field} is not a number: {info}");
    }
    for field in flags {
        assert!(
            info[field].is_boolean(),
            "{field} is not true or false: {info}"
        );
    }
    assert_eq!(info["address"], "127.0.0.1");
    assert_eq!(info["api_port"], server.addr().port());
    assert_eq!(info["os"], std::env::consts::OS);
    let go_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(info["arch"], go_arch);
    assert_eq!(info["version"], info["Version"]);
    assert!(uuid::Uuid::try_parse(info["id"].as_str().unwrap_or_default()).is_ok());
    assert_eq!(info["uuid"], info["id"]);
    let features = info["features"].as_array().expect("features is a list");
    assert!(features.contains(&json!("api-v3")), "{info}");
    // herald serves no DHCP, PXE, TFTP or files, and says so.
    assert_eq!(info["dhcp_enabled"], false);
    assert_eq!(info["prov_enabled"], false);
    assert_eq!(info["tftp_enabled"], false);

    let token = server.request(
        "GET",
        "/api/v3/users/rocketskates/token?ttl=600",
        &server.admin(),
        None,
    );
    assert_eq!(token.status, 200, "{token:?}");
    let token_info = &token.json()["Info"];
    for field in [
        "address", "api_port", "arch", "os", "version", "id", "features", "Epoch",
    ] {
        assert_eq!(
            token_info[field], info[field],
            "token Info {field}: {token_info}"
        );
    }
    assert_eq!(token_info["Principal"], "user:rocketskates");
    assert!(token_info["Expires"].is_string(), "{token_info}");
}

#[test]
fn the_server_id_survives_a_restart() {
    let data = tempfile::tempdir().expect("a data directory");
    let options = || Options::in_dir(data.path());
    let first = Server::start_with(options()).info()["id"].clone();
    let again = Server::start_with(options()).info()["id"].clone();
    assert!(first.is_string());
    assert_eq!(first, again);
}

/// Every `connections.*` event about `remote` in the log after `since`, once there is one with
/// `action` (the log serves only events already on disk).
fn connection_events(server: &Server, since: u64, remote: &str, action: &str) -> Vec<Value> {
    eventually(
        &format!("connections.{action} for {remote}"),
        Duration::from_secs(10),
        || {
            let events: Vec<Value> = server
                .read_log(&server.admin(), since, Some("connections.*.*"))
                .into_iter()
                .filter(|e| e["Object"]["RemoteAddr"] == remote)
                .collect();
            if events.iter().any(|e| e["Action"] == action) {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            }
        },
    )
}

#[test]
fn a_connections_create_event_comes_before_what_it_publishes_and_its_delete_after() {
    let server = Server::shared();
    for round in 0..5 {
        let since = server.info()["LastSeq"].as_u64().unwrap_or_default();
        let mut drpcli = Drpcli::connect(server);
        let remote = drpcli
            .http
            .stream()
            .local_addr()
            .expect("local address")
            .to_string();
        let ty = unique("ordered");
        let reply = drpcli.send(
            "POST",
            "/api/v3/events",
            &basic(server),
            Some(&drpcli_event(&ty, GO_ZERO_TIME)),
        );
        assert_eq!(reply.status, 204, "{reply:?}");
        let posted = common::herald_seq(&reply);
        drop(drpcli);

        let events = connection_events(server, since, &remote, "delete");
        let seq_of = |action: &str| {
            events
                .iter()
                .find(|e| e["Action"] == action)
                .and_then(|e| e["Seq"].as_u64())
                .unwrap_or_else(|| panic!("no connections.{action} for {remote}: {events:?}"))
        };
        assert!(
            seq_of("create") < posted,
            "round {round}: connections.create has Seq {} after the posted event's {posted}",
            seq_of("create")
        );
        assert!(seq_of("delete") > posted, "round {round}: {events:?}");
    }
}

#[test]
fn connections_carry_expires_at_for_tokens_and_gos_zero_time_for_passwords() {
    let server = Server::shared();
    let user = unique("expiring");
    server.create_user(&user, "pw-expiring", &["superuser"]);
    let token_reply = server.request(
        "GET",
        &format!("/api/v3/users/{user}/token?ttl=900"),
        &Auth::basic(&user, "pw-expiring"),
        None,
    );
    let token_answer = token_reply.json();
    let token = token_answer["Token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let expires = token_answer["Info"]["Expires"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let since = server.info()["LastSeq"].as_u64().unwrap_or_default();

    let mut by_password = Drpcli::connect(server);
    let password_addr = by_password
        .http
        .stream()
        .local_addr()
        .expect("address")
        .to_string();
    let basic_header = Auth::basic(&user, "pw-expiring")
        .header_value()
        .unwrap_or_default();
    assert_eq!(
        by_password
            .send("GET", "/api/v3/info", &basic_header, None)
            .status,
        200
    );
    let mut by_token = Drpcli::connect(server);
    let token_addr = by_token
        .http
        .stream()
        .local_addr()
        .expect("address")
        .to_string();
    assert_eq!(
        by_token
            .send("GET", "/api/v3/info", &format!("Bearer {token}"), None)
            .status,
        200
    );

    let listed = by_token.send(
        "GET",
        "/api/v3/connections",
        &format!("Bearer {token}"),
        None,
    );
    let listed = listed.json();
    let entry = |addr: &str| {
        listed
            .as_array()
            .and_then(|all| all.iter().find(|c| c["RemoteAddr"] == addr))
            .cloned()
            .unwrap_or_else(|| panic!("{addr} is not listed: {listed}"))
    };
    let drp_fields = ["CreateTime", "ExpiresAt", "Principal", "RemoteAddr", "Type"];
    for (addr, expected) in [
        (&password_addr, GO_ZERO_TIME),
        (&token_addr, expires.as_str()),
    ] {
        let connection = entry(addr);
        for field in drp_fields {
            assert!(
                connection[field].is_string(),
                "{field} missing: {connection}"
            );
        }
        assert_eq!(connection["ExpiresAt"], expected, "{connection}");
        let created = connection_events(server, since, addr, "create");
        assert_eq!(created[0]["Action"], "create", "{created:?}");
        assert_eq!(created[0]["Object"]["ExpiresAt"], expected, "{created:?}");
    }
    assert!(parse_utc(&expires) > SystemTime::now() + Duration::from_secs(800));
}

#[test]
fn small_byte_retention_values_are_accepted_and_keep_the_newest_event() {
    for limit in ["65536", "64KiB"] {
        let server = Server::start_with(Options::with_args(&["--retain-bytes", limit]));
        // One connection for everything, so no connection event follows the large one.
        let mut drpcli = Drpcli::connect(&server);
        let authorization = basic(&server);
        for n in 0..3 {
            let small = drpcli_event(&format!("small{n}"), GO_ZERO_TIME);
            let reply = drpcli.send("POST", "/api/v3/events", &authorization, Some(&small));
            assert_eq!(reply.status, 204, "{limit}: {reply:?}");
        }
        // One event larger than the whole limit: it alone stays.
        let large = json!({
            "Type": "large", "Action": "post", "Key": "k", "Object": {"blob": "x".repeat(100_000)},
        });
        let reply = drpcli.send(
            "POST",
            "/api/v3/events",
            &authorization,
            Some(&large.to_string()),
        );
        assert_eq!(reply.status, 204, "{limit}: {reply:?}");
        let newest = common::herald_seq(&reply);
        let info = eventually(
            &format!("{limit}: trimmed down to {newest}"),
            Duration::from_secs(15),
            || {
                let info = drpcli
                    .send("GET", "/api/v3/info", &authorization, None)
                    .json();
                if info["FirstSeq"] == newest {
                    Ok(info)
                } else {
                    Err(info)
                }
            },
        );
        assert_eq!(info["LastSeq"], newest, "{limit}: {info}");
        let kept = drpcli
            .send("GET", "/api/v3/events?since=0", &authorization, None)
            .json();
        assert_eq!(
            common::seqs(kept.as_array().expect("a list")),
            [newest],
            "{limit}"
        );
        assert_eq!(kept[0]["Type"], "large");
    }
}

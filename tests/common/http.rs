//! REST over ureq: requests as the admin or anyone, publishing, users, roles and tokens.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Value, json};

use super::{Auth, Server};

/// An HTTP answer, whichever client read it.
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Headers in the order received, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body as text (lossy).
    pub body: String,
}

impl HttpReply {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected a JSON body ({e}), status {}: {:?}",
                self.status, self.body
            )
        })
    }
}

/// Asserts that `reply` is a DRP-shaped error with this status and a matching `Code`.
pub fn assert_drp_error(reply: &HttpReply, status: u16) {
    assert_eq!(reply.status, status, "unexpected status; answer: {reply:?}");
    let body = reply.json();
    for field in ["Model", "Key", "Type"] {
        assert!(
            body.get(field).is_some_and(Value::is_string),
            "error body lacks string field {field}: {body}"
        );
    }
    let messages = body.get("Messages").and_then(Value::as_array);
    assert!(
        messages.is_some_and(
            |m| !m.is_empty() && m.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty()))
        ),
        "error body needs non-empty Messages in words: {body}"
    );
    assert_eq!(
        body.get("Code").and_then(Value::as_u64),
        Some(u64::from(status)),
        "error Code must match the status: {body}"
    );
}

impl Server {
    /// One REST request with ureq; the answer whatever its status.
    pub fn request(&self, method: &str, path: &str, auth: &Auth, body: Option<&str>) -> HttpReply {
        let url = format!("{}{}", self.base_url(), auth.apply_to_path(path));
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(value) = auth.header_value() {
            builder = builder.header("Authorization", value);
        }
        let result = match body {
            Some(body) => self.agent.run(
                builder
                    .header("Content-Type", "application/json")
                    .body(body.as_bytes().to_vec())
                    .expect("build request"),
            ),
            None => self
                .agent
                .run(builder.body(ureq::SendBody::none()).expect("build request")),
        };
        let mut response = result.unwrap_or_else(|e| {
            panic!(
                "{method} {url} failed: {e}; server stderr:\n{}",
                self.stderr()
            )
        });
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("read the body of {method} {url}: {e}"));
        HttpReply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// `GET path` as the admin.
    pub fn get(&self, path: &str) -> HttpReply {
        self.request("GET", path, &self.admin(), None)
    }

    /// `POST /api/v3/events` with this body and auth.
    pub fn post_events(&self, auth: &Auth, body: &str) -> HttpReply {
        self.request("POST", "/api/v3/events", auth, Some(body))
    }

    /// Publishes as the admin; asserts 204 and returns `Herald-Seq`.
    pub fn publish(&self, event: Value) -> u64 {
        self.publish_as(&self.admin(), event)
    }

    /// Publishes with these credentials; asserts 204 and returns `Herald-Seq`.
    pub fn publish_as(&self, auth: &Auth, event: Value) -> u64 {
        let reply = self.post_events(auth, &event.to_string());
        assert_eq!(reply.status, 204, "publish of {event} failed: {reply:?}");
        herald_seq(&reply)
    }

    /// Asserts the server still answers an ordinary authenticated request.
    pub fn assert_serving(&self) {
        let reply = self.get("/api/v3/info");
        assert_eq!(
            reply.status,
            200,
            "server stopped serving: {reply:?}; stderr:\n{}",
            self.stderr()
        );
    }

    /// Mints a token for `user` with its own password; asserts 200.
    pub fn mint_token(&self, user: &str, password: &str, ttl_seconds: u64) -> String {
        let reply = self.request(
            "GET",
            &format!("/api/v3/users/{user}/token?ttl={ttl_seconds}"),
            &Auth::basic(user, password),
            None,
        );
        assert_eq!(reply.status, 200, "token request failed: {reply:?}");
        reply
            .json()
            .get("Token")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("token answer has no Token: {}", reply.body))
            .to_string()
    }

    /// Creates a role with these claims as the admin; asserts success.
    pub fn create_role(&self, name: &str, claims: Value) {
        let body = json!({"Name": name, "Claims": claims});
        let reply = self.request(
            "POST",
            "/api/v3/roles",
            &self.admin(),
            Some(&body.to_string()),
        );
        assert!(
            (200..300).contains(&reply.status),
            "create role {name}: {reply:?}"
        );
    }

    /// One series' value from `/metrics` (0 when absent), e.g. `herald_auth_throttled_total{by="user"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let reply = self.get("/metrics");
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
            .body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(name, _)| *name == series)
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0.0)
    }

    /// Creates a user with these roles and password as the admin; asserts success.
    pub fn create_user(&self, name: &str, password: &str, roles: &[&str]) {
        let body = json!({"Name": name, "Roles": roles, "Password": password});
        let reply = self.request(
            "POST",
            "/api/v3/users",
            &self.admin(),
            Some(&body.to_string()),
        );
        assert!(
            (200..300).contains(&reply.status),
            "create user {name}: {reply:?}"
        );
    }
}

/// A ureq agent that reports every status as a response, trusting exactly `pem` for https.
pub(super) fn agent_trusting(pem: Option<&[u8]>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .ip_family(ureq::config::IpFamily::Ipv4Only)
        .timeout_global(Some(Duration::from_secs(15)));
    if let Some(pem) = pem {
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
                .build(),
        );
    }
    config.build().new_agent()
}

/// Reads `Herald-Seq` from a publish answer.
pub fn herald_seq(reply: &HttpReply) -> u64 {
    reply
        .header("Herald-Seq")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("publish answer lacks a numeric Herald-Seq: {reply:?}"))
}

/// The top-level keys of a JSON object in the order they appear in `text`.
pub fn top_level_keys(text: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    struct KeysVisitor;
    impl<'de> Visitor<'de> for KeysVisitor {
        type Value = Keys;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(key);
            }
            Ok(Keys(keys))
        }
    }
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            d.deserialize_map(KeysVisitor)
        }
    }
    serde_json::from_str::<Keys>(text)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"))
        .0
}

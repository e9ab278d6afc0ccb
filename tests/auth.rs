//! `docs/protocol.md` §2: credentials from headers and the query, tokens, and their invalidation.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{
    ADMIN, Auth, DRP_DEFAULT_PASSWORD, HttpReply, Options, Server, assert_drp_error, eventually,
    unique,
};
use serde_json::{Value, json};

fn info(server: &Server, auth: &Auth) -> HttpReply {
    server.request("GET", "/api/v3/info", auth, None)
}

fn assert_unauthenticated(reply: &HttpReply) {
    assert_drp_error(reply, 401);
    assert_eq!(
        reply.header("WWW-Authenticate"),
        Some("dr-provision"),
        "401 must carry WWW-Authenticate: dr-provision: {reply:?}"
    );
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A superuser-role user with its own password, for tests that change or delete it.
fn new_user(server: &Server, password: &str) -> String {
    let name = unique("user");
    server.create_user(&name, password, &["superuser"]);
    name
}

/// Asserts that no object inside `value` has a `PasswordHash` or `Secret` field.
fn assert_no_secrets(value: &Value, what: &str) {
    match value {
        Value::Object(map) => {
            for forbidden in ["PasswordHash", "Secret"] {
                assert!(
                    !map.contains_key(forbidden),
                    "{what} carries {forbidden}: {value}"
                );
            }
            map.values().for_each(|v| assert_no_secrets(v, what));
        }
        Value::Array(items) => items.iter().for_each(|v| assert_no_secrets(v, what)),
        _ => {}
    }
}

/// Every string value inside `value`.
fn string_values(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(string_values).collect(),
        Value::Object(map) => map.values().flat_map(string_values).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn no_credentials_are_a_401_with_www_authenticate_dr_provision() {
    let server = Server::shared();
    assert_unauthenticated(&info(server, &Auth::None));
}

#[test]
fn unreadable_authorization_headers_are_401() {
    let server = Server::shared();
    let good = format!("{ADMIN}:{}", server.admin_password());
    for header in [
        format!("Digest {}", b64(&good)),
        format!("basic {}", b64(&good)),
        "Basic %%%not-base64%%%".to_string(),
        format!("Basic {}", b64("no-colon-here")),
    ] {
        let reply = info(server, &Auth::Header(header.clone()));
        assert_eq!(reply.status, 401, "{header:?} should be 401: {reply:?}");
        assert_unauthenticated(&reply);
    }
    server.assert_serving();
}

#[test]
fn unknown_user_is_403() {
    let server = Server::shared();
    assert_drp_error(&info(server, &Auth::basic("nobody-at-all", "pw")), 403);
}

#[test]
fn wrong_password_is_403() {
    let server = Server::shared();
    assert_drp_error(&info(server, &Auth::basic(ADMIN, "not-the-password")), 403);
}

#[test]
fn garbage_token_is_403_in_the_header_and_in_the_query() {
    let server = Server::shared();
    assert_drp_error(&info(server, &Auth::bearer("garbage-token")), 403);
    assert_drp_error(&info(server, &Auth::query("garbage-token")), 403);
}

#[test]
fn query_token_with_user_and_password_authenticates() {
    let server = Server::shared();
    let pair = format!("{ADMIN}:{}", server.admin_password());
    let reply = info(server, &Auth::query(&pair));
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = info(server, &Auth::Query("Token", pair));
    assert_eq!(reply.status, 200, "?Token= is read too: {reply:?}");
    let reply = info(server, &Auth::query(&format!("{ADMIN}:wrong")));
    assert_drp_error(&reply, 403);
    let mut client = server.ws(&Auth::query(&format!(
        "{ADMIN}:{}",
        server.admin_password()
    )));
    client.register("querypair.*.*");
}

#[test]
fn minted_token_has_no_colon_and_works_as_bearer_and_in_the_query() {
    let server = Server::shared();
    let reply = server.get(&format!("/api/v3/users/{ADMIN}/token?ttl=60"));
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    let token = body["Token"]
        .as_str()
        .expect("Token is a string")
        .to_string();
    assert!(body["Info"].is_object(), "token answer has Info: {body}");
    assert!(!token.is_empty() && !token.contains(':'), "token {token:?}");
    assert_eq!(info(server, &Auth::bearer(&token)).status, 200);
    assert_eq!(info(server, &Auth::query(&token)).status, 200);
    assert_eq!(
        info(server, &Auth::Query("Token", token.clone())).status,
        200
    );
    let mut client = server.ws(&Auth::query(&token));
    client.register("tokentest.*.*");
}

#[test]
fn expired_token_is_403() {
    let server = Server::shared();
    let token = server.mint_token(ADMIN, server.admin_password(), 1);
    let refused = eventually(
        "a token with ttl=1 refused",
        Duration::from_secs(10),
        || {
            let reply = info(server, &Auth::bearer(&token));
            if reply.status == 403 {
                return Ok(reply);
            }
            assert_eq!(
                reply.status, 200,
                "before expiry the token works: {reply:?}"
            );
            Err(reply.status)
        },
    );
    assert_drp_error(&refused, 403);
}

#[test]
fn websocket_upgrade_with_bad_credentials_is_an_ordinary_http_answer() {
    let server = Server::shared();
    let refused = server
        .try_ws(&Auth::None)
        .err()
        .expect("no credentials must be refused");
    assert_unauthenticated(&refused);
    let refused = server
        .try_ws(&Auth::basic(ADMIN, "wrong"))
        .err()
        .expect("a wrong password must be refused");
    assert_drp_error(&refused, 403);
    let refused = server
        .try_ws(&Auth::query("garbage"))
        .err()
        .expect("a garbage token must be refused");
    assert_drp_error(&refused, 403);
}

#[test]
fn password_change_invalidates_old_tokens_and_the_old_password_at_once() {
    let server = Server::shared();
    let name = new_user(server, "first-pw");
    let token = server.mint_token(&name, "first-pw", 600);
    // Use both once so that any cache of verified credentials is warm.
    assert_eq!(info(server, &Auth::basic(&name, "first-pw")).status, 200);
    assert_eq!(info(server, &Auth::bearer(&token)).status, 200);

    let reply = server.request(
        "PUT",
        &format!("/api/v3/users/{name}/password"),
        &server.admin(),
        Some(&json!({"Password": "second-pw"}).to_string()),
    );
    assert!((200..300).contains(&reply.status), "{reply:?}");
    assert_no_secrets(&reply.json(), "password change answer");

    assert_drp_error(&info(server, &Auth::bearer(&token)), 403);
    assert_drp_error(&info(server, &Auth::basic(&name, "first-pw")), 403);
    assert_eq!(info(server, &Auth::basic(&name, "second-pw")).status, 200);
    let refused = server
        .try_ws(&Auth::bearer(&token))
        .err()
        .expect("old token refused on the websocket too");
    assert_drp_error(&refused, 403);
}

#[test]
fn deleting_a_user_invalidates_its_tokens_and_password() {
    let server = Server::shared();
    let name = new_user(server, "doomed-pw");
    let token = server.mint_token(&name, "doomed-pw", 600);
    assert_eq!(info(server, &Auth::bearer(&token)).status, 200);
    assert_eq!(info(server, &Auth::basic(&name, "doomed-pw")).status, 200);

    let reply = server.request(
        "DELETE",
        &format!("/api/v3/users/{name}"),
        &server.admin(),
        None,
    );
    assert!((200..300).contains(&reply.status), "{reply:?}");

    assert_drp_error(&info(server, &Auth::bearer(&token)), 403);
    assert_drp_error(&info(server, &Auth::basic(&name, "doomed-pw")), 403);
}

#[test]
fn user_objects_never_carry_password_hash_or_secret() {
    let server = Server::shared();
    let name = unique("visible");
    let password = "a-password-nobody-may-see";
    let mut client = server.ws(&server.admin());
    client.register(&format!("users.*.{name}"));

    let body = json!({"Name": name, "Roles": ["superuser"], "Password": password});
    let reply = server.request(
        "POST",
        "/api/v3/users",
        &server.admin(),
        Some(&body.to_string()),
    );
    assert!((200..300).contains(&reply.status), "{reply:?}");
    for reply in [
        reply,
        server.get(&format!("/api/v3/users/{name}")),
        server.get("/api/v3/users"),
    ] {
        assert_eq!(reply.status, reply.status.clamp(200, 299), "{reply:?}");
        assert_no_secrets(&reply.json(), "a users answer");
        assert!(
            !reply.body.contains(password),
            "password in clear: {reply:?}"
        );
    }

    let created = client.expect_event();
    assert_eq!(created["Type"], "users", "{created}");
    assert_eq!(created["Action"], "create", "{created}");
    assert_no_secrets(&created, "the users.create event");
    assert!(!created.to_string().contains(password), "{created}");
}

#[test]
fn default_password_is_reported_in_info_and_logged_when_none_is_configured() {
    let server = Server::start_with(Options {
        admin_password: None,
        ..Options::default()
    });
    let reply = info(&server, &Auth::basic(ADMIN, DRP_DEFAULT_PASSWORD));
    assert_eq!(reply.status, 200, "default password works: {reply:?}");
    let mentions_default = |text: &str| {
        let text = text.to_ascii_lowercase();
        text.contains("default") && text.contains("password")
    };
    // A warning is words in some string value, not a field name such as `DefaultPassword`.
    let warns = |reply: &HttpReply| {
        string_values(&reply.json())
            .iter()
            .any(|s| mentions_default(s))
    };
    assert!(
        warns(&reply),
        "info should warn about the default password: {}",
        reply.body
    );
    assert!(
        mentions_default(&server.stderr()),
        "the log should warn about the default password:\n{}",
        server.stderr()
    );

    let configured = info(Server::shared(), &Server::shared().admin());
    assert_eq!(configured.status, 200);
    assert!(
        !warns(&configured),
        "no default-password warning with --admin-password: {}",
        configured.body
    );
    assert_drp_error(
        &info(Server::shared(), &Auth::basic(ADMIN, DRP_DEFAULT_PASSWORD)),
        403,
    );
}

#[test]
fn a_missing_claim_is_a_403_naming_the_principal_the_claim_and_the_object_where_routes_do() {
    let server = Server::shared();
    let name = unique("claimless");
    server.create_user(&name, "claimless-pw", &[]);
    let auth = Auth::basic(&name, "claimless-pw");
    let event = json!({"Type": "t", "Action": "a", "Key": "k"}).to_string();
    // (method, path, body, the claim named, Model, Key)
    let cases = [
        (
            "GET",
            "/api/v3/users".to_owned(),
            None,
            "users:list:*",
            "",
            "",
        ),
        (
            "GET",
            "/api/v3/roles/superuser".to_owned(),
            None,
            "roles:get:superuser",
            "",
            "",
        ),
        (
            "GET",
            "/api/v3/connections".to_owned(),
            None,
            "connections:list:*",
            "",
            "",
        ),
        (
            "POST",
            "/api/v3/events".to_owned(),
            Some(event.as_str()),
            "events:post:t.a.k",
            "",
            "",
        ),
        (
            "DELETE",
            "/api/v3/users/someone".to_owned(),
            None,
            "users:delete:someone",
            "users",
            "someone",
        ),
        (
            "GET",
            "/api/v3/profiles/global".to_owned(),
            None,
            "profiles:get:global",
            "profiles",
            "global",
        ),
        (
            "GET",
            "/api/v3/machines".to_owned(),
            None,
            "machines:list:*",
            "machines",
            "*",
        ),
    ];
    for (method, path, body, claim, model, key) in cases {
        let reply = server.request(method, &path, &auth, body);
        assert_drp_error(&reply, 403);
        let error = reply.json();
        assert_eq!(
            error["Messages"][0],
            format!("user:{name} lacks the claim {claim}"),
            "{method} {path}: {error}"
        );
        assert_eq!(
            (error["Model"].as_str(), error["Key"].as_str()),
            (Some(model), Some(key)),
            "{method} {path}: {error}"
        );
    }
}

#[test]
fn a_token_in_use_loses_at_once_what_its_role_no_longer_grants() {
    let server = Server::shared();
    let role = unique("lister");
    let claims = json!([
        {"Scope": "users", "Action": "list", "Specific": "*"},
        {"Scope": "users", "Action": "token", "Specific": "*"},
    ]);
    server.create_role(&role, claims);
    let name = unique("user");
    server.create_user(&name, "lister-pw", &[&role]);
    let token = Auth::bearer(&server.mint_token(&name, "lister-pw", 600));
    // Used twice, so the second answer is the remembered verification's.
    for _ in 0..2 {
        let reply = server.request("GET", "/api/v3/users", &token, None);
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let narrowed = json!({"Name": role, "Claims": [
        {"Scope": "users", "Action": "token", "Specific": "*"},
    ]});
    let reply = server.request(
        "PUT",
        &format!("/api/v3/roles/{role}"),
        &server.admin(),
        Some(&narrowed.to_string()),
    );
    assert!((200..300).contains(&reply.status), "{reply:?}");
    assert_drp_error(&server.request("GET", "/api/v3/users", &token, None), 403);
}

//! Black-box tests of the object routes (`docs/protocol.md` §7): every route's answers, JSON
//! Patch, params, claims, runner tokens, and the event each change emits.

mod common;

use std::thread;

use common::{Auth, HttpReply, Server, assert_drp_error, unique};
use serde_json::{Value, json};

/// One request as the admin with an optional JSON body.
fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> HttpReply {
    as_auth(server, &server.admin(), method, path, body)
}

fn as_auth(
    server: &Server,
    auth: &Auth,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> HttpReply {
    let body = body.map(|b| b.to_string());
    server.request(method, path, auth, body.as_deref())
}

/// One request with a raw (possibly invalid) body.
fn raw(server: &Server, method: &str, path: &str, body: &str) -> HttpReply {
    server.request(method, path, &server.admin(), Some(body))
}

/// Creates an object of type `ty` that has only a name; asserts 201 and returns it.
fn create(server: &Server, ty: &str, name: &str) -> Value {
    ok(
        &admin(
            server,
            "POST",
            &format!("/api/v3/{ty}"),
            Some(json!({"Name": name})),
        ),
        201,
    )
}

fn ok(reply: &HttpReply, status: u16) -> Value {
    assert_eq!(reply.status, status, "unexpected answer: {reply:?}");
    reply.json()
}

fn new_machine(server: &Server, name: &str) -> String {
    let created = create(server, "machines", name);
    created["Uuid"].as_str().unwrap_or_default().to_owned()
}

/// A user holding one role with these claims; answers its credentials.
fn user_with_claims(server: &Server, claims: Value) -> Auth {
    let role = unique("role");
    let user = unique("user");
    server.create_role(&role, claims);
    server.create_user(&user, "pw-for-tests", &[&role]);
    Auth::basic(&user, "pw-for-tests")
}

fn assert_event(event: &Value, ty: &str, action: &str, key: &str) {
    assert_eq!(
        (
            event["Type"].as_str(),
            event["Action"].as_str(),
            event["Key"].as_str()
        ),
        (Some(ty), Some(action), Some(key)),
        "unexpected event {event}"
    );
}

#[test]
fn a_profile_goes_through_create_get_list_put_patch_and_delete_with_one_event_each() {
    let server = Server::shared();
    let name = unique("profile-");
    let mut watcher = server.ws(&server.admin());
    watcher.register(&format!("profiles.*.{name}"));

    let created = ok(
        &admin(
            server,
            "POST",
            "/api/v3/profiles",
            Some(json!({"Name": name, "Params": {"a": 1}})),
        ),
        201,
    );
    assert_eq!(created["Params"], json!({"a": 1}));
    let event = watcher.expect_event();
    assert_event(&event, "profiles", "create", &name);
    assert_eq!(event["Object"], created);
    assert_eq!(event["Original"], Value::Null);
    assert_eq!(event["Principal"], "user:rocketskates");

    let path = format!("/api/v3/profiles/{name}");
    assert_eq!(ok(&admin(server, "GET", &path, None), 200), created);
    let listed = ok(&admin(server, "GET", "/api/v3/profiles", None), 200);
    assert!(
        listed.as_array().is_some_and(|all| all.contains(&created)),
        "{listed}"
    );

    let replaced = ok(
        &admin(
            server,
            "PUT",
            &path,
            Some(json!({"Name": name, "Description": "put"})),
        ),
        200,
    );
    assert_eq!(replaced["Description"], "put");
    assert_eq!(
        replaced["Params"],
        json!({}),
        "PUT replaces the whole object"
    );
    let event = watcher.expect_event();
    assert_event(&event, "profiles", "update", &name);
    assert_eq!(event["Object"], replaced);
    assert_eq!(event["Original"], created);

    let patch = json!([{"op": "add", "path": "/Params/b", "value": [1, 2]}]);
    let patched = ok(&admin(server, "PATCH", &path, Some(patch)), 200);
    assert_eq!(patched["Params"], json!({"b": [1, 2]}));
    assert_eq!(patched["Description"], "put");
    let event = watcher.expect_event();
    assert_event(&event, "profiles", "update", &name);
    assert_eq!(event["Original"], replaced);

    let deleted = ok(&admin(server, "DELETE", &path, None), 200);
    assert_eq!(deleted, patched);
    let event = watcher.expect_event();
    assert_event(&event, "profiles", "delete", &name);
    assert_eq!(event["Object"], patched);
    assert_drp_error(&admin(server, "GET", &path, None), 404);
}

#[test]
fn every_object_type_is_stored_under_its_own_key() {
    let server = Server::shared();
    for ty in ["params", "profiles"] {
        let name = unique("named-");
        let created = create(server, ty, &name);
        assert_eq!(created["Name"], name);
        ok(
            &admin(server, "GET", &format!("/api/v3/{ty}/{name}"), None),
            200,
        );
    }
    for ty in ["machines", "clusters", "resource_brokers"] {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        let created = ok(
            &admin(
                server,
                "POST",
                &format!("/api/v3/{ty}"),
                Some(json!({"Uuid": uuid.to_uppercase(), "Name": "n"})),
            ),
            201,
        );
        assert_eq!(created["Uuid"], uuid, "UUIDs are stored in canonical form");
        ok(
            &admin(
                server,
                "GET",
                &format!("/api/v3/{ty}/{}", uuid.to_uppercase()),
                None,
            ),
            200,
        );
        let generated = ok(
            &admin(
                server,
                "POST",
                &format!("/api/v3/{ty}"),
                Some(json!({"Name": "n"})),
            ),
            201,
        );
        assert!(
            generated["Uuid"].as_str().is_some_and(|u| u.len() == 36),
            "{generated}"
        );
    }
}

#[test]
fn failures_answer_in_drp_error_shape_with_the_right_status() {
    let server = Server::shared();
    let name = unique("fail-");
    create(server, "profiles", &name);
    let path = format!("/api/v3/profiles/{name}");

    let duplicate = admin(
        server,
        "POST",
        "/api/v3/profiles",
        Some(json!({"Name": name})),
    );
    assert_drp_error(&duplicate, 409);
    assert_eq!(duplicate.json()["Model"], "profiles");
    assert_eq!(duplicate.json()["Key"], name);

    for method in ["GET", "PUT", "PATCH", "DELETE"] {
        let body = match method {
            "PUT" => Some(json!({})),
            "PATCH" => Some(json!([])),
            _ => None,
        };
        assert_drp_error(
            &admin(server, method, "/api/v3/profiles/no-such-profile", body),
            404,
        );
    }
    assert_drp_error(
        &admin(server, "GET", "/api/v3/machines/not-a-uuid", None),
        404,
    );

    assert_drp_error(&raw(server, "POST", "/api/v3/profiles", "{not json"), 400);
    assert_drp_error(&raw(server, "PUT", &path, ""), 400);
    assert_drp_error(&raw(server, "PATCH", &path, "[{"), 400);
    assert_drp_error(
        &raw(server, "PATCH", &path, r#"{"Description":"a merge patch"}"#),
        400,
    );
    assert_drp_error(
        &raw(server, "PATCH", &path, r#"[{"op":"jump","path":"/x"}]"#),
        400,
    );
    assert_drp_error(
        &raw(server, "POST", &format!("{path}/params/p"), "not json"),
        400,
    );

    for invalid in [
        json!({"Name": "has/slash"}),
        json!({"Name": "control\u{1}char"}),
        json!({"Name": "x".repeat(256)}),
        json!({"Name": unique("p"), "Params": "not a map"}),
        json!(["not", "an", "object"]),
        json!({}),
    ] {
        assert_drp_error(
            &admin(server, "POST", "/api/v3/profiles", Some(invalid)),
            422,
        );
    }
    assert_drp_error(
        &admin(
            server,
            "POST",
            "/api/v3/machines",
            Some(json!({"Uuid": "nope", "Name": "m"})),
        ),
        422,
    );
    assert_drp_error(
        &admin(
            server,
            "POST",
            "/api/v3/machines",
            Some(json!({"Uuid": null})),
        ),
        422,
    );
    assert_drp_error(
        &admin(server, "PUT", &path, Some(json!({"Name": "renamed"}))),
        422,
    );
    assert_drp_error(
        &admin(
            server,
            "PATCH",
            &path,
            Some(json!([{"op": "remove", "path": "/Nope"}])),
        ),
        422,
    );

    let wrong_method = admin(server, "PUT", "/api/v3/profiles", Some(json!({})));
    assert_drp_error(&wrong_method, 405);
    assert_drp_error(
        &admin(
            server,
            "POST",
            "/api/v3/profiles/global/params",
            Some(json!({})),
        ),
        405,
    );
    assert_drp_error(
        &as_auth(server, &Auth::None, "GET", "/api/v3/profiles", None),
        401,
    );
    assert_drp_error(
        &as_auth(
            server,
            &Auth::basic("rocketskates", "wrong"),
            "GET",
            "/api/v3/profiles",
            None,
        ),
        403,
    );
}

/// The JSON text of the number after `"name":` in `body`.
fn number_text<'a>(body: &'a str, name: &str) -> &'a str {
    let at = body
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {body}"));
    let rest = &body[at + name.len() + 3..];
    &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
}

#[test]
fn a_large_number_in_a_param_is_stored_exactly_as_given_and_answered() {
    let server = Server::shared();
    let name = unique("numbers");
    create(server, "profiles", &name);
    let given = "555555551555555555555555555555555555555555555555551";
    let patched = raw(
        server,
        "PATCH",
        &format!("/api/v3/profiles/{name}"),
        &format!(r#"[{{"op":"add","path":"/Params/big","value":{given}}}]"#),
    );
    assert_eq!(patched.status, 200, "{patched:?}");
    let read = admin(server, "GET", &format!("/api/v3/profiles/{name}"), None);
    assert_eq!(read.status, 200, "{read:?}");
    let exact = given.parse::<f64>().unwrap();
    for (what, reply) in [("the patch's answer", &patched), ("a later read", &read)] {
        let text = number_text(&reply.body, "big");
        assert_eq!(text.parse::<f64>().unwrap(), exact, "{what}: {text}");
    }
}

#[test]
fn a_patch_whose_test_fails_is_a_conflict_and_changes_nothing() {
    let server = Server::shared();
    let name = unique("patch-");
    let path = format!("/api/v3/params/{name}");
    let created = ok(
        &admin(
            server,
            "POST",
            "/api/v3/params",
            Some(json!({"Name": name, "Description": "one"})),
        ),
        201,
    );
    let mut watcher = server.ws(&server.admin());
    watcher.register(&format!("params.*.{name}"));

    let conflicting = json!([
        {"op": "replace", "path": "/Description", "value": "two"},
        {"op": "test", "path": "/Description", "value": "three"},
    ]);
    assert_drp_error(&admin(server, "PATCH", &path, Some(conflicting)), 409);
    assert_eq!(ok(&admin(server, "GET", &path, None), 200), created);

    let guarded = json!([
        {"op": "test", "path": "/Description", "value": "one"},
        {"op": "replace", "path": "/Description", "value": "two"},
        {"op": "copy", "from": "/Description", "path": "/Meta/copied"},
    ]);
    let patched = ok(&admin(server, "PATCH", &path, Some(guarded)), 200);
    assert_eq!(patched["Meta"], json!({"copied": "two"}));
    // The failed patch emitted nothing: the first event is the successful one.
    let event = watcher.expect_event();
    assert_event(&event, "params", "update", &name);
    assert_eq!(event["Original"]["Description"], "one");
    assert_eq!(event["Object"]["Description"], "two");
}

#[test]
fn profile_and_machine_params_are_set_read_and_removed_with_save_events() {
    let server = Server::shared();
    let uuid = new_machine(server, "params-machine");
    let mut watcher = server.ws(&server.admin());
    watcher.register(&format!("machines.*.{uuid}"));
    let base = format!("/api/v3/machines/{uuid}");

    let value = json!({"nested": [1, "two"]});
    assert_eq!(
        ok(
            &admin(
                server,
                "POST",
                &format!("{base}/params/area%2Fname"),
                Some(value.clone())
            ),
            200
        ),
        value
    );
    let event = watcher.expect_event();
    assert_event(&event, "machines", "save", &uuid);
    assert_eq!(event["Object"]["Params"]["area/name"], value);
    assert_eq!(event["Original"]["Params"], json!({}));

    assert_eq!(
        ok(&admin(server, "GET", &format!("{base}/params"), None), 200),
        json!({"area/name": value})
    );
    assert_eq!(
        ok(
            &admin(server, "GET", &format!("{base}/params/area%2Fname"), None),
            200
        ),
        value
    );
    assert_drp_error(
        &admin(server, "GET", &format!("{base}/params/absent"), None),
        404,
    );

    assert_eq!(
        ok(
            &admin(
                server,
                "DELETE",
                &format!("{base}/params/area%2Fname"),
                None
            ),
            200
        ),
        value
    );
    let event = watcher.expect_event();
    assert_event(&event, "machines", "save", &uuid);
    assert_eq!(event["Object"]["Params"], json!({}));
    assert_eq!(event["Original"]["Params"]["area/name"], value);
    assert_drp_error(
        &admin(
            server,
            "DELETE",
            &format!("{base}/params/area%2Fname"),
            None,
        ),
        404,
    );
    assert_drp_error(
        &admin(server, "GET", "/api/v3/profiles/no-such/params", None),
        404,
    );
    assert_drp_error(
        &admin(
            server,
            "POST",
            "/api/v3/profiles/no-such/params/p",
            Some(json!(1)),
        ),
        404,
    );
}

#[test]
fn the_global_profile_exists_from_first_start_and_cannot_be_deleted() {
    let server = Server::start();
    let global = ok(&admin(&server, "GET", "/api/v3/profiles/global", None), 200);
    assert_eq!(global["Name"], "global");
    assert_eq!(global["Params"], json!({}));
    assert_drp_error(
        &admin(&server, "DELETE", "/api/v3/profiles/global", None),
        422,
    );
}

#[test]
fn list_filters_by_field_equality_and_pages_with_offset_and_limit() {
    let server = Server::shared();
    let tag = unique("tag-");
    for index in 0..5 {
        let body =
            json!({"Name": format!("{tag}-{index}"), "Description": tag, "Secure": index % 2 == 0});
        ok(&admin(server, "POST", "/api/v3/params", Some(body)), 201);
    }
    let names = |reply: &HttpReply| -> Vec<String> {
        ok(reply, 200)
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|p| p["Name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all = admin(
        server,
        "GET",
        &format!("/api/v3/params?Description={tag}"),
        None,
    );
    assert_eq!(names(&all).len(), 5);
    assert_eq!(all.header("X-DRP-LIST-TOTAL-COUNT"), Some("5"));
    let secure = admin(
        server,
        "GET",
        &format!("/api/v3/params?Description={tag}&Secure=true"),
        None,
    );
    assert_eq!(
        names(&secure),
        vec![format!("{tag}-0"), format!("{tag}-2"), format!("{tag}-4")]
    );
    let page = admin(
        server,
        "GET",
        &format!("/api/v3/params?Description={tag}&offset=1&limit=2"),
        None,
    );
    assert_eq!(names(&page), vec![format!("{tag}-1"), format!("{tag}-2")]);
    assert_eq!(page.header("X-DRP-LIST-COUNT"), Some("2"));
    assert_eq!(page.header("X-DRP-LIST-TOTAL-COUNT"), Some("5"));
    let one = admin(
        server,
        "GET",
        &format!("/api/v3/params?Name={tag}-3&slim=Params"),
        None,
    );
    assert_eq!(names(&one), vec![format!("{tag}-3")]);
    assert_drp_error(
        &admin(server, "GET", "/api/v3/params?limit=many", None),
        400,
    );
    assert_drp_error(&admin(server, "GET", "/api/v3/params?offset=-2", None), 400);
}

#[test]
fn a_user_with_only_machines_get_cannot_change_machines_and_sees_only_what_it_may() {
    let server = Server::shared();
    let first = new_machine(server, "visible");
    let second = new_machine(server, "also-visible");
    let reader = user_with_claims(
        server,
        json!([{"Scope": "machines", "Action": "get", "Specific": "*"}]),
    );

    let listed = ok(
        &as_auth(server, &reader, "GET", "/api/v3/machines", None),
        200,
    );
    let uuids: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["Uuid"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        uuids.contains(&first.as_str()) && uuids.contains(&second.as_str()),
        "{listed}"
    );
    ok(
        &as_auth(
            server,
            &reader,
            "GET",
            &format!("/api/v3/machines/{first}"),
            None,
        ),
        200,
    );
    ok(
        &as_auth(
            server,
            &reader,
            "GET",
            &format!("/api/v3/machines/{first}/params"),
            None,
        ),
        200,
    );

    let path = format!("/api/v3/machines/{first}");
    let denied = [
        (
            "POST",
            "/api/v3/machines".to_owned(),
            Some(json!({"Name": "nope"})),
            "machines:create:",
        ),
        (
            "PUT",
            path.clone(),
            Some(json!({"Name": "renamed"})),
            "machines:update:",
        ),
        ("PATCH", path.clone(), Some(json!([])), "machines:update:"),
        ("DELETE", path.clone(), None, "machines:delete:"),
        (
            "POST",
            format!("{path}/params/p"),
            Some(json!(1)),
            "machines:update:",
        ),
        (
            "DELETE",
            format!("{path}/params/p"),
            None,
            "machines:update:",
        ),
        ("GET", format!("{path}/token"), None, "machines:token:"),
        (
            "GET",
            "/api/v3/profiles".to_owned(),
            None,
            "profiles:list:*",
        ),
        (
            "GET",
            "/api/v3/profiles/global".to_owned(),
            None,
            "profiles:get:global",
        ),
    ];
    for (method, path, body, claim) in denied {
        let reply = as_auth(server, &reader, method, &path, body);
        assert_drp_error(&reply, 403);
        assert!(
            reply.body.contains(claim),
            "{method} {path} should name {claim}: {}",
            reply.body
        );
    }
    let unchanged = ok(&admin(server, "GET", &path, None), 200);
    assert_eq!(unchanged["Name"], "visible");

    // Its websocket sees machine events, and no profile events.
    let mut watcher = server.ws(&reader);
    // Every profile event, but only this test's machine: other tests change machines too.
    watcher.register("profiles.*.*");
    watcher.register(&format!("machines.*.{first}"));
    let profile = unique("hidden-");
    create(server, "profiles", &profile);
    ok(
        &admin(
            server,
            "POST",
            &format!("{path}/params/seen"),
            Some(json!(true)),
        ),
        200,
    );
    let event = watcher.expect_event();
    assert_event(&event, "machines", "save", &first);

    // A claim for one machine lists and gets only that machine.
    let narrow = user_with_claims(
        server,
        json!([{"Scope": "machines", "Action": "get", "Specific": second}]),
    );
    let listed = ok(
        &as_auth(server, &narrow, "GET", "/api/v3/machines", None),
        200,
    );
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["Uuid"], second);
    assert_drp_error(&as_auth(server, &narrow, "GET", &path, None), 403);
}

#[test]
fn a_runner_token_acts_for_its_own_machine_only() {
    let server = Server::shared();
    let own = new_machine(server, "runner-own");
    let other = new_machine(server, "runner-other");
    let minted = ok(
        &admin(
            server,
            "GET",
            &format!("/api/v3/machines/{own}/token?ttl=120"),
            None,
        ),
        200,
    );
    assert_eq!(minted["Info"]["Principal"], format!("runner:{own}"));
    let token = minted["Token"].as_str().unwrap_or_default().to_owned();
    let runner = Auth::bearer(&token);

    ok(
        &as_auth(
            server,
            &runner,
            "GET",
            &format!("/api/v3/machines/{own}"),
            None,
        ),
        200,
    );
    let mut watcher = server.ws(&runner);
    watcher.register("machines.*.*");
    ok(
        &as_auth(
            server,
            &runner,
            "POST",
            &format!("/api/v3/machines/{own}/params/state"),
            Some(json!("booted")),
        ),
        200,
    );
    let event = watcher.expect_event();
    assert_event(&event, "machines", "save", &own);
    assert_eq!(event["Principal"], format!("runner:{own}"));

    ok(
        &admin(
            server,
            "POST",
            &format!("/api/v3/machines/{other}/params/x"),
            Some(json!(1)),
        ),
        200,
    );
    ok(
        &admin(
            server,
            "POST",
            &format!("/api/v3/machines/{own}/params/y"),
            Some(json!(2)),
        ),
        200,
    );
    let event = watcher.expect_event();
    assert_eq!(
        event["Key"], own,
        "the other machine's event must not reach the runner"
    );

    let seq = server.publish_as(
        &runner,
        json!({"Type": "machines", "Action": "log", "Key": own}),
    );
    assert!(seq > 0);
    for (method, path) in [
        ("GET", format!("/api/v3/machines/{other}")),
        ("DELETE", format!("/api/v3/machines/{own}")),
        ("GET", "/api/v3/profiles/global".to_owned()),
        ("GET", format!("/api/v3/machines/{own}/token")),
    ] {
        assert_drp_error(&as_auth(server, &runner, method, &path, None), 403);
    }

    let missing = "7d1e6a0c-5b7f-4d3e-9c2a-000000000000";
    assert_drp_error(
        &admin(
            server,
            "GET",
            &format!("/api/v3/machines/{missing}/token"),
            None,
        ),
        404,
    );
    assert_drp_error(
        &admin(server, "GET", "/api/v3/machines/not-a-uuid/token", None),
        404,
    );
    assert_drp_error(
        &admin(
            server,
            "GET",
            &format!("/api/v3/machines/{own}/token?ttl=soon"),
            None,
        ),
        400,
    );
    assert_drp_error(
        &admin(
            server,
            "GET",
            &format!("/api/v3/machines/{own}/token?ttl=0"),
            None,
        ),
        422,
    );
}

#[test]
fn concurrent_param_changes_to_one_profile_are_all_kept() {
    let server = Server::shared();
    let name = unique("busy-");
    create(server, "profiles", &name);
    let writers: Vec<_> = (0..16)
        .map(|index| {
            let name = name.clone();
            thread::spawn(move || {
                let server = Server::shared();
                let path = format!("/api/v3/profiles/{name}/params/p{index}");
                ok(&admin(server, "POST", &path, Some(json!(index))), 200);
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap_or_else(|_| panic!("a writer failed"));
    }
    let params = ok(
        &admin(
            server,
            "GET",
            &format!("/api/v3/profiles/{name}/params"),
            None,
        ),
        200,
    );
    assert_eq!(params.as_object().map(|p| p.len()), Some(16), "{params}");
}

#[test]
fn users_never_show_their_password_hash_or_secret() {
    let server = Server::shared();
    let name = unique("secretive-");
    let mut watcher = server.ws(&server.admin());
    watcher.register(&format!("users.*.{name}"));
    server.create_user(&name, "a-password", &[]);
    let event = watcher.expect_event();
    let answers = [
        admin(server, "GET", "/api/v3/users", None).body,
        admin(server, "GET", &format!("/api/v3/users/{name}"), None).body,
        event.to_string(),
    ];
    for text in answers {
        assert!(
            !text.contains("PasswordHash") && !text.contains("Secret") && !text.contains("argon2"),
            "{text}"
        );
    }
}

#[test]
fn users_and_roles_change_by_put_patch_and_delete_and_take_effect_at_once() {
    let server = Server::shared();
    let role = unique("editor-role-");
    let user = unique("editor-");
    server.create_role(
        &role,
        json!([{"Scope": "profiles", "Action": "get", "Specific": "*"}]),
    );
    server.create_user(&user, "editor-pw", &[]);
    let editor = Auth::basic(&user, "editor-pw");
    assert_drp_error(
        &as_auth(server, &editor, "GET", "/api/v3/profiles/global", None),
        403,
    );
    let mut watcher = server.ws(&server.admin());
    watcher.register(&format!("users.*.{user}"));
    watcher.register(&format!("roles.*.{role}"));

    let user_path = format!("/api/v3/users/{user}");
    let updated = ok(
        &admin(
            server,
            "PUT",
            &user_path,
            Some(json!({"Name": user, "Roles": [role]})),
        ),
        200,
    );
    assert_eq!(updated, json!({"Name": user, "Roles": [role]}));
    let event = watcher.expect_event();
    assert_event(&event, "users", "update", &user);
    assert_eq!(event["Original"]["Roles"], json!([]));
    ok(
        &as_auth(server, &editor, "GET", "/api/v3/profiles/global", None),
        200,
    );

    let role_path = format!("/api/v3/roles/{role}");
    let narrowed = json!([{"op": "replace", "path": "/Claims/0/Specific", "value": "other"}]);
    let changed = ok(&admin(server, "PATCH", &role_path, Some(narrowed)), 200);
    assert_eq!(changed["Claims"][0]["Specific"], "other");
    let event = watcher.expect_event();
    assert_event(&event, "roles", "update", &role);
    assert_eq!(event["Original"]["Claims"][0]["Specific"], "*");
    assert_drp_error(
        &as_auth(server, &editor, "GET", "/api/v3/profiles/global", None),
        403,
    );

    assert_drp_error(&admin(server, "DELETE", &role_path, None), 409);
    let removed = ok(
        &admin(
            server,
            "PATCH",
            &user_path,
            Some(json!([{"op": "remove", "path": "/Roles/0"}])),
        ),
        200,
    );
    assert_eq!(removed["Roles"], json!([]));
    assert_event(&watcher.expect_event(), "users", "update", &user);
    let deleted = ok(&admin(server, "DELETE", &role_path, None), 200);
    assert_eq!(deleted["Name"], role);
    assert_event(&watcher.expect_event(), "roles", "delete", &role);
    assert_drp_error(&admin(server, "GET", &role_path, None), 404);

    for (method, path, body, status) in [
        ("PUT", user_path.clone(), json!({"Password": "new"}), 422),
        (
            "PUT",
            user_path.clone(),
            json!({"Roles": ["no-such-role"]}),
            422,
        ),
        (
            "PUT",
            user_path.clone(),
            json!({"Name": "someone-else"}),
            422,
        ),
        (
            "PUT",
            "/api/v3/users/no-such-user".to_owned(),
            json!({}),
            404,
        ),
        (
            "PATCH",
            user_path.clone(),
            json!([{"op": "test", "path": "/Roles", "value": ["x"]}]),
            409,
        ),
        ("PATCH", user_path.clone(), json!({"Roles": []}), 400),
        (
            "PUT",
            "/api/v3/roles/superuser".to_owned(),
            json!({"Claims": []}),
            422,
        ),
        (
            "PUT",
            "/api/v3/roles/no-such-role".to_owned(),
            json!({"Claims": []}),
            404,
        ),
        (
            "PUT",
            "/api/v3/roles/superuser".to_owned(),
            json!({"Claims": "all"}),
            422,
        ),
    ] {
        assert_drp_error(&admin(server, method, &path, Some(body)), status);
    }
    assert_drp_error(
        &admin(server, "DELETE", "/api/v3/roles/superuser", None),
        422,
    );
    assert_drp_error(&raw(server, "PUT", &user_path, "{"), 400);
    let reader = user_with_claims(
        server,
        json!([{"Scope": "users,roles", "Action": "get", "Specific": "*"}]),
    );
    let denied = as_auth(
        server,
        &reader,
        "PUT",
        &user_path,
        Some(json!({"Roles": []})),
    );
    assert_drp_error(&denied, 403);
    assert!(
        denied.body.contains(&format!("users:update:{user}")),
        "{}",
        denied.body
    );
    assert_drp_error(
        &as_auth(server, &reader, "DELETE", "/api/v3/roles/superuser", None),
        403,
    );
}

#[test]
fn creating_and_deleting_users_and_roles_and_changing_a_password_are_in_the_log_when_answered() {
    let server = Server::shared();
    let role = unique("logged-role-");
    let user = unique("logged-user-");
    let since = server.info()["LastSeq"].as_u64().expect("LastSeq");
    let claims = json!([{"Scope": "profiles", "Action": "get", "Specific": "*"}]);
    let steps = [
        (
            "POST",
            "/api/v3/roles".to_owned(),
            Some(json!({"Name": role, "Claims": claims})),
            201,
            ("roles", "create", role.clone()),
        ),
        (
            "POST",
            "/api/v3/users".to_owned(),
            Some(json!({"Name": user, "Roles": [role], "Password": "first-pw"})),
            201,
            ("users", "create", user.clone()),
        ),
        (
            "PUT",
            format!("/api/v3/users/{user}/password"),
            Some(json!({"Password": "second-pw"})),
            200,
            ("users", "update", user.clone()),
        ),
        (
            "DELETE",
            format!("/api/v3/users/{user}"),
            None,
            200,
            ("users", "delete", user.clone()),
        ),
    ];
    let mut expected = Vec::new();
    for (method, path, body, status, (ty, action, key)) in steps {
        let answer = ok(&admin(server, method, &path, body), status);
        assert_eq!(answer["Name"], key.as_str(), "{answer}");
        expected.push((ty, action, key));
        // No waiting: the answer comes only once its event is durable in the log.
        let logged: Vec<(String, String, String)> = server
            .read_log(&server.admin(), since, None)
            .iter()
            .filter(|event| event["Key"] == role.as_str() || event["Key"] == user.as_str())
            .map(|event| {
                let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
                (field("Type"), field("Action"), field("Key"))
            })
            .collect();
        let wanted: Vec<(String, String, String)> = expected
            .iter()
            .map(|(ty, action, key)| (ty.to_string(), action.to_string(), key.clone()))
            .collect();
        assert_eq!(logged, wanted, "after {method} {path}");
    }
    let refused = admin(
        server,
        "POST",
        "/api/v3/users",
        Some(json!({"Name": user, "Roles": ["no-such-role"], "Password": "third-pw"})),
    );
    assert!(refused.status >= 400, "{refused:?}");
    let after = server.read_log(&server.admin(), since, Some(&format!("users.*.{user}")));
    assert_eq!(
        after.len(),
        3,
        "a refused change publishes nothing: {after:?}"
    );
}

//! Creating, changing and deleting users and roles, which [`crate::auth::AuthStore`] keeps: what
//! a user has to change is its `Roles` (its password has its own route), what a role has is its
//! `Claims`. Each change runs on the log thread together with its event, like every object's, so
//! an answered change always has its event; a password is hashed on a blocking thread first.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use serde_json::Value;

use crate::api::Request;
use crate::auth::{AuthError, AuthStore, HashedPassword, Identity, NewUser, Role};
use crate::core::Core;
use crate::objects::ObjectError;
use crate::objects::store::apply_patch;
use crate::wire::event::Event;
use crate::wire::http::{ApiError, Method, Response};

/// A failed account change: HTTP status and message.
type Failure = (u16, String);

/// What a request asks to do to a user or role, decoded before it reaches the log thread.
enum Change {
    Replace(Value),
    Patch(json_patch::Patch),
    Delete,
}

/// `POST /api/v3/users`: creates a user.
pub async fn create_user(core: &Rc<Core>, request: &Request, identity: &Identity) -> Reply {
    let new: NewUser = body(request, "users", "", "a user")?;
    require(identity, "users", "create", &new.name)?;
    let name = new.name.clone();
    let password = match new.password {
        Some(password) => Some(hash(&name, password).await?),
        None => None,
    };
    let principal = identity.principal.clone();
    let roles = new.roles;
    apply(core, 201, "users", &name.clone(), move |store| {
        let user = store
            .create_user_hashed(name, roles, password)
            .map_err(auth_failure)?;
        let event = Event::new("users", "create", &user.name, &principal).with_object(&user);
        Ok((serde_json::to_value(&user).unwrap_or_default(), event))
    })
    .await
}

/// `DELETE /api/v3/users/{name}`.
pub async fn delete_user(core: &Rc<Core>, name: String, identity: &Identity) -> Reply {
    require(identity, "users", "delete", &name)?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "users", &name, move |store| {
        let user = store.delete_user(&at).map_err(auth_failure)?;
        let event = Event::new("users", "delete", &at, &principal).with_object(&user);
        Ok((serde_json::to_value(&user).unwrap_or_default(), event))
    })
    .await
}

/// `PUT /api/v3/users/{name}/password`: a user may set its own, others need the claim.
pub async fn set_password(
    core: &Rc<Core>,
    request: &Request,
    name: String,
    identity: &Identity,
) -> Reply {
    if identity.user.as_deref() != Some(name.as_str()) {
        require(identity, "users", "password", &name)?;
    }
    #[derive(serde::Deserialize)]
    struct Password {
        #[serde(
            rename = "Password",
            default,
            deserialize_with = "crate::auth::null_as_empty"
        )]
        password: String,
    }
    let body: Password = body(request, "users", &name, "{\"Password\":\"…\"}")?;
    let password = hash(&name, body.password).await?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "users", &name, move |store| {
        let user = store
            .set_password_hashed(&at, password)
            .map_err(auth_failure)?;
        let event = Event::new("users", "update", &at, &principal).with_object(&user);
        Ok((serde_json::to_value(&user).unwrap_or_default(), event))
    })
    .await
}

/// `POST /api/v3/roles`: creates a role.
pub async fn create_role(core: &Rc<Core>, request: &Request, identity: &Identity) -> Reply {
    let role: Role = body(request, "roles", "", "a role")?;
    require(identity, "roles", "create", &role.name)?;
    let principal = identity.principal.clone();
    let name = role.name.clone();
    apply(core, 201, "roles", &name, move |store| {
        let role = store.create_role(role).map_err(auth_failure)?;
        let event = Event::new("roles", "create", &role.name, &principal).with_object(&role);
        Ok((serde_json::to_value(&role).unwrap_or_default(), event))
    })
    .await
}

/// The request body as `T`, or a 400 that says it is not `what`.
fn body<T: serde::de::DeserializeOwned>(
    request: &Request,
    model: &str,
    key: &str,
    what: &str,
) -> Result<T, Response> {
    serde_json::from_slice(&request.body).map_err(|e| {
        failure(
            model,
            key,
            (400, format!("the body is not valid JSON for {what}: {e}")),
        )
    })
}

/// Checks and hashes a new password on a blocking thread (argon2id: tens of milliseconds).
async fn hash(name: &str, password: String) -> Result<HashedPassword, Response> {
    match monoio::spawn_blocking(move || AuthStore::hash_new_password(&password)).await {
        Ok(Ok(hashed)) => Ok(hashed),
        Ok(Err(error)) => Err(failure("users", name, auth_failure(error))),
        Err(_) => Err(failure(
            "users",
            name,
            (500, "the password could not be hashed".into()),
        )),
    }
}

/// A route's answer: the response, or the error response.
type Reply = Result<Response, Response>;

/// `PUT|PATCH /api/v3/users/{name}`: replaces the user's roles.
pub async fn user(
    core: &Rc<Core>,
    request: &Request,
    name: String,
    method: Method,
    identity: &Identity,
) -> Reply {
    let change = decode(request, &method, "users", &name)?;
    require(identity, "users", "update", &name)?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "users", &name, move |store| {
        let current = store.get_user(&at).map_err(auth_failure)?;
        let wanted = match change {
            Change::Replace(body) => body,
            Change::Patch(patch) => patched(&current, &patch)?,
            Change::Delete => return Err((405, "users are deleted by DELETE on the user".into())),
        };
        let roles = user_roles(&wanted, &at)?;
        let (before, after) = store.set_roles(&at, roles).map_err(auth_failure)?;
        let event = Event::new("users", "update", &at, &principal)
            .with_object(&after)
            .with_original(&before);
        Ok((serde_json::to_value(&after).unwrap_or_default(), event))
    })
    .await
}

/// `PUT|PATCH|DELETE /api/v3/roles/{name}`: redefines or deletes a role.
pub async fn role(
    core: &Rc<Core>,
    request: &Request,
    name: String,
    method: Method,
    identity: &Identity,
) -> Reply {
    let change = decode(request, &method, "roles", &name)?;
    let action = if matches!(change, Change::Delete) {
        "delete"
    } else {
        "update"
    };
    require(identity, "roles", action, &name)?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "roles", &name, move |store| {
        let wanted = match change {
            Change::Delete => {
                let removed = store.delete_role(&at).map_err(auth_failure)?;
                let event = Event::new("roles", "delete", &at, &principal).with_object(&removed);
                return Ok((serde_json::to_value(&removed).unwrap_or_default(), event));
            }
            Change::Replace(body) => body,
            Change::Patch(patch) => patched(&store.get_role(&at).map_err(auth_failure)?, &patch)?,
        };
        let role = role_of(wanted, &at)?;
        let (before, after) = store.replace_role(role).map_err(auth_failure)?;
        let event = Event::new("roles", "update", &at, &principal)
            .with_object(&after)
            .with_original(&before);
        Ok((serde_json::to_value(&after).unwrap_or_default(), event))
    })
    .await
}

fn decode(request: &Request, method: &Method, model: &str, key: &str) -> Result<Change, Response> {
    if *method == Method::Delete {
        return Ok(Change::Delete);
    }
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| {
        failure(
            model,
            key,
            (400, format!("the body is not valid JSON: {e}")),
        )
    })?;
    if *method == Method::Put {
        return Ok(Change::Replace(body));
    }
    serde_json::from_value(body)
        .map(Change::Patch)
        .map_err(|e| {
            failure(
                model,
                key,
                (400, format!("the body is not a JSON Patch (RFC 6902): {e}")),
            )
        })
}

/// `current` as JSON with `patch` applied.
fn patched<T: serde::Serialize>(current: &T, patch: &json_patch::Patch) -> Result<Value, Failure> {
    let document = serde_json::to_value(current).unwrap_or_default();
    apply_patch(&document, &patch.0).map_err(|e| (e.status(), e.to_string()))
}

/// The roles a user body asks for; its `Name`, when given, must be the user's.
fn user_roles(body: &Value, name: &str) -> Result<Vec<String>, Failure> {
    let invalid = |message: String| (422, message);
    let Some(fields) = body.as_object() else {
        return Err(invalid("a user must be a JSON object".into()));
    };
    same_name(fields.get("Name"), name)?;
    if fields.contains_key("Password") {
        return Err(invalid(format!(
            "a password is changed with PUT /api/v3/users/{name}/password, not here"
        )));
    }
    match fields.get("Roles") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(roles)) => roles
            .iter()
            .map(|role| role.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("Roles must be a list of role names".into())),
        Some(_) => Err(invalid("Roles must be a list of role names".into())),
    }
}

/// The role a role body describes; its `Name`, when given, must be the role's.
fn role_of(mut body: Value, name: &str) -> Result<Role, Failure> {
    let Some(fields) = body.as_object_mut() else {
        return Err((422, "a role must be a JSON object".into()));
    };
    same_name(fields.get("Name"), name)?;
    fields.insert("Name".into(), Value::String(name.to_owned()));
    serde_json::from_value(body).map_err(|e| {
        (
            422,
            format!(
                "a role is {{\"Name\",\"Claims\":[{{\"Scope\",\"Action\",\"Specific\"}}]}}: {e}"
            ),
        )
    })
}

fn same_name(given: Option<&Value>, name: &str) -> Result<(), Failure> {
    match given {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(given)) if given == name => Ok(()),
        Some(other) => Err((
            422,
            format!(
                "the body's Name {other} differs from {name:?} in the path; a name cannot change"
            ),
        )),
    }
}

fn auth_failure(error: AuthError) -> Failure {
    (error.status(), error.to_string())
}

fn failure(model: &str, key: &str, (status, message): Failure) -> Response {
    Response::error(
        ApiError::new(status, message)
            .with_model(model)
            .with_key(key),
    )
}

fn require(identity: &Identity, scope: &str, action: &str, key: &str) -> Result<(), Response> {
    if identity.claims.allows(scope, action, key) {
        return Ok(());
    }
    let message = format!(
        "{} lacks the claim {scope}:{action}:{key}",
        identity.principal
    );
    Err(failure(scope, key, (403, message)))
}

/// Runs a change on the log thread and publishes its event; answers once the event is durable.
async fn apply(
    core: &Core,
    status: u16,
    model: &'static str,
    key: &str,
    change: impl FnOnce(&AuthStore) -> Result<(Value, Event), Failure> + Send + 'static,
) -> Reply {
    let store = core.shared.auth.clone();
    let applied = core
        .shared
        .publisher
        .apply(move || {
            // A panic here would take down the log thread and with it every publisher.
            match std::panic::catch_unwind(AssertUnwindSafe(|| change(&store))) {
                Ok(Ok((answer, event))) => (vec![event], Ok(answer)),
                Ok(Err(failure)) => (Vec::new(), Err(failure)),
                Err(_) => (
                    Vec::new(),
                    Err((
                        500,
                        "the change failed unexpectedly; see the server log".into(),
                    )),
                ),
            }
        })
        .await;
    match applied {
        Ok((Ok(answer), _)) => Ok(Response::json(status, &answer)),
        Ok((Err(refused), _)) => Err(failure(model, key, refused)),
        Err(error) => Err(failure(
            model,
            key,
            (
                ObjectError::Unavailable(String::new()).status(),
                error.to_string(),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_bodies_give_roles_and_keep_the_name_and_password_out() {
        assert_eq!(
            user_roles(&json!({"Roles": ["a", "b"]}), "bob"),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(user_roles(&json!({"Name": "bob"}), "bob"), Ok(vec![]));
        for bad in [
            json!({"Name": "alice", "Roles": []}),
            json!({"Roles": "admin"}),
            json!({"Roles": [1]}),
            json!({"Password": "x"}),
            json!([]),
        ] {
            assert_eq!(
                user_roles(&bad, "bob").map_err(|(status, _)| status),
                Err(422),
                "{bad}"
            );
        }
    }

    #[test]
    fn role_bodies_take_the_name_from_the_path() {
        let role = role_of(
            json!({"Claims": [{"Scope": "machines", "Action": "get", "Specific": "*"}]}),
            "viewer",
        );
        assert_eq!(
            role.map(|r| (r.name, r.claims.len())),
            Ok(("viewer".to_owned(), 1))
        );
        for bad in [
            json!({"Name": "other"}),
            json!({"Claims": "all"}),
            json!("role"),
        ] {
            assert_eq!(
                role_of(bad.clone(), "viewer")
                    .map_err(|(status, _)| status)
                    .map(|_| ()),
                Err(422),
                "{bad}"
            );
        }
    }
}

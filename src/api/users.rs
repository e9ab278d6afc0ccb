//! Users, roles and their tokens (`docs/protocol.md` §2 and §5), which [`crate::auth::AuthStore`]
//! keeps: reading them, creating, changing and deleting them, setting a password and minting a
//! token. What a user has to change is its `Roles` (its password has its own route), what a role
//! has is its `Claims`. Each change runs on the log thread together with its event, like every
//! object's, so an answered change always has its event; a password is hashed on a blocking
//! thread first.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::error::{About, ApiError};
use crate::api::objects::{OnCore, written_failure};
use crate::api::request::Request;
use crate::auth::{AccountWrite, AuthStore, HashedPassword, Identity, NewUser, Role};
use crate::cluster::write::{Plan, Planned, Target, write as cluster_write};
use crate::core::Core;
use crate::objects::store::apply_patch;
use crate::wire::event::Event;
use crate::wire::http::{Method, Response};

/// Default lifetime of a minted token.
const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(600);

/// A user, role or token route; names are as they appear in the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/api/v3/users`: list (GET) and create (POST).
    Users,
    /// `/api/v3/users/{name}`: get, replace, patch, delete.
    User(String),
    /// `/api/v3/users/{name}/password`: set the password.
    UserPassword(String),
    /// `/api/v3/users/{name}/token`: mint a token.
    UserToken(String),
    /// `/api/v3/roles`: list (GET) and create (POST).
    Roles,
    /// `/api/v3/roles/{name}`: get, replace, patch, delete.
    Role(String),
}

impl Route {
    /// The user or role route of a path's segments, if it is one.
    pub(crate) fn parse(segments: &[&str]) -> Option<Route> {
        Some(match segments {
            ["api", "v3", "users"] => Route::Users,
            ["api", "v3", "users", name] => Route::User((*name).to_owned()),
            ["api", "v3", "users", name, "password"] => Route::UserPassword((*name).to_owned()),
            ["api", "v3", "users", name, "token"] => Route::UserToken((*name).to_owned()),
            ["api", "v3", "roles"] => Route::Roles,
            ["api", "v3", "roles", name] => Route::Role((*name).to_owned()),
            _ => return None,
        })
    }

    /// The methods the route allows (HEAD is answered as GET).
    pub(crate) fn methods(&self) -> &'static [Method] {
        match self {
            Route::UserToken(_) => &[Method::Get],
            Route::Users | Route::Roles => &[Method::Get, Method::Post],
            Route::User(_) | Route::Role(_) => {
                &[Method::Get, Method::Put, Method::Patch, Method::Delete]
            }
            Route::UserPassword(_) => &[Method::Put],
        }
    }

    /// The route's template, for metrics labels (no client-controlled values).
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Route::Users => "/api/v3/users",
            Route::User(_) => "/api/v3/users/{name}",
            Route::UserPassword(_) => "/api/v3/users/{name}/password",
            Route::UserToken(_) => "/api/v3/users/{name}/token",
            Route::Roles => "/api/v3/roles",
            Route::Role(_) => "/api/v3/roles/{name}",
        }
    }
}

/// Answers one user or role request; `method` is already one of [`Route::methods`].
pub(crate) async fn handle(
    core: &Rc<Core>,
    request: &Request,
    route: Route,
    method: Method,
    identity: &Identity,
) -> Reply {
    let store = &core.shared.auth;
    match (route, method) {
        (Route::Users, Method::Get) => {
            identity.require("users", "list", "*")?;
            Ok(Response::json(200, &store.list_users()))
        }
        (Route::Users, _) => create_user(core, request, identity).await,
        (Route::User(name), Method::Get) => {
            identity.require("users", "get", &name)?;
            Ok(Response::json(200, &store.get_user(&name)?))
        }
        (Route::User(name), Method::Delete) => delete_user(core, name, identity).await,
        (Route::User(name), method) => user(core, request, name, method, identity).await,
        (Route::UserPassword(name), _) => set_password(core, request, name, identity).await,
        (Route::UserToken(name), _) => token(core, request, name, identity),
        (Route::Roles, Method::Get) => {
            identity.require("roles", "list", "*")?;
            Ok(Response::json(200, &store.list_roles()))
        }
        (Route::Roles, _) => create_role(core, request, identity).await,
        (Route::Role(name), Method::Get) => {
            identity.require("roles", "get", &name)?;
            Ok(Response::json(200, &store.get_role(&name)?))
        }
        (Route::Role(name), method) => role(core, request, name, method, identity).await,
    }
}

/// `GET /api/v3/users/{name}/token?ttl=SECONDS`: a user may mint its own, others need the claim.
fn token(core: &Core, request: &Request, name: String, identity: &Identity) -> Reply {
    if identity.user.as_deref() != Some(name.as_str()) {
        identity.require("users", "token", &name)?;
    }
    let ttl =
        match request.head.query("ttl") {
            None => TOKEN_TTL_DEFAULT,
            Some(ttl) => Duration::from_secs(ttl.parse::<u64>().map_err(|_| {
                ApiError::new(400, format!("ttl {ttl:?} is not a number of seconds"))
            })?),
        };
    let token = core.shared.auth.mint_token(&name, ttl)?;
    let answer = crate::api::info::token_answer(&request.server_facts(core), &token);
    Ok(Response::json(200, &answer))
}

/// What a request asks to do to a user or role, decoded before it reaches the log thread.
enum Change {
    Replace(Value),
    Patch(json_patch::Patch),
    Delete,
}

/// `POST /api/v3/users`: creates a user.
async fn create_user(core: &Rc<Core>, request: &Request, identity: &Identity) -> Reply {
    let new: NewUser = body(request, "a user").about("users", "")?;
    identity
        .require("users", "create", &new.name)
        .about("users", &new.name)?;
    let name = new.name.clone();
    let password = match new.password {
        Some(password) => Some(hash(&name, password).await?),
        None => None,
    };
    let principal = identity.principal.clone();
    let roles = new.roles;
    apply(core, 201, "users", &name.clone(), move |store| {
        let (user, write) =
            store.create_user_hashed(name.clone(), roles.clone(), password.clone())?;
        let event = Event::new("users", "create", &user.name, &principal).with_object(&user);
        Ok((
            serde_json::to_value(&user).unwrap_or_default(),
            event,
            write,
        ))
    })
    .await
}

/// `DELETE /api/v3/users/{name}`.
async fn delete_user(core: &Rc<Core>, name: String, identity: &Identity) -> Reply {
    identity
        .require("users", "delete", &name)
        .about("users", &name)?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "users", &name, move |store| {
        let (user, write) = store.delete_user(&at)?;
        let event = Event::new("users", "delete", &at, &principal).with_object(&user);
        Ok((
            serde_json::to_value(&user).unwrap_or_default(),
            event,
            write,
        ))
    })
    .await
}

/// `PUT /api/v3/users/{name}/password`: a user may set its own, others need the claim.
async fn set_password(
    core: &Rc<Core>,
    request: &Request,
    name: String,
    identity: &Identity,
) -> Reply {
    if identity.user.as_deref() != Some(name.as_str()) {
        identity
            .require("users", "password", &name)
            .about("users", &name)?;
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
    let body: Password = body(request, "{\"Password\":\"…\"}").about("users", &name)?;
    let password = hash(&name, body.password).await?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "users", &name, move |store| {
        let (user, write) = store.set_password_hashed(&at, password.clone())?;
        let event = Event::new("users", "update", &at, &principal).with_object(&user);
        Ok((
            serde_json::to_value(&user).unwrap_or_default(),
            event,
            write,
        ))
    })
    .await
}

/// `POST /api/v3/roles`: creates a role.
async fn create_role(core: &Rc<Core>, request: &Request, identity: &Identity) -> Reply {
    let role: Role = body(request, "a role").about("roles", "")?;
    identity
        .require("roles", "create", &role.name)
        .about("roles", &role.name)?;
    let principal = identity.principal.clone();
    let name = role.name.clone();
    apply(core, 201, "roles", &name, move |store| {
        let (role, write) = store.create_role(role.clone())?;
        let event = Event::new("roles", "create", &role.name, &principal).with_object(&role);
        Ok((
            serde_json::to_value(&role).unwrap_or_default(),
            event,
            write,
        ))
    })
    .await
}

/// The request body as `T`, or a 400 that says it is not `what`.
fn body<T: serde::de::DeserializeOwned>(request: &Request, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(&request.body)
        .map_err(|e| ApiError::new(400, format!("the body is not valid JSON for {what}: {e}")))
}

/// Checks and hashes a new password on a blocking thread (argon2id: tens of milliseconds).
async fn hash(name: &str, password: String) -> Result<HashedPassword, ApiError> {
    match monoio::spawn_blocking(move || AuthStore::hash_new_password(&password)).await {
        Ok(hashed) => hashed.about("users", name),
        Err(_) => Err(ApiError::new(500, "the password could not be hashed")
            .with_model("users")
            .with_key(name)),
    }
}

/// A route's answer, or the error it fails with.
type Reply = Result<Response, ApiError>;

/// `PUT|PATCH /api/v3/users/{name}`: replaces the user's roles.
async fn user(
    core: &Rc<Core>,
    request: &Request,
    name: String,
    method: Method,
    identity: &Identity,
) -> Reply {
    let change = decode(request, &method).about("users", &name)?;
    identity
        .require("users", "update", &name)
        .about("users", &name)?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "users", &name, move |store| {
        let current = store.get_user(&at)?;
        let wanted = match &change {
            Change::Replace(body) => body.clone(),
            Change::Patch(patch) => patched(&current, patch)?,
            Change::Delete => {
                return Err(ApiError::new(
                    405,
                    "users are deleted by DELETE on the user",
                ));
            }
        };
        let roles = user_roles(&wanted, &at)?;
        let ((before, after), write) = store.set_roles(&at, roles)?;
        let event = Event::new("users", "update", &at, &principal)
            .with_object(&after)
            .with_original(&before);
        Ok((
            serde_json::to_value(&after).unwrap_or_default(),
            event,
            write,
        ))
    })
    .await
}

/// `PUT|PATCH|DELETE /api/v3/roles/{name}`: redefines or deletes a role.
async fn role(
    core: &Rc<Core>,
    request: &Request,
    name: String,
    method: Method,
    identity: &Identity,
) -> Reply {
    let change = decode(request, &method).about("roles", &name)?;
    let action = if matches!(change, Change::Delete) {
        "delete"
    } else {
        "update"
    };
    identity
        .require("roles", action, &name)
        .about("roles", &name)?;
    let principal = identity.principal.clone();
    let at = name.clone();
    apply(core, 200, "roles", &name, move |store| {
        let wanted = match &change {
            Change::Delete => {
                let (removed, write) = store.delete_role(&at)?;
                let event = Event::new("roles", "delete", &at, &principal).with_object(&removed);
                return Ok((
                    serde_json::to_value(&removed).unwrap_or_default(),
                    event,
                    write,
                ));
            }
            Change::Replace(body) => body.clone(),
            Change::Patch(patch) => patched(&store.get_role(&at)?, patch)?,
        };
        let role = role_of(wanted, &at)?;
        let ((before, after), write) = store.replace_role(role)?;
        let event = Event::new("roles", "update", &at, &principal)
            .with_object(&after)
            .with_original(&before);
        Ok((
            serde_json::to_value(&after).unwrap_or_default(),
            event,
            write,
        ))
    })
    .await
}

fn decode(request: &Request, method: &Method) -> Result<Change, ApiError> {
    if *method == Method::Delete {
        return Ok(Change::Delete);
    }
    let body: Value = serde_json::from_slice(&request.body)?;
    if *method == Method::Put {
        return Ok(Change::Replace(body));
    }
    serde_json::from_value(body)
        .map(Change::Patch)
        .map_err(|e| ApiError::new(400, format!("the body is not a JSON Patch (RFC 6902): {e}")))
}

/// `current` as JSON with `patch` applied.
fn patched<T: serde::Serialize>(current: &T, patch: &json_patch::Patch) -> Result<Value, ApiError> {
    let document = serde_json::to_value(current).unwrap_or_default();
    Ok(apply_patch(&document, &patch.0)?)
}

/// The roles a user body asks for; its `Name`, when given, must be the user's.
fn user_roles(body: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    let invalid = |message: String| ApiError::new(422, message);
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
fn role_of(mut body: Value, name: &str) -> Result<Role, ApiError> {
    let Some(fields) = body.as_object_mut() else {
        return Err(ApiError::new(422, "a role must be a JSON object"));
    };
    same_name(fields.get("Name"), name)?;
    fields.insert("Name".into(), Value::String(name.to_owned()));
    serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            422,
            format!(
                "a role is {{\"Name\",\"Claims\":[{{\"Scope\",\"Action\",\"Specific\"}}]}}: {e}"
            ),
        )
    })
}

fn same_name(given: Option<&Value>, name: &str) -> Result<(), ApiError> {
    match given {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(given)) if given == name => Ok(()),
        Some(other) => Err(ApiError::new(
            422,
            format!(
                "the body's Name {other} differs from {name:?} in the path; a name cannot change"
            ),
        )),
    }
}

/// A change to a user or role, planned again on each attempt in a cluster: the answer, the
/// public event and the change itself.
type AccountChange = (Value, Event, AccountWrite);

/// Runs a change on the log thread and publishes its event; answers once the event is durable.
/// A cluster node publishes the change with its event as one message of the stream (see
/// [`crate::cluster::write`]), the change's private part in a header no client receives.
async fn apply(
    core: &Core,
    status: u16,
    model: &'static str,
    key: &str,
    change: impl Fn(&AuthStore) -> Result<AccountChange, ApiError> + Send + Sync + 'static,
) -> Reply {
    if core.shared.cluster.is_some() {
        return apply_in_cluster(core, status, model, key, change).await;
    }
    let store = core.shared.auth.clone();
    let applied = core
        .shared
        .publisher
        .apply(move || {
            // A panic here would take down the log thread and with it every publisher.
            match std::panic::catch_unwind(AssertUnwindSafe(|| change(&store))) {
                Ok(Ok((answer, event, _))) => (vec![event], Ok(answer)),
                Ok(Err(failure)) => (Vec::new(), Err(failure)),
                Err(_) => (
                    Vec::new(),
                    Err(ApiError::new(
                        500,
                        "the change failed unexpectedly; see the server log",
                    )),
                ),
            }
        })
        .await;
    let (answer, _) = applied.about(model, key)?;
    answer
        .map(|answer| Response::json(status, &answer))
        .about(model, key)
}

/// [`apply`] on a cluster node.
async fn apply_in_cluster(
    core: &Core,
    status: u16,
    model: &'static str,
    key: &str,
    change: impl Fn(&AuthStore) -> Result<AccountChange, ApiError> + Send + Sync + 'static,
) -> Reply {
    let store = core.shared.auth.clone();
    let Some(versions) = store.versions().cloned() else {
        return Err(ApiError::new(503, "the node's copy holds no accounts")).about(model, key);
    };
    let plan: Plan<ApiError> = Arc::new(move || {
        let (answer, event, write) = change(&store)?;
        Ok(Some(Planned {
            event,
            answer,
            private: Some(write.to_header()),
        }))
    });
    let to = Target {
        publisher: &core.shared.publisher,
        status: &core.shared.log_status,
        versions: &versions,
    };
    let what = if model == "users" { "user" } else { "role" };
    match cluster_write(&OnCore, to, model, key, plan).await {
        Ok(answer) => Ok(Response::json(status, &answer.unwrap_or_default())),
        Err(failed) => Err(written_failure(failed, what, key)).about(model, key),
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
                user_roles(&bad, "bob").map_err(|e| e.code),
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
                    .map_err(|e| e.code)
                    .map(|_| ()),
                Err(422),
                "{bad}"
            );
        }
    }
}

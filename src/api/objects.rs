//! The object routes of `docs/protocol.md` §7, each checked against the caller's claims (§5).
//!
//! Reads run on a blocking thread; every write runs on the log thread through
//! `Publisher::apply`, so the sled write and its event are one step, in order with every other
//! publish and change, and the answer comes once the event is durable.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::api::error::{About, ApiError};
use crate::api::request::Request;
use crate::auth::{Claim, Claims, Identity};
use crate::cluster::write::{
    Plan, Planned, Runtime, Target, WRITE_ATTEMPTS, WriteFailed, write as cluster_write,
};
use crate::core::Core;
use crate::objects::{Kind, ObjectError, ObjectStore, Written, filter_and_page};
use crate::wire::http::{Method, Response};

/// Lifetime of a runner token when the request names none (as for user tokens).
const RUNNER_TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(600);

/// An object route; keys are as they appear in the path (checked when handled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/api/v3/{type}`: list (GET) and create (POST).
    List(Kind),
    /// `/api/v3/{type}/{key}`: get, replace, patch, delete.
    Object(Kind, String),
    /// `/api/v3/{type}/{key}/params`: all params of an object.
    Params(Kind, String),
    /// `/api/v3/{type}/{key}/params/{param}`: one param (get, set, remove).
    Param(Kind, String, String),
    /// `/api/v3/{type}/{uuid}/token`: a runner token for a machine-like object.
    Token(Kind, String),
}

impl Route {
    /// The object route of a path's segments, if it is one.
    pub(crate) fn parse(segments: &[&str]) -> Option<Route> {
        let ["api", "v3", ty, rest @ ..] = segments else {
            return None;
        };
        let kind = Kind::from_name(ty)?;
        Some(match rest {
            [] => Route::List(kind),
            [key] => Route::Object(kind, (*key).to_owned()),
            [key, "params"] if kind.has_params() => Route::Params(kind, (*key).to_owned()),
            [key, "params", param] if kind.has_params() => {
                Route::Param(kind, (*key).to_owned(), (*param).to_owned())
            }
            [key, "token"] if kind.is_machine_like() => Route::Token(kind, (*key).to_owned()),
            _ => return None,
        })
    }

    /// The methods the route allows (HEAD is answered as GET).
    pub(crate) fn methods(&self) -> &'static [Method] {
        match self {
            Route::List(_) => &[Method::Get, Method::Post],
            Route::Object(..) => &[Method::Get, Method::Put, Method::Patch, Method::Delete],
            Route::Params(..) | Route::Token(..) => &[Method::Get],
            Route::Param(..) => &[Method::Get, Method::Post, Method::Delete],
        }
    }

    /// The route's template, for metrics labels (no client-controlled values).
    pub(crate) fn template(&self) -> &'static str {
        match self {
            Route::List(_) => "/api/v3/{type}",
            Route::Object(..) => "/api/v3/{type}/{key}",
            Route::Params(..) => "/api/v3/{type}/{key}/params",
            Route::Param(..) => "/api/v3/{type}/{key}/params/{param}",
            Route::Token(..) => "/api/v3/{type}/{key}/token",
        }
    }
}

/// The claims of a runner token for object `key` of machine-like type `kind`: get and update
/// its own object and params (which also lets it see its own object's events), and post events.
pub(crate) fn runner_claims(kind: Kind, key: &str) -> Vec<Claim> {
    vec![
        Claim::new(kind.name(), "get,update", key),
        Claim::new("events", "post", "*"),
    ]
}

/// Answers one object request; `method` is already one of [`Route::methods`]. A cluster node
/// cut off from NATS answers reads from its copy as last known, and says so
/// (`Herald-Stale: true`): other nodes may have written since.
pub(crate) async fn handle(
    core: &Rc<Core>,
    request: &Request,
    route: Route,
    method: Method,
    identity: &Identity,
) -> Reply {
    let stale = method == Method::Get
        && core
            .shared
            .cluster
            .as_ref()
            .is_some_and(|view| !view.nats_connected());
    let reply = answer(core, request, route, method, identity).await;
    if stale {
        reply.map(|response| response.with_header("Herald-Stale", "true"))
    } else {
        reply
    }
}

async fn answer(
    core: &Rc<Core>,
    request: &Request,
    route: Route,
    method: Method,
    identity: &Identity,
) -> Reply {
    let principal = identity.principal.clone();
    match (route, method) {
        (Route::List(kind), Method::Get) => list(core, request, kind, identity).await,
        (Route::List(kind), _) => {
            let mut body = parse_body(&request.body).about(kind.name(), "")?;
            // A new machine-like object's key is chosen here, so the claim check can name it.
            // drpcli sends `"Uuid":""` for a machine whose UUID the server is to choose.
            if let Some(fields) = body.as_object_mut().filter(|_| kind.is_machine_like())
                && fields
                    .get("Uuid")
                    .is_none_or(|uuid| uuid.is_null() || uuid == "")
            {
                let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
                fields.insert("Uuid".into(), Value::String(uuid));
            }
            let key = body
                .get(kind.key_field())
                .and_then(Value::as_str)
                .map(|key| kind.canonical_key(key).unwrap_or_else(|_| key.to_owned()))
                .unwrap_or_default();
            require(identity, kind, "create", &key)?;
            let created = write(core, kind, &key, move |store| {
                store.create(kind, body.clone(), &principal)
            })
            .await?;
            Ok(Response::json(201, &created))
        }
        (Route::Object(kind, key), method) => {
            let key = kind.lookup_key(&key).about(kind.name(), &key)?;
            let answer = match method {
                Method::Get => {
                    require(identity, kind, "get", &key)?;
                    read(core, kind, &key, move |store, key| store.get(kind, key)).await?
                }
                Method::Put => {
                    let body = parse_body(&request.body).about(kind.name(), &key)?;
                    require(identity, kind, "update", &key)?;
                    let at = key.clone();
                    write(core, kind, &key, move |store| {
                        store.replace(kind, &at, body.clone(), &principal)
                    })
                    .await?
                }
                Method::Patch => {
                    let body = parse_body(&request.body).about(kind.name(), &key)?;
                    let patch: json_patch::Patch = serde_json::from_value(body)
                        .map_err(|e| {
                            ObjectError::BadRequest(format!(
                                "the body is not a JSON Patch (RFC 6902: an array of operations like {{\"op\":\"replace\",\"path\":\"/Description\",\"value\":\"…\"}}): {e}"
                            ))
                        })
                        .about(kind.name(), &key)?;
                    require(identity, kind, "update", &key)?;
                    let at = key.clone();
                    write(core, kind, &key, move |store| {
                        store.patch(kind, &at, &patch.0, &principal)
                    })
                    .await?
                }
                _ => {
                    require(identity, kind, "delete", &key)?;
                    let at = key.clone();
                    write(core, kind, &key, move |store| {
                        store.delete(kind, &at, &principal)
                    })
                    .await?
                }
            };
            Ok(Response::json(200, &answer))
        }
        (Route::Params(kind, key), _) => {
            let key = kind.lookup_key(&key).about(kind.name(), &key)?;
            require(identity, kind, "get", &key)?;
            let params = read(core, kind, &key, move |store, key| store.params(kind, key)).await?;
            Ok(Response::json(200, &params))
        }
        (Route::Param(kind, key, param), method) => {
            let key = kind.lookup_key(&key).about(kind.name(), &key)?;
            let answer = match method {
                Method::Get => {
                    require(identity, kind, "get", &key)?;
                    read(core, kind, &key, move |store, key| {
                        store.param(kind, key, &param)
                    })
                    .await?
                }
                Method::Post => {
                    let value = parse_body(&request.body).about(kind.name(), &key)?;
                    require(identity, kind, "update", &key)?;
                    let at = key.clone();
                    write(core, kind, &key, move |store| {
                        store.set_param(kind, &at, &param, value.clone(), &principal)
                    })
                    .await?
                }
                _ => {
                    require(identity, kind, "update", &key)?;
                    let at = key.clone();
                    write(core, kind, &key, move |store| {
                        store.remove_param(kind, &at, &param, &principal)
                    })
                    .await?
                }
            };
            Ok(Response::json(200, &answer))
        }
        (Route::Token(kind, key), _) => runner_token(core, request, kind, &key, identity).await,
    }
}

/// `GET /api/v3/{type}`: the objects the caller may list or get, filtered and paged.
async fn list(core: &Rc<Core>, request: &Request, kind: Kind, identity: &Identity) -> Reply {
    let claims = identity.claims.clone();
    if !may_list_some(&claims, kind) {
        return Err(identity.forbidden(kind.name(), "list", "*")).about(kind.name(), "*");
    }
    let bad = |message: String| {
        ApiError::from(ObjectError::BadRequest(message))
            .with_model(kind.name())
            .with_key("")
    };
    let mut filters = Vec::new();
    let mut offset = 0;
    let mut limit = None;
    for (name, value) in form_urlencoded::parse(request.head.raw_query().as_bytes()) {
        match name.as_ref() {
            "offset" => {
                offset = value.parse().map_err(|_| {
                    bad(format!(
                        "offset {value:?} is not a non-negative whole number"
                    ))
                })?;
            }
            // DRP's `limit=-1` means no limit.
            "limit" if value == "-1" => limit = None,
            "limit" => {
                limit = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "limit {value:?} is not a non-negative whole number (or -1 for all)"
                    ))
                })?);
            }
            // Object fields are capitalized (`Name`, `Uuid`); lowercase parameters are DRP's
            // list options (`slim`, `sort`, …, and `token`), which herald does not filter on.
            field if field.starts_with(|c: char| c.is_ascii_uppercase()) => {
                filters.push((field.to_owned(), value.into_owned()));
            }
            _ => {}
        }
    }
    let objects = read(core, kind, "", move |store, _| {
        Ok(store
            .list(kind)?
            .into_iter()
            .filter(|(key, _)| {
                claims.allows(kind.name(), "list", key) || claims.allows(kind.name(), "get", key)
            })
            .map(|(_, object)| object)
            .collect::<Vec<_>>())
    })
    .await?;
    let (total, page) = filter_and_page(objects, &filters, offset, limit);
    Ok(Response::json(200, &page)
        .with_header("X-DRP-LIST-COUNT", page.len().to_string())
        .with_header("X-DRP-LIST-TOTAL-COUNT", total.to_string()))
}

/// `GET /api/v3/{type}/{uuid}/token?ttl=SECONDS`: a token whose principal is `runner:<uuid>`.
async fn runner_token(
    core: &Rc<Core>,
    request: &Request,
    kind: Kind,
    key: &str,
    identity: &Identity,
) -> Reply {
    let key = kind.lookup_key(key).about(kind.name(), key)?;
    require(identity, kind, "token", &key)?;
    let ttl = match request.head.query("ttl") {
        None => RUNNER_TOKEN_TTL_DEFAULT,
        Some(ttl) => Duration::from_secs(
            ttl.parse::<u64>()
                .map_err(|_| {
                    ObjectError::BadRequest(format!("ttl {ttl:?} is not a number of seconds"))
                })
                .about(kind.name(), &key)?,
        ),
    };
    let exists = read(core, kind, &key, move |store, key| {
        store.contains(kind, key)
    })
    .await?;
    if !exists {
        return Err(ObjectError::NotFound {
            kind: kind.name(),
            key: key.clone(),
        })
        .about(kind.name(), &key);
    }
    let token = core
        .shared
        .auth
        .mint_principal_token(&format!("runner:{key}"), runner_claims(kind, &key), ttl)
        .about(kind.name(), &key)?;
    let answer = crate::api::info::token_answer(&request.server_facts(core), &token);
    Ok(Response::json(200, &answer))
}

/// Whether some claim lets the caller list or get at least some objects of `kind`.
fn may_list_some(claims: &Claims, kind: Kind) -> bool {
    claims.claims().iter().any(|claim| {
        let any_key = Claims::new([Claim::new(&claim.scope, &claim.action, "*")]);
        any_key.allows(kind.name(), "list", "*") || any_key.allows(kind.name(), "get", "*")
    })
}

/// Nothing when the caller holds the claim on object `key` of type `kind`, else the 403 about it.
fn require(identity: &Identity, kind: Kind, action: &str, key: &str) -> Result<(), ApiError> {
    identity
        .require(kind.name(), action, key)
        .about(kind.name(), key)
}

fn parse_body(body: &[u8]) -> Result<Value, ObjectError> {
    serde_json::from_slice(body)
        .map_err(|e| ObjectError::BadRequest(format!("the body is not valid JSON: {e}")))
}

/// A route's answer, or the error it fails with.
type Reply = Result<Response, ApiError>;

/// Runs a read on a blocking thread, so sled never blocks a core.
async fn read<T: Send + 'static>(
    core: &Core,
    kind: Kind,
    key: &str,
    read: impl FnOnce(&ObjectStore, &str) -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = core.shared.objects.clone();
    let at = key.to_owned();
    match monoio::spawn_blocking(move || read(&store, &at)).await {
        Ok(result) => result.about(kind.name(), key),
        Err(_) => Err(ObjectError::Unavailable(
            "the object store could not be read".into(),
        ))
        .about(kind.name(), key),
    }
}

/// Runs a write on the log thread and publishes its event; answers once the event is durable.
/// On a cluster node, see [`write_in_cluster`].
async fn write(
    core: &Core,
    kind: Kind,
    key: &str,
    change: impl Fn(&ObjectStore) -> Result<Written, ObjectError> + Send + Sync + 'static,
) -> Result<Value, ApiError> {
    if core.shared.cluster.is_some() {
        return write_in_cluster(core, kind, key, Arc::new(change)).await;
    }
    let store = core.shared.objects.clone();
    let applied = core
        .shared
        .publisher
        .apply(move || {
            // A panic here would take down the log thread and with it every publisher.
            match std::panic::catch_unwind(AssertUnwindSafe(|| change(&store))) {
                Ok(Ok(written)) => (vec![written.event], Ok(written.answer)),
                Ok(Err(error)) => (Vec::new(), Err(error)),
                Err(_) => (
                    Vec::new(),
                    Err(ObjectError::Corrupt(
                        "the change failed unexpectedly; see the server log".into(),
                    )),
                ),
            }
        })
        .await;
    let (answer, _) = applied.about(kind.name(), key)?;
    answer.about(kind.name(), key)
}

/// A change to one object, planned again on each attempt.
type Change = Arc<dyn Fn(&ObjectStore) -> Result<Written, ObjectError> + Send + Sync>;

/// A cluster node's write: see [`crate::cluster::write`]. A JSON Patch `test` is checked again
/// on each plan.
async fn write_in_cluster(
    core: &Core,
    kind: Kind,
    key: &str,
    change: Change,
) -> Result<Value, ApiError> {
    let Some(versions) = core.shared.objects.versions() else {
        return Err(ObjectError::Unavailable(
            "the node's copy holds no objects".into(),
        ))
        .about(kind.name(), key);
    };
    let store = core.shared.objects.clone();
    let plan: Plan<ObjectError> = Arc::new(move || {
        change(&store).map(|written| {
            Some(Planned {
                event: written.event,
                answer: written.answer,
                private: None,
            })
        })
    });
    let to = Target {
        publisher: &core.shared.publisher,
        status: &core.shared.log_status,
        versions,
    };
    match cluster_write(&OnCore, to, kind.name(), key, plan).await {
        Ok(answer) => Ok(answer.unwrap_or_default()),
        Err(failed) => Err(written_failure(failed, kind.singular(), key)).about(kind.name(), key),
    }
}

/// The error a failed cluster write answers, about the `what` named `key`.
pub(crate) fn written_failure<E: Into<ApiError>>(
    failed: WriteFailed<E>,
    what: &str,
    key: &str,
) -> ApiError {
    match failed {
        WriteFailed::Plan(error) => error.into(),
        WriteFailed::Publish(error) => ApiError::from(error),
        WriteFailed::NotReadBack(seq) => ObjectError::Unavailable(format!(
            "the write was stored as Seq {seq}, but this node has not read it back yet; read \
             the {what} to see whether it applied"
        ))
        .into(),
        WriteFailed::Contended => ObjectError::Contended(format!(
            "{what} {key:?} was written by other nodes {WRITE_ATTEMPTS} times while this write \
             was planned; nothing was changed, retry"
        ))
        .into(),
        WriteFailed::Copy(error) => ObjectError::Unavailable(error).into(),
    }
}

/// A core's way to block (its blocking pool) and to wait (its timer), for cluster writes.
pub(crate) struct OnCore;

impl Runtime for OnCore {
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        monoio::spawn_blocking(work).await.ok()
    }

    async fn timeout<F: std::future::Future>(
        &self,
        limit: Duration,
        until: F,
    ) -> Option<F::Output> {
        monoio::time::timeout(limit, until).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        Route::parse(&segments)
    }

    #[test]
    fn object_paths_parse_into_their_routes() {
        let p = Kind::Profiles;
        let m = Kind::Machines;
        assert_eq!(route("/api/v3/profiles"), Some(Route::List(p)));
        assert_eq!(
            route("/api/v3/profiles/global"),
            Some(Route::Object(p, "global".into()))
        );
        assert_eq!(
            route("/api/v3/profiles/global/params"),
            Some(Route::Params(p, "global".into()))
        );
        assert_eq!(
            route("/api/v3/machines/u/params/bar"),
            Some(Route::Param(m, "u".into(), "bar".into()))
        );
        assert_eq!(
            route("/api/v3/resource_brokers/u/token"),
            Some(Route::Token(Kind::ResourceBrokers, "u".into()))
        );
        for other in [
            "/api/v3/users",
            "/api/v3/profiles/global/token",
            "/api/v3/params/p/params",
            "/api/v3/machines/u/connections",
            "/api/v3/profiles/a/params/b/c",
            "/api/v2/profiles",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
    }

    #[test]
    fn routes_allow_the_methods_of_the_contract() {
        let object = Route::Object(Kind::Params, "p".into());
        assert!(object.methods().contains(&Method::Patch));
        assert!(
            !Route::Params(Kind::Profiles, "global".into())
                .methods()
                .contains(&Method::Post)
        );
        assert!(
            Route::Param(Kind::Profiles, "g".into(), "p".into())
                .methods()
                .contains(&Method::Delete)
        );
    }

    #[test]
    fn listing_needs_some_list_or_get_claim_on_the_type() {
        let claims = |list: &[(&str, &str, &str)]| {
            Claims::new(list.iter().map(|(s, a, k)| Claim::new(s, a, k)))
        };
        assert!(may_list_some(
            &claims(&[("machines", "get", "*")]),
            Kind::Machines
        ));
        assert!(may_list_some(
            &claims(&[("machines,profiles", "list", "m1")]),
            Kind::Profiles
        ));
        assert!(may_list_some(&claims(&[("*", "*", "*")]), Kind::Clusters));
        assert!(!may_list_some(
            &claims(&[("machines", "update", "*")]),
            Kind::Machines
        ));
        assert!(!may_list_some(
            &claims(&[("profiles", "get", "*")]),
            Kind::Machines
        ));
    }

    #[test]
    fn a_runner_may_get_and_update_only_its_own_machine_and_post_events() {
        let uuid = "6e7a3b5c-0d1f-4c2a-9a8b-1f2e3d4c5b6a";
        let claims = Claims::new(runner_claims(Kind::Machines, uuid));
        assert!(claims.allows("machines", "get", uuid));
        assert!(claims.allows("machines", "update", uuid));
        assert!(!claims.allows("machines", "delete", uuid));
        assert!(!claims.allows("machines", "get", "another"));
        assert!(claims.allows("events", "post", "machines.update.x"));
        assert!(claims.may_see("machines", "save", uuid));
        assert!(!claims.may_see("machines", "save", "another"));
        assert!(!claims.may_see("profiles", "save", "global"));
    }
}

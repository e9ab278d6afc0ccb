//! The connections API (`docs/protocol.md` §1): every core's live connections (on a cluster
//! node, the other nodes' too), one by its address, those of an agent, and the persistent
//! history of closed ones. A REST connection is tracked here once a request on it authenticates.

use crate::api::error::ApiError;
use crate::auth::Identity;
use crate::core::Core;
use crate::core::conns::HttpWatch;
use crate::core::query::CoreQuery;
use crate::core::view::ConnectionView;
use crate::objects::Kind;
use crate::wire::event;
use crate::wire::http::{RequestHead, Response};

/// Default and largest page of the connection history.
const HISTORY_PAGE_DEFAULT: usize = 100;
const HISTORY_PAGE_MAX: usize = 10_000;

/// `GET /api/v3/connections?Principal=&Type=`: the live connections, filtered.
pub(crate) async fn list(
    core: &Core,
    head: &RequestHead,
    identity: &Identity,
) -> Result<Response, ApiError> {
    identity.require("connections", "list", "*")?;
    let principal = head.query("Principal");
    let kind = head.query("Type");
    let views: Vec<ConnectionView> = gather(core)
        .await
        .into_iter()
        .filter(|v| principal.as_deref().is_none_or(|p| p == v.principal))
        .filter(|v| kind.as_deref().is_none_or(|k| k == v.kind))
        .collect();
    Ok(Response::json(200, &views))
}

/// `GET /api/v3/connections/{RemoteAddr}`: one live connection.
pub(crate) async fn one(
    core: &Core,
    addr: String,
    identity: &Identity,
) -> Result<Response, ApiError> {
    identity.require("connections", "get", &addr)?;
    match gather(core)
        .await
        .into_iter()
        .find(|v| v.remote_addr == addr)
    {
        Some(view) => Ok(Response::json(200, &view)),
        None => Err(
            ApiError::new(404, format!("no open connection from {addr}"))
                .with_model("connections")
                .with_key(addr),
        ),
    }
}

/// `GET /api/v3/{machines|clusters|resource_brokers}/{uuid}/connections`: the connections of
/// the object's agent (principal `runner:<uuid>`), once the object is known to exist.
pub(crate) async fn of_agent(
    core: &Core,
    kind: &'static str,
    uuid: String,
    identity: &Identity,
) -> Result<Response, ApiError> {
    identity.require("connections", "list", "*")?;
    let object_kind = match kind {
        "machines" => Kind::Machines,
        "clusters" => Kind::Clusters,
        _ => Kind::ResourceBrokers,
    };
    let store = core.shared.objects.clone();
    let lookup = uuid.clone();
    let exists = monoio::spawn_blocking(move || store.contains(object_kind, &lookup)).await;
    if !matches!(exists, Ok(Ok(true))) {
        return Err(ApiError::new(404, format!("{kind} {uuid} does not exist"))
            .with_model(kind)
            .with_key(uuid));
    }
    let principal = format!("runner:{uuid}");
    let views: Vec<ConnectionView> = gather(core)
        .await
        .into_iter()
        .filter(|v| v.principal == principal)
        .collect();
    Ok(Response::json(200, &views))
}

/// `GET /api/v3/connections/history?principal=&since=&limit=`: closed connections, newest first.
pub(crate) async fn history(
    core: &Core,
    head: &RequestHead,
    identity: &Identity,
) -> Result<Response, ApiError> {
    identity.require("connections", "list", "*")?;
    let principal = head.query("principal");
    let since = match head.query("since") {
        None => None,
        Some(text) => Some(humantime::parse_rfc3339_weak(&text).map_err(|_| {
            ApiError::new(
                400,
                format!("since {text:?} is not an RFC 3339 time such as 2026-11-27T20:00:00Z"),
            )
        })?),
    };
    let limit = match head.query("limit") {
        None => HISTORY_PAGE_DEFAULT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=HISTORY_PAGE_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    400,
                    format!("limit must be between 1 and {HISTORY_PAGE_MAX}"),
                )
            })?,
    };
    let history = core.shared.history.clone();
    let listed =
        monoio::spawn_blocking(move || history.list(principal.as_deref(), since, limit)).await;
    match listed {
        Ok(views) => Ok(Response::json(200, &views?)),
        Err(_) => Err(ApiError::new(
            500,
            "the connection history could not be read",
        )),
    }
}

/// Starts tracking a keep-alive REST connection the first time a request on it authenticates;
/// its `connections.create` is queued for the log before the request can publish anything.
pub(crate) async fn track(core: &Core, watch: &HttpWatch, identity: &Identity) {
    if watch.tracked.borrow().is_some() {
        return;
    }
    let view = ConnectionView {
        remote_addr: watch.remote.to_string(),
        principal: identity.principal.clone(),
        create_time: event::now_rfc3339(),
        expires_at: crate::core::view::expires_at(identity.expires),
        kind: "api".to_owned(),
        node: core.shared.cluster.as_ref().map(|c| c.node.clone()),
        filters: Vec::new(),
        events_sent: 0,
        bytes_sent: 0,
        last_seq: 0,
        close_time: None,
        close_reason: None,
    };
    let (id, _) = core.open_connection(view.clone()).await;
    *watch.tracked.borrow_mut() = Some((id, view));
}

/// Every core's live connections, then those of the cluster's other nodes.
async fn gather(core: &Core) -> Vec<ConnectionView> {
    let mut answers = Vec::new();
    for query in &core.shared.queries {
        let (reply, answer) = flume::bounded(1);
        if query
            .send_async(CoreQuery::Connections(reply))
            .await
            .is_ok()
        {
            answers.push(answer);
        }
    }
    let mut views = Vec::new();
    for answer in answers {
        if let Ok(mut part) = answer.recv_async().await {
            views.append(&mut part);
        }
    }
    if let Some(cluster) = &core.shared.cluster_connections {
        views.extend(cluster.others());
    }
    views
}

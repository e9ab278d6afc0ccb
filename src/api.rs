//! The HTTP side of a connection: the request loop with its limits, authentication, and the
//! routes of `docs/protocol.md` §1. A websocket upgrade hands the connection over to
//! [`crate::core::connection`].

pub mod info;
pub mod objects;
pub mod ui;
pub mod users;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::auth::{self, AuthError, Claims, FastAuth, Identity};
use crate::core::Core;
use crate::core::connection;
use crate::core::conns::{ConnectionView, Expiry, HttpWatch};
use crate::core::query::CoreQuery;
use crate::net::transport::Transport;
use crate::wire::event;
use crate::wire::filter::Filter;
use crate::wire::http::{
    self, ApiError, BodyKind, ChunkedDecoder, Head, Method, RequestHead, Response,
};

/// Default and largest page of `GET /api/v3/events`.
const EVENTS_PAGE_DEFAULT: usize = 1000;
const EVENTS_PAGE_MAX: usize = 10_000;
/// Default and largest lifetime of a minted token.
const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(600);

/// Serves one accepted TCP connection until it closes or becomes a websocket.
pub async fn serve(core: Rc<Core>, stream: TcpStream, remote: SocketAddr) {
    let local = stream.local_addr().ok();
    let Ok(mut transport) = Transport::new(stream, core.shared.tls.as_ref()) else {
        return;
    };
    let (watch_key, watch) = core.watch_http(transport.fd(), remote, local);
    if core.shared.tls.is_some() {
        // The TLS handshake counts against the head deadline.
        watch.request_started.set(Some(Instant::now()));
    }
    let outcome = session(&core, &mut transport, &watch).await;
    let tracked = watch.tracked.borrow_mut().take();
    if let Some((id, view)) = tracked {
        // An upgrade ends the REST connection's record; the websocket gets its own.
        let reason = if core.is_stopping() && outcome.is_none() {
            "server shutdown"
        } else {
            "client closed"
        };
        core.close_connection(id, view, reason.to_owned()).await;
    }
    // Unwatched before the socket can close, so the sweeper never touches a reused descriptor.
    core.unwatch_http(watch_key);
    if let Some((identity, leftover)) = outcome {
        let fd = transport.fd();
        let (read, write) = transport.into_split();
        // A task of its own, so this HTTP session's state is freed for the websocket's life.
        monoio::spawn(connection::run(
            core, read, write, fd, remote, identity, leftover,
        ));
    }
}

/// A request as the routes see it.
pub struct Request {
    /// The parsed head.
    pub head: RequestHead,
    /// The whole body (already within the size limit).
    pub body: Vec<u8>,
    /// When the head was complete, for the publish-duration metric.
    pub received: Instant,
    /// The connection's deadlines and tracking record.
    pub watch: Rc<HttpWatch>,
}

/// What a route answers.
enum Answer {
    Response(Response),
    Upgrade(Identity),
    /// Credentials were presented and refused: logged as a failed login.
    LoginFailed(Response, LoginFailure),
}

/// Who tried to log in and why it failed; never the password.
struct LoginFailure {
    /// The user name of Basic credentials; `None` for a token.
    user: Option<String>,
    /// The reason as metrics label it (`bad_password`, `expired_token`, …).
    reason: &'static str,
}

impl From<Response> for Answer {
    fn from(r: Response) -> Answer {
        Answer::Response(r)
    }
}

/// The request loop; returns the identity and any bytes already read when the client upgraded.
async fn session(
    core: &Rc<Core>,
    transport: &mut Transport,
    watch: &Rc<HttpWatch>,
) -> Option<(Identity, Vec<u8>)> {
    let limits = &core.shared.config.limits;
    // Both grow as needed; an idle keep-alive or websocket connection keeps them for life.
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        let (head, head_len) = loop {
            match http::parse_head(&buf, limits.max_header_bytes) {
                Ok(Head::Complete { head, len }) => break (head, len),
                Ok(Head::Partial) => {}
                Err(error) => {
                    let response =
                        Response::error(ApiError::new(error.status(), error.to_string()));
                    log_refused(watch.remote, None, UNREAD, &response);
                    finish(transport, &response, &mut out).await;
                    return None;
                }
            }
            let was_empty = buf.is_empty();
            match transport.read_into(&mut buf).await {
                Ok(n) if n > 0 => {
                    if was_empty && watch.request_started.get().is_none() {
                        watch.request_started.set(Some(Instant::now()));
                    }
                    watch.request_pending.set(true);
                }
                result => {
                    if let Err(error) = &result
                        && transport.is_handshaking()
                    {
                        log_failed_handshake(watch.remote, transport, error);
                    }
                    if watch.expired.get() == Some(Expiry::Header) {
                        let response = Response::error(ApiError::new(
                            408,
                            "the request head was not complete in time",
                        ));
                        log_refused(watch.remote, None, UNREAD, &response);
                        finish(transport, &response, &mut out).await;
                    }
                    return None;
                }
            }
        };
        buf.drain(..head_len);
        let body = match read_body(core, transport, &head, &mut buf, watch).await {
            Ok(body) => body,
            Err(Some(response)) => {
                log_refused(watch.remote, Some(&head), UNREAD, &response);
                finish(transport, &response, &mut out).await;
                return None;
            }
            Err(None) => return None,
        };
        let keep_alive = head.keep_alive;
        let head_only = head.method == Method::Head;
        let request = Request {
            head,
            body,
            received: Instant::now(),
            watch: watch.clone(),
        };
        let (answer, template) = route(core, &request).await;
        crate::metrics::count_request(
            template,
            match &answer {
                Answer::Upgrade(_) => 101,
                Answer::Response(response) | Answer::LoginFailed(response, _) => response.status,
            },
        );
        log_refusal(watch.remote, &request.head, template, &answer);
        match answer {
            Answer::Upgrade(identity) => {
                let key = request.head.websocket_key.as_deref()?;
                if transport
                    .write_all(&crate::wire::websocket::upgrade_response(key))
                    .await
                    .is_err()
                {
                    return None;
                }
                return Some((identity, buf));
            }
            Answer::LoginFailed(response, _) | Answer::Response(response) => {
                out.clear();
                response.encode(keep_alive, head_only, &mut out);
                if transport.write_all(&out).await.is_err() || !keep_alive || core.is_stopping() {
                    return None;
                }
            }
        }
        watch.request_started.set(if buf.is_empty() {
            None
        } else {
            Some(Instant::now())
        });
        watch.request_pending.set(!buf.is_empty());
        watch.idle_since.set(Instant::now());
    }
}

/// Logs, at info and rate-limited, a request that was refused (4xx) or whose login failed.
fn log_refusal(remote: SocketAddr, head: &RequestHead, route: &str, answer: &Answer) {
    match answer {
        Answer::LoginFailed(response, failure) => {
            if let Some(suppressed) = crate::logging::FAILED_LOGINS.admit() {
                tracing::info!(
                    remote = %remote,
                    user = failure.user.as_deref(),
                    reason = failure.reason,
                    method = head.method.as_str(),
                    route,
                    status = response.status,
                    suppressed = crate::logging::suppressed_field(suppressed),
                    "login failed"
                );
            }
        }
        Answer::Response(response) if (400..500).contains(&response.status) => {
            log_refused(remote, Some(head), route, response);
        }
        _ => {}
    }
}

/// Logs a 4xx answer, at info and rate-limited; `head` is `None` when it was not readable.
fn log_refused(remote: SocketAddr, head: Option<&RequestHead>, route: &str, response: &Response) {
    if let Some(suppressed) = crate::logging::REFUSED_REQUESTS.admit() {
        tracing::info!(
            remote = %remote,
            method = head.map_or("-", |h| h.method.as_str()),
            route,
            status = response.status,
            reason = response.error_message().unwrap_or_default(),
            suppressed = crate::logging::suppressed_field(suppressed),
            "request refused"
        );
    }
}

/// Writes a last response and lets the connection close.
async fn finish(transport: &mut Transport, response: &Response, out: &mut Vec<u8>) {
    out.clear();
    response.encode(false, false, out);
    let _ = transport.write_all(out).await;
}

/// Reads the request body within the size limit; `Err(Some)` is an answer to send before
/// closing, `Err(None)` a connection that ended.
async fn read_body(
    core: &Core,
    transport: &mut Transport,
    head: &RequestHead,
    buf: &mut Vec<u8>,
    watch: &HttpWatch,
) -> Result<Vec<u8>, Option<Response>> {
    let max = core.shared.config.limits.max_body_bytes;
    let too_large = || {
        Some(Response::error(ApiError::new(
            413,
            format!("the request body is larger than {max} bytes"),
        )))
    };
    let ended = |watch: &HttpWatch| {
        (watch.expired.get() == Some(Expiry::Header))
            .then(|| Response::error(ApiError::new(408, "the request was not complete in time")))
    };
    match head.body {
        BodyKind::None => Ok(Vec::new()),
        BodyKind::Length(len) => {
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(too_large)?;
            while buf.len() < len {
                match transport.read_into(buf).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(ended(watch)),
                }
            }
            Ok(buf.drain(..len).collect())
        }
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                match decoder.decode(buf, &mut body, max) {
                    Ok(progress) => {
                        buf.drain(..progress.consumed);
                        if progress.done {
                            return Ok(body);
                        }
                    }
                    Err(error) => {
                        return Err(Some(Response::error(ApiError::new(
                            error.status(),
                            error.to_string(),
                        ))));
                    }
                }
                match transport.read_into(buf).await {
                    Ok(n) if n > 0 => {}
                    _ => return Err(ended(watch)),
                }
            }
        }
    }
}

/// The routes, with their templates (for metrics) and the methods each allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Ws,
    Events,
    Info,
    InfoActivity,
    Users,
    User(String),
    UserPassword(String),
    UserToken(String),
    Roles,
    Role(String),
    Metrics,
    Connections,
    ConnectionHistory,
    Connection(String),
    AgentConnections(&'static str, String),
    /// Profiles, params, machines, clusters, resource brokers: see [`objects`].
    Objects(crate::api::objects::Route),
}

impl Route {
    fn parse(segments: &[String]) -> Option<Route> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match s.as_slice() {
            ["api", "v3", "ws"] => Route::Ws,
            ["api", "v3", "events"] => Route::Events,
            ["api", "v3", "info"] => Route::Info,
            ["api", "v3", "info", "activity"] => Route::InfoActivity,
            ["api", "v3", "users"] => Route::Users,
            ["api", "v3", "users", name] => Route::User((*name).to_owned()),
            ["api", "v3", "users", name, "password"] => Route::UserPassword((*name).to_owned()),
            ["api", "v3", "users", name, "token"] => Route::UserToken((*name).to_owned()),
            ["api", "v3", "roles"] => Route::Roles,
            ["api", "v3", "roles", name] => Route::Role((*name).to_owned()),
            ["metrics"] => Route::Metrics,
            ["api", "v3", "connections"] => Route::Connections,
            ["api", "v3", "connections", "history"] => Route::ConnectionHistory,
            ["api", "v3", "connections", addr] => Route::Connection((*addr).to_owned()),
            ["api", "v3", kind, uuid, "connections"] => {
                let kind = match *kind {
                    "machines" => "machines",
                    "clusters" => "clusters",
                    "resource_brokers" => "resource_brokers",
                    _ => return None,
                };
                Route::AgentConnections(kind, (*uuid).to_owned())
            }
            _ => return crate::api::objects::Route::parse(&s).map(Route::Objects),
        })
    }

    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Ws
            | Route::Info
            | Route::InfoActivity
            | Route::UserToken(_)
            | Route::Metrics
            | Route::Connections
            | Route::ConnectionHistory
            | Route::Connection(_)
            | Route::AgentConnections(..) => &[Method::Get],
            Route::Events => &[Method::Get, Method::Post],
            Route::Users | Route::Roles => &[Method::Get, Method::Post],
            Route::User(_) => &[Method::Get, Method::Put, Method::Patch, Method::Delete],
            Route::Role(_) => &[Method::Get, Method::Put, Method::Patch, Method::Delete],
            Route::UserPassword(_) => &[Method::Put],
            Route::Objects(route) => route.methods(),
        }
    }

    /// The route's template, the only route label metrics carry.
    fn template(&self) -> &'static str {
        match self {
            Route::Ws => "/api/v3/ws",
            Route::Events => "/api/v3/events",
            Route::Info => "/api/v3/info",
            Route::InfoActivity => "/api/v3/info/activity",
            Route::Users => "/api/v3/users",
            Route::User(_) => "/api/v3/users/{name}",
            Route::UserPassword(_) => "/api/v3/users/{name}/password",
            Route::UserToken(_) => "/api/v3/users/{name}/token",
            Route::Roles => "/api/v3/roles",
            Route::Role(_) => "/api/v3/roles/{name}",
            Route::Metrics => "/metrics",
            Route::Connections => "/api/v3/connections",
            Route::ConnectionHistory => "/api/v3/connections/history",
            Route::Connection(_) => "/api/v3/connections/{RemoteAddr}",
            Route::AgentConnections("machines", _) => "/api/v3/machines/{uuid}/connections",
            Route::AgentConnections("clusters", _) => "/api/v3/clusters/{uuid}/connections",
            Route::AgentConnections(..) => "/api/v3/resource_brokers/{uuid}/connections",
            Route::Objects(route) => route.template(),
        }
    }
}

fn error(code: u16, message: impl Into<String>) -> Response {
    Response::error(ApiError::new(code, message))
}

fn auth_error(error: &AuthError) -> Response {
    let response = error_with(error.status(), error.to_string());
    if error.status() == 401 {
        response.with_header("WWW-Authenticate", "dr-provision")
    } else {
        response
    }
}

fn error_with(code: u16, message: String) -> Response {
    Response::error(ApiError::new(code, message))
}

/// Authenticates a request: the fast path inline, argon2 on a blocking thread.
async fn authenticate(core: &Core, head: &RequestHead) -> Result<Identity, AuthError> {
    let token = head.query("token").or_else(|| head.query("Token"));
    let result = match auth::credentials(head.header("authorization"), token.as_deref()) {
        Ok(credentials) => check_credentials(core, credentials).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &result
        && error.is_authentication_failure()
    {
        metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => error.metric_reason())
            .increment(1);
    }
    result
}

async fn check_credentials(
    core: &Core,
    credentials: auth::Credentials,
) -> Result<Identity, AuthError> {
    match core.shared.auth.authenticate_fast(&credentials) {
        FastAuth::Done(result) => result,
        FastAuth::NeedsHash => {
            let store = core.shared.auth.clone();
            match monoio::spawn_blocking(move || store.authenticate_slow(&credentials)).await {
                Ok(result) => result,
                Err(_) => Err(AuthError::Malformed("credential check failed".into())),
            }
        }
    }
}

/// The user name a request's Basic credentials claim, for the log of a failed login.
fn claimed_user(head: &RequestHead) -> Option<String> {
    let token = head.query("token").or_else(|| head.query("Token"));
    match auth::credentials(head.header("authorization"), token.as_deref()) {
        Ok(auth::Credentials::Basic { user, .. }) => Some(user),
        _ => None,
    }
}

/// A 403 naming the claim the principal lacks, or nothing when it holds it.
fn require(identity: &Identity, scope: &str, action: &str, specific: &str) -> Result<(), Response> {
    if identity.claims.allows(scope, action, specific) {
        Ok(())
    } else {
        Err(error_with(
            403,
            format!(
                "{} lacks the claim {scope}:{action}:{specific}",
                identity.principal
            ),
        ))
    }
}

/// Routes a request; also answers the route template it was counted under.
async fn route(core: &Rc<Core>, request: &Request) -> (Answer, &'static str) {
    let head = &request.head;
    let segments = match head.path_segments() {
        Ok(segments) => segments,
        Err(e) => return (error(400, e.to_string()).into(), UNMATCHED),
    };
    // The console's files are public (the page logs in itself), so they skip authentication.
    if let Some((response, template)) =
        crate::api::ui::answer(head, &segments, core.shared.tls.is_some())
    {
        return (response.into(), template);
    }
    let Some(route) = Route::parse(&segments) else {
        return (
            error(404, format!("no route {}", head.path())).into(),
            UNMATCHED,
        );
    };
    let template = route.template();
    (route_to(core, request, route).await, template)
}

/// The template label of requests that matched no route.
const UNMATCHED: &str = "unmatched";
/// The route logged for a request refused before it could be routed (a bad or slow head, a
/// body over the limit).
const UNREAD: &str = "-";

/// Logs a TLS handshake that failed, at info and rate-limited, naming a plain-HTTP client.
fn log_failed_handshake(remote: SocketAddr, transport: &Transport, error: &std::io::Error) {
    let Some(suppressed) = crate::logging::FAILED_HANDSHAKES.admit() else {
        return;
    };
    let reason = if transport.began_with_plain_http() {
        "the client sent plain HTTP to this TLS port; it should use https:// (or wss://)".to_owned()
    } else {
        error.to_string()
    };
    tracing::info!(
        remote = %remote,
        reason,
        suppressed = crate::logging::suppressed_field(suppressed),
        "TLS handshake failed"
    );
}

async fn route_to(core: &Rc<Core>, request: &Request, route: Route) -> Answer {
    let head = &request.head;
    let method = if head.method == Method::Head {
        Method::Get
    } else {
        head.method.clone()
    };
    if !route.methods().contains(&method) {
        let allow: Vec<&str> = route.methods().iter().map(Method::as_str).collect();
        return error(
            405,
            format!("{} is not allowed on {}", head.method.as_str(), head.path()),
        )
        .with_header("Allow", allow.join(", "))
        .into();
    }
    if route == Route::Metrics && !core.shared.config.metrics_auth {
        return metrics_response(core).into();
    }
    if route == Route::Ws && head.websocket_key.is_none() {
        return error(
            400,
            "this route takes a websocket upgrade (GET with Upgrade: websocket)",
        )
        .into();
    }
    let identity = match authenticate(core, head).await {
        Ok(identity) => identity,
        Err(e) if e.is_authentication_failure() && !matches!(e, AuthError::Missing) => {
            let failure = LoginFailure {
                user: claimed_user(head),
                reason: e.metric_reason(),
            };
            return Answer::LoginFailed(auth_error(&e), failure);
        }
        Err(e) => return auth_error(&e).into(),
    };
    if route == Route::Ws {
        return Answer::Upgrade(identity);
    }
    track_api_connection(core, &request.watch, &identity).await;
    match handle(core, request, route, method, &identity).await {
        Ok(response) | Err(response) => response.into(),
    }
}

async fn handle(
    core: &Rc<Core>,
    request: &Request,
    route: Route,
    method: Method,
    identity: &Identity,
) -> Result<Response, Response> {
    let store = &core.shared.auth;
    let head = &request.head;
    match (route, method) {
        (Route::Events, Method::Post) => publish(core, request, identity).await,
        (Route::Events, _) => read_events(core, head, &identity.claims).await,
        (Route::Info, _) => Ok(Response::json(
            200,
            &crate::api::info::server_info(&core.shared, request.watch.local),
        )),
        (Route::InfoActivity, _) => Ok(crate::metrics::activity::response(
            &core.shared.activity,
            core.shared.activity_totals(),
            head,
        )),
        (Route::Metrics, _) => Ok(metrics_response(core)),
        (Route::Connections, _) => {
            require(identity, "connections", "list", "*")?;
            let principal = head.query("Principal");
            let kind = head.query("Type");
            let views: Vec<ConnectionView> = gather_connections(core)
                .await
                .into_iter()
                .filter(|v| principal.as_deref().is_none_or(|p| p == v.principal))
                .filter(|v| kind.as_deref().is_none_or(|k| k == v.kind))
                .collect();
            Ok(Response::json(200, &views))
        }
        (Route::Connection(addr), _) => {
            require(identity, "connections", "get", &addr)?;
            match gather_connections(core)
                .await
                .into_iter()
                .find(|v| v.remote_addr == addr)
            {
                Some(view) => Ok(Response::json(200, &view)),
                None => Err(Response::error(
                    ApiError::new(404, format!("no open connection from {addr}"))
                        .with_model("connections")
                        .with_key(addr),
                )),
            }
        }
        (Route::ConnectionHistory, _) => {
            require(identity, "connections", "list", "*")?;
            connection_history(core, head).await
        }
        (Route::AgentConnections(kind, uuid), _) => {
            require(identity, "connections", "list", "*")?;
            let object_kind = match kind {
                "machines" => crate::objects::Kind::Machines,
                "clusters" => crate::objects::Kind::Clusters,
                _ => crate::objects::Kind::ResourceBrokers,
            };
            let store = core.shared.objects.clone();
            let lookup = uuid.clone();
            let exists = monoio::spawn_blocking(move || store.contains(object_kind, &lookup)).await;
            if !matches!(exists, Ok(Ok(true))) {
                return Err(Response::error(
                    ApiError::new(404, format!("{kind} {uuid} does not exist"))
                        .with_model(kind)
                        .with_key(uuid),
                ));
            }
            let principal = format!("runner:{uuid}");
            let views: Vec<ConnectionView> = gather_connections(core)
                .await
                .into_iter()
                .filter(|v| v.principal == principal)
                .collect();
            Ok(Response::json(200, &views))
        }
        (Route::Users, Method::Get) => {
            require(identity, "users", "list", "*")?;
            Ok(Response::json(200, &store.list_users()))
        }
        (Route::Users, _) => crate::api::users::create_user(core, request, identity).await,
        (Route::User(name), method @ (Method::Put | Method::Patch)) => {
            crate::api::users::user(core, request, name, method, identity).await
        }
        (Route::Role(name), method @ (Method::Put | Method::Patch | Method::Delete)) => {
            crate::api::users::role(core, request, name, method, identity).await
        }
        (Route::User(name), Method::Get) => {
            require(identity, "users", "get", &name)?;
            Ok(Response::json(
                200,
                &store.get_user(&name).map_err(|e| auth_error(&e))?,
            ))
        }
        (Route::User(name), _) => crate::api::users::delete_user(core, name, identity).await,
        (Route::UserPassword(name), _) => {
            crate::api::users::set_password(core, request, name, identity).await
        }
        (Route::UserToken(name), _) => {
            if identity.user.as_deref() != Some(name.as_str()) {
                require(identity, "users", "token", &name)?;
            }
            let ttl =
                match head.query("ttl") {
                    None => TOKEN_TTL_DEFAULT,
                    Some(ttl) => Duration::from_secs(ttl.parse::<u64>().map_err(|_| {
                        error(400, format!("ttl {ttl:?} is not a number of seconds"))
                    })?),
                };
            let token = store.mint_token(&name, ttl).map_err(|e| auth_error(&e))?;
            let answer = crate::api::info::token_answer(&core.shared, request.watch.local, &token);
            Ok(Response::json(200, &answer))
        }
        (Route::Roles, Method::Get) => {
            require(identity, "roles", "list", "*")?;
            Ok(Response::json(200, &store.list_roles()))
        }
        (Route::Roles, _) => crate::api::users::create_role(core, request, identity).await,
        (Route::Role(name), _) => {
            require(identity, "roles", "get", &name)?;
            Ok(Response::json(
                200,
                &store.get_role(&name).map_err(|e| auth_error(&e))?,
            ))
        }
        (Route::Objects(route), method) => {
            crate::api::objects::handle(core, request, route, method, identity).await
        }
        (Route::Ws, _) => Err(error(400, "this route takes a websocket upgrade")),
    }
}

/// Starts tracking a keep-alive REST connection the first time a request on it authenticates;
/// its `connections.create` is queued for the log before the request can publish anything.
async fn track_api_connection(core: &Core, watch: &HttpWatch, identity: &Identity) {
    if watch.tracked.borrow().is_some() {
        return;
    }
    let view = ConnectionView {
        remote_addr: watch.remote.to_string(),
        principal: identity.principal.clone(),
        create_time: event::now_rfc3339(),
        expires_at: crate::core::conns::expires_at(identity.expires),
        kind: "api".to_owned(),
        filters: Vec::new(),
        events_sent: 0,
        bytes_sent: 0,
        last_seq: 0,
        close_time: None,
        close_reason: None,
    };
    let id = core.open_connection(view.clone()).await;
    *watch.tracked.borrow_mut() = Some((id, view));
}

/// Every core's live connections.
async fn gather_connections(core: &Core) -> Vec<ConnectionView> {
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
    views
}

/// Default and largest page of the connection history.
const HISTORY_PAGE_DEFAULT: usize = 100;
const HISTORY_PAGE_MAX: usize = 10_000;

async fn connection_history(core: &Core, head: &RequestHead) -> Result<Response, Response> {
    let principal = head.query("principal");
    let since = match head.query("since") {
        None => None,
        Some(text) => Some(humantime::parse_rfc3339_weak(&text).map_err(|_| {
            error(
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
                error(
                    400,
                    format!("limit must be between 1 and {HISTORY_PAGE_MAX}"),
                )
            })?,
    };
    let history = core.shared.history.clone();
    let listed =
        monoio::spawn_blocking(move || history.list(principal.as_deref(), since, limit)).await;
    match listed {
        Ok(Ok(views)) => Ok(Response::json(200, &views)),
        Ok(Err(e)) => Err(error(500, e.to_string())),
        Err(_) => Err(error(500, "the connection history could not be read")),
    }
}

fn metrics_response(core: &Core) -> Response {
    match &core.shared.metrics {
        Some(handle) => Response::empty(200).with_body(
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(&core.shared.scrape(), handle).into_bytes(),
        ),
        None => error(503, "metrics are unavailable in this process"),
    }
}

async fn publish(
    core: &Core,
    request: &Request,
    identity: &Identity,
) -> Result<Response, Response> {
    let mut body = request.body.clone();
    let events = event::parse_publish(&mut body, &identity.principal)
        .map_err(|e| error(400, e.to_string()))?;
    for event in &events {
        let specific = format!("{}.{}.{}", event.ty, event.action, event.key);
        if !identity.claims.allows("events", "post", &specific) {
            return Err(error_with(
                403,
                format!(
                    "{} lacks the claim events:post:{specific}",
                    identity.principal
                ),
            ));
        }
    }
    let last = core
        .shared
        .publisher
        .publish(events)
        .await
        .map_err(|e| error(503, e.to_string()))?;
    metrics::histogram!(crate::metrics::PUBLISH_DURATION)
        .record(request.received.elapsed().as_secs_f64());
    Ok(Response::no_content().with_header("Herald-Seq", last.to_string()))
}

async fn read_events(
    core: &Core,
    head: &RequestHead,
    claims: &std::sync::Arc<Claims>,
) -> Result<Response, Response> {
    let number = |name: &str, default: u64| -> Result<u64, Response> {
        match head.query(name) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().map_err(|_| {
                error(
                    400,
                    format!("{name} {v:?} is not a non-negative whole number"),
                )
            }),
        }
    };
    let since = number("since", 0)?;
    let limit = number("limit", EVENTS_PAGE_DEFAULT as u64)?;
    if limit == 0 || limit > EVENTS_PAGE_MAX as u64 {
        return Err(error(
            400,
            format!("limit must be between 1 and {EVENTS_PAGE_MAX}"),
        ));
    }
    let filter = match head.query("filter") {
        None => None,
        Some(text) => Some(Filter::parse(&text).map_err(|e| error(400, e.to_string()))?),
    };
    let mut body = b"[".to_vec();
    let mut next = since;
    let mut found = 0;
    let mut cursor = since;
    // Read in pages until the answer is full or the log is exhausted; filtered-out events are skipped.
    'read: loop {
        let reader = core.shared.log_reader.clone();
        let rows = match monoio::spawn_blocking(move || reader.read_after(cursor, EVENTS_PAGE_MAX))
            .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(error(500, e.to_string())),
            Err(_) => return Err(error(500, "the log read failed")),
        };
        let Some(&(last, _)) = rows.last() else {
            break;
        };
        cursor = last;
        for (seq, json) in rows {
            let Some(event) = event::EncodedEvent::from_stored(seq, &json) else {
                continue;
            };
            let visible =
                claims.is_superuser() || claims.may_see(&event.ty, &event.action, &event.key);
            let wanted = filter
                .as_ref()
                .is_none_or(|f| f.matches(&event.ty, &event.action, &event.key));
            if visible && wanted {
                if found > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&json);
                found += 1;
                next = seq;
                if found as u64 == limit {
                    break 'read;
                }
            }
        }
    }
    body.push(b']');
    Ok(Response::empty(200)
        .with_body("application/json", body)
        .with_header("Herald-Next-Since", next.to_string()))
}

//! The HTTP side of a connection: the request loop with its limits, authentication, and the
//! routing of `docs/protocol.md` §1 to one file per resource family. A websocket upgrade hands
//! the connection over to [`crate::core::connection`].
//!
//! - [`request`]: a request as the routes see it; [`error`]: the one error every route returns,
//!   converted from each area's (`?`), as DRP's error shape.
//! - [`events`], [`connections`], [`info`], [`metrics`](mod@metrics), [`ui`]: their routes.
//! - [`users`]: users, roles and their tokens; [`objects`]: profiles, params, machines, … (the
//!   store itself is [`crate::objects`]).
//!
//! Every route authorizes with [`Identity::require`]; a refusal is `AuthError::Forbidden`.

pub(crate) mod connections;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod info;
pub(crate) mod metrics;
pub(crate) mod objects;
pub(crate) mod request;
pub(crate) mod ui;
pub(crate) mod users;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use crate::api::error::ApiError;
use crate::api::request::Request;
use crate::auth::{self, AuthError, Check, FastAuth, Identity};
use crate::core::Core;
use crate::core::accept::ConnectionSlot;
use crate::core::connection;
use crate::core::conns::{Expiry, HttpWatch};
use crate::net::transport::Transport;
use crate::wire::http::{self, BodyKind, ChunkedDecoder, Head, Method, RequestHead, Response};

/// Serves one accepted TCP connection until it closes or becomes a websocket.
pub(crate) async fn serve(
    core: Rc<Core>,
    stream: TcpStream,
    remote: SocketAddr,
    slot: ConnectionSlot,
) {
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
        monoio::spawn(async move {
            // The websocket keeps its place under max_connections for its whole life.
            let _slot = slot;
            connection::run(core, read, write, fd, remote, identity, leftover).await;
        });
    }
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
        Answer::LoginFailed(response, failure) if response.status == 429 => {
            if let Some(suppressed) = crate::logging::THROTTLED_LOGINS.admit() {
                tracing::info!(
                    remote = %remote,
                    user = failure.user.as_deref(),
                    reason = response.error_message().unwrap_or_default(),
                    route,
                    suppressed = crate::logging::suppressed_field(suppressed),
                    "login throttled"
                );
            }
        }
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
    /// Users, roles and their tokens: see [`users`].
    Accounts(crate::api::users::Route),
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
            ["api", "v3", "users" | "roles", ..] => {
                Route::Accounts(crate::api::users::Route::parse(&s)?)
            }
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
            | Route::Metrics
            | Route::Connections
            | Route::ConnectionHistory
            | Route::Connection(_)
            | Route::AgentConnections(..) => &[Method::Get],
            Route::Events => &[Method::Get, Method::Post],
            Route::Accounts(route) => route.methods(),
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
            Route::Accounts(route) => route.template(),
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

/// A failed authentication; a 401 names the scheme to use, a 429 or 503 when to retry.
fn auth_error(error: AuthError) -> Response {
    let retry_after = match &error {
        AuthError::Throttled { retry_after, .. } => Some(*retry_after),
        // A 503 (Busy) names its retry in `Response::error`.
        _ => None,
    };
    let response = Response::error(ApiError::from(error));
    if response.status == 401 {
        response.with_header("WWW-Authenticate", "dr-provision")
    } else if let Some(seconds) = retry_after {
        response.with_header("Retry-After", seconds.to_string())
    } else {
        response
    }
}

/// Authenticates a request: the fast path inline, argon2 on the hash pool once the client's
/// address and the user name have failed-login budget left.
async fn authenticate(
    core: &Core,
    head: &RequestHead,
    remote: SocketAddr,
) -> Result<Identity, AuthError> {
    let token = head.query("token").or_else(|| head.query("Token"));
    let result = match auth::credentials(head.header("authorization"), token.as_deref()) {
        Ok(credentials) => check_credentials(core, credentials, remote).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &result
        && error.is_authentication_failure()
    {
        ::metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => error.metric_reason())
            .increment(1);
    }
    result
}

async fn check_credentials(
    core: &Core,
    credentials: auth::Credentials,
    remote: SocketAddr,
) -> Result<Identity, AuthError> {
    let auth = &core.shared.auth;
    let mut waited = false;
    let (user, _checking) = loop {
        let user = match (auth.authenticate_fast(&credentials), &credentials) {
            (FastAuth::Done(result), _) => return result,
            (FastAuth::NeedsHash, auth::Credentials::Basic { user, .. }) => user.clone(),
            (FastAuth::NeedsHash, auth::Credentials::Bearer(_)) => String::new(),
        };
        match auth.join_check(&credentials) {
            // Once: a check that failed leaves nothing cached, and this request checks its own.
            Some(Check::Wait(done)) if !waited => {
                let _ = done.recv_async().await;
                waited = true;
            }
            Some(Check::First(checking)) => break (user, Some(checking)),
            _ => break (user, None),
        }
    };
    // Checked before hashing, so a throttled guess costs no argon2 run.
    let throttle = &core.shared.login_throttle;
    let reservation = match throttle.reserve(remote.ip(), &user) {
        Ok(reservation) => reservation,
        Err((by, retry_after)) => {
            ::metrics::counter!(crate::metrics::AUTH_THROTTLED, "by" => by.as_str()).increment(1);
            return Err(AuthError::Throttled { by, retry_after });
        }
    };
    let store = auth.clone();
    let verified = core
        .shared
        .hash_pool
        .run(move || store.authenticate_slow(&credentials))
        .await;
    let result = verified.unwrap_or(Err(AuthError::Busy));
    // Only a wrong guess spends the budget; a good login or a full queue gives it back.
    if matches!(result, Err(AuthError::UnknownUser | AuthError::BadPassword)) {
        reservation.failed();
    }
    result
}

/// The user name a request's Basic credentials claim, for the log of a failed login.
fn claimed_user(head: &RequestHead) -> Option<String> {
    let token = head.query("token").or_else(|| head.query("Token"));
    match auth::credentials(head.header("authorization"), token.as_deref()) {
        Ok(auth::Credentials::Basic { user, .. }) => Some(user),
        _ => None,
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
        return crate::api::metrics::response(core).into();
    }
    if route == Route::Ws && head.websocket_key.is_none() {
        return error(
            400,
            "this route takes a websocket upgrade (GET with Upgrade: websocket)",
        )
        .into();
    }
    let identity = match authenticate(core, head, request.watch.remote).await {
        Ok(identity) => identity,
        Err(e)
            if (e.is_authentication_failure() && !matches!(e, AuthError::Missing))
                || matches!(e, AuthError::Throttled { .. }) =>
        {
            let failure = LoginFailure {
                user: claimed_user(head),
                reason: e.metric_reason(),
            };
            return Answer::LoginFailed(auth_error(e), failure);
        }
        Err(e) => return auth_error(e).into(),
    };
    if route == Route::Ws {
        return Answer::Upgrade(identity);
    }
    crate::api::connections::track(core, &request.watch, &identity).await;
    match handle(core, request, route, method, &identity).await {
        Ok(response) => response.into(),
        Err(error) => Response::error(error).into(),
    }
}

/// Hands an authenticated request to its resource family.
async fn handle(
    core: &Rc<Core>,
    request: &Request,
    route: Route,
    method: Method,
    identity: &Identity,
) -> Result<Response, ApiError> {
    let head = &request.head;
    match (route, method) {
        (Route::Events, Method::Post) => crate::api::events::publish(core, request, identity).await,
        (Route::Events, _) => crate::api::events::read(core, head, &identity.claims).await,
        (Route::Info, _) => Ok(crate::api::info::response(&request.server_facts(core))),
        (Route::InfoActivity, _) => Ok(crate::metrics::activity::response(
            &core.shared.activity,
            core.shared.activity_totals(),
            head,
        )),
        (Route::Metrics, _) => Ok(crate::api::metrics::response(core)),
        (Route::Connections, _) => crate::api::connections::list(core, head, identity).await,
        (Route::Connection(addr), _) => crate::api::connections::one(core, addr, identity).await,
        (Route::ConnectionHistory, _) => {
            crate::api::connections::history(core, head, identity).await
        }
        (Route::AgentConnections(kind, uuid), _) => {
            crate::api::connections::of_agent(core, kind, uuid, identity).await
        }
        (Route::Accounts(route), method) => {
            crate::api::users::handle(core, request, route, method, identity).await
        }
        (Route::Objects(route), method) => {
            crate::api::objects::handle(core, request, route, method, identity).await
        }
        (Route::Ws, _) => Err(ApiError::new(400, "this route takes a websocket upgrade")),
    }
}

//! `POST /api/v3/events` publishes, `GET /api/v3/events` reads the log back (`docs/protocol.md`
//! §1): each event checked against the caller's claims.

use std::sync::Arc;

use crate::api::error::ApiError;
use crate::api::request::Request;
use crate::auth::{Claims, Identity};
use crate::core::Core;
use crate::wire::event;
use crate::wire::filter::Filter;
use crate::wire::http::{RequestHead, Response};

/// Default and largest page of `GET /api/v3/events`.
const EVENTS_PAGE_DEFAULT: usize = 1000;
const EVENTS_PAGE_MAX: usize = 10_000;

/// `POST /api/v3/events`: one event or a list, each needing `events:post:type.action.key`.
pub(crate) async fn publish(
    core: &Core,
    request: &Request,
    identity: &Identity,
) -> Result<Response, ApiError> {
    let mut body = request.body.clone();
    let events = event::parse_publish(&mut body, &identity.principal)?;
    for event in &events {
        let specific = format!("{}.{}.{}", event.ty, event.action, event.key);
        identity.require("events", "post", &specific)?;
    }
    let last = core.shared.publisher.publish(events).await?;
    crate::metrics::publish_duration().record(request.received.elapsed().as_secs_f64());
    Ok(Response::no_content().with_header("Herald-Seq", last.to_string()))
}

/// `GET /api/v3/events?since=&limit=&filter=`: the events after `since` the caller may see.
pub(crate) async fn read(
    core: &Core,
    head: &RequestHead,
    claims: &Arc<Claims>,
) -> Result<Response, ApiError> {
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match head.query(name) {
            None => Ok(default),
            Some(v) => v.parse::<u64>().map_err(|_| {
                ApiError::new(
                    400,
                    format!("{name} {v:?} is not a non-negative whole number"),
                )
            }),
        }
    };
    let since = number("since", 0)?;
    let limit = number("limit", EVENTS_PAGE_DEFAULT as u64)?;
    if limit == 0 || limit > EVENTS_PAGE_MAX as u64 {
        return Err(ApiError::new(
            400,
            format!("limit must be between 1 and {EVENTS_PAGE_MAX}"),
        ));
    }
    let filter = match head.query("filter") {
        None => None,
        Some(text) => Some(Filter::parse(&text)?),
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
            Ok(rows) => rows?,
            Err(_) => return Err(ApiError::new(500, "the log read failed")),
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

//! `GET /metrics`: the Prometheus exposition (`docs/protocol.md` §1).

use crate::api::error::ApiError;
use crate::core::Core;
use crate::wire::http::Response;

/// The exposition, or 503 when this process did not install the recorder.
pub(crate) fn response(core: &Core) -> Response {
    match &core.shared.metrics {
        Some(handle) => Response::empty(200).with_body(
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(&core.shared.scrape(), handle).into_bytes(),
        ),
        None => Response::error(ApiError::new(
            503,
            "metrics are unavailable in this process",
        )),
    }
}

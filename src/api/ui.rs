//! The web console: plain HTML, CSS and JavaScript modules from `src/ui/`, embedded in the binary
//! when it is built and served at `/ui/` (`/` redirects there) with a strict
//! Content-Security-Policy. Nothing is fetched from elsewhere: the page talks only to the REST
//! routes and the websocket of the herald that served it, with a token it keeps for the session.

use crate::wire::http::{ApiError, Method, RequestHead, Response};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// FNV-1a of the body, the file's ETag.
    hash: u64,
}

/// FNV-1a, computed at compile time: the ETag changes exactly when a file does.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../ui/", $name)),
            hash: fnv1a(include_bytes!(concat!("../ui/", $name))),
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// Every file of the console; `index.html` answers `/ui/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("icon.svg", SVG),
    asset!("app.js", JS),
    asset!("session.js", JS),
    asset!("stream.js", JS),
    asset!("stream-worker.js", JS),
    asset!("filter.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("events.js", JS),
    asset!("connections.js", JS),
    asset!("health.js", JS),
    asset!("objects.js", JS),
];

/// Where `/` and `/ui` send a browser.
pub(crate) const CONSOLE_PATH: &str = "/ui/";

/// The route templates console requests are counted under.
const ROOT_TEMPLATE: &str = "/";
const FILE_TEMPLATE: &str = "/ui/{file}";

/// The longest `Host` value copied into the policy; longer ones are left out of it.
const MAX_HOST_BYTES: usize = 255;

/// The answer to a console path (`/`, `/ui`, `/ui/…`) with its metrics template, or `None`
/// for any other path.
pub(crate) fn answer(
    head: &RequestHead,
    segments: &[String],
    tls: bool,
) -> Option<(Response, &'static str)> {
    let template = match segments {
        [] => ROOT_TEMPLATE,
        [first, ..] if first == "ui" => FILE_TEMPLATE,
        _ => return None,
    };
    if !matches!(head.method, Method::Get | Method::Head) {
        let response = Response::error(ApiError::new(
            405,
            format!("{} is not allowed on {}", head.method.as_str(), head.path()),
        ))
        .with_header("Allow", "GET, HEAD");
        return Some((response, template));
    }
    let response = match segments {
        [] | [_] => Response::empty(302).with_header("Location", CONSOLE_PATH),
        [_, name] => {
            let name = if name.is_empty() { "index.html" } else { name };
            match ASSETS.iter().find(|asset| asset.name == name) {
                Some(asset) => serve(head, asset),
                None => not_found(head),
            }
        }
        _ => not_found(head),
    };
    Some((secured(response, head, tls), template))
}

fn not_found(head: &RequestHead) -> Response {
    Response::error(ApiError::new(
        404,
        format!("the console has no file {}", head.path()),
    ))
}

/// The file, or 304 when the browser's copy is current.
fn serve(head: &RequestHead, asset: &Asset) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let fresh = head.headers("if-none-match").any(|value| {
        value.split(|b| *b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
            tag == b"*" || tag == etag.as_bytes()
        })
    });
    let response = if fresh {
        // A browser refreshes its stored headers from a 304's, so it names the file's type too.
        Response::empty(304).with_header("Content-Type", asset.content_type)
    } else {
        Response::empty(200).with_body(asset.content_type, asset.body.to_vec())
    };
    // Revalidated on every load: a herald upgrade changes the files under the same names.
    response
        .with_header("ETag", etag)
        .with_header("Cache-Control", "no-cache")
}

/// Adds the Content-Security-Policy and the other headers every console answer carries.
fn secured(response: Response, head: &RequestHead, tls: bool) -> Response {
    response
        .with_header("Content-Security-Policy", policy(head, tls))
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("Cross-Origin-Opener-Policy", "same-origin")
}

/// Only this origin's files, REST routes and websocket; no inline script or style, no framing,
/// and no form that could send the password anywhere if the script failed to load.
fn policy(head: &RequestHead, tls: bool) -> String {
    let mut connect = "'self'".to_owned();
    // The websocket's origin is named as well, for browsers whose 'self' does not cover ws(s).
    if let Some(host) = head
        .header_str("host")
        .map(str::trim)
        .filter(|h| valid_host(h))
    {
        connect.push_str(if tls { " wss://" } else { " ws://" });
        connect.push_str(host);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// A host name or address with an optional port, nothing that could change the policy's meaning.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_listed_once_and_has_content() {
        for (i, asset) in ASSETS.iter().enumerate() {
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
            assert!(
                ASSETS
                    .iter()
                    .skip(i + 1)
                    .all(|other| other.name != asset.name),
                "{} is listed twice",
                asset.name
            );
        }
    }

    #[test]
    fn the_page_loads_only_files_of_its_own_origin() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            for scheme in ["http://", "https://"] {
                // The SVG names its XML namespace, which is an identifier, not a request.
                let allowed = text.matches("http://www.w3.org/2000/svg").count();
                assert!(
                    text.matches(scheme).count() <= allowed,
                    "{} refers to another origin ({scheme})",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn a_host_that_could_change_the_policy_is_left_out() {
        assert!(valid_host("127.0.0.1:8092"));
        assert!(valid_host("[::1]:8092"));
        assert!(valid_host("herald.example.org"));
        assert!(!valid_host("evil; script-src *"));
        assert!(!valid_host("a b"));
        assert!(!valid_host(""));
        assert!(!valid_host(&"a".repeat(MAX_HOST_BYTES + 1)));
    }
}

//! REST requests to a herald server with ureq, and the TLS and credential setup that the
//! websocket watcher shares.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

use super::{CliError, Connection};

/// How long a REST request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a non-JSON error body is quoted in a message.
const QUOTED_BODY_BYTES: usize = 200;

/// Characters escaped in a path segment: everything that would end or change the segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// `/api/v3/{ty}/{key}/{rest…}` with the key and each further segment escaped.
pub(super) fn object_path(ty: &str, key: &str, rest: &[&str]) -> String {
    let mut path = format!("/api/v3/{ty}/{}", utf8_percent_encode(key, SEGMENT));
    for segment in rest {
        path.push('/');
        path.extend(utf8_percent_encode(segment, SEGMENT));
    }
    path
}

/// A server's address as the clients need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether to speak TLS (`https`).
    pub tls: bool,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// `scheme://host:port`, without a trailing slash.
    pub base: String,
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/]`.
    pub fn parse(text: &str) -> Result<Endpoint, CliError> {
        let bad = |why: &str| {
            CliError::Usage(format!(
                "endpoint {text:?} {why}; use a URL like https://127.0.0.1:8092"
            ))
        };
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("does not start with https:// or http://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') || authority.contains('?') || authority.contains('@') {
            return Err(bad("must name only a host and port, no path"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad("has a bad port"))?,
            None if tls => 443,
            None => 80,
        };
        let mut endpoint = Endpoint {
            tls,
            host: host.to_owned(),
            port,
            base: String::new(),
        };
        let scheme = if tls { "https" } else { "http" };
        endpoint.base = format!("{scheme}://{}", endpoint.authority());
        Ok(endpoint)
    }

    /// `host:port`, with an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A blocking client of one herald server.
pub struct Client {
    endpoint: Endpoint,
    agent: ureq::Agent,
    authorization: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client for the server and credentials `connection` names.
    pub fn new(connection: &Connection) -> Result<Client, CliError> {
        let endpoint = Endpoint::parse(&connection.endpoint)?;
        let authorization = match &connection.token {
            Some(token) => format!("Bearer {token}"),
            None => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", connection.username, connection.password))
            ),
        };
        let ca = match &connection.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the CA certificate {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let mut tls_config = ureq::tls::TlsConfig::builder();
        if connection.insecure {
            tls_config = tls_config.disable_verification(true);
        } else if let Some(pem) = &ca {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(CliError::Usage(
                    "the CA file holds no PEM certificate".into(),
                ));
            }
            tls_config = tls_config.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls_config.build())
            .build()
            .new_agent();
        let tls = if endpoint.tls {
            Some(rustls_config(connection.insecure, ca.as_deref())?)
        } else {
            None
        };
        Ok(Client {
            endpoint,
            agent,
            authorization,
            tls,
        })
    }

    /// The server's address.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The `Authorization` header value this client sends.
    pub fn authorization(&self) -> &str {
        &self.authorization
    }

    /// The rustls setup for a TLS endpoint (`None` for plain http).
    pub fn tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// Sends one request; answers the JSON body (`null` when there is none).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        self.call_with_headers(method, path, body)
            .map(|(value, _)| value)
    }

    /// Like [`Client::call`], also answering the response's headers.
    pub fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(Value, ureq::http::HeaderMap), CliError> {
        let url = format!("{}{path}", self.endpoint.base);
        let builder = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", &self.authorization)
            .header("Accept", "application/json");
        let request = match body {
            Some(body) => builder
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(body).unwrap_or_default())
                .map(|r| self.agent.run(r)),
            None => builder
                .body(ureq::SendBody::none())
                .map(|r| self.agent.run(r)),
        };
        let mut response = request
            .map_err(|e| CliError::Usage(format!("cannot build the request for {url}: {e}")))?
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.unreachable(&e))?;
        if status >= 400 {
            return Err(CliError::Refused {
                method: method.to_owned(),
                path: path.to_owned(),
                status,
                messages: error_messages(status, &text),
            });
        }
        let headers = response.headers().clone();
        if text.trim().is_empty() {
            return Ok((Value::Null, headers));
        }
        let value = serde_json::from_str(&text).map_err(|e| CliError::BadAnswer {
            method: method.to_owned(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok((value, headers))
    }

    /// The error for a failed connection, with a hint for the usual causes.
    pub(super) fn unreachable(&self, error: &dyn std::fmt::Display) -> CliError {
        let text = error.to_string();
        let lower = text.to_ascii_lowercase();
        let authority = self.endpoint.authority();
        let hint = if lower.contains("refused") {
            "; is herald running there? (set --endpoint or HERALD_ENDPOINT)".to_owned()
        } else if self.endpoint.tls && speaks_plain(&lower) {
            format!(
                "; the server does not speak TLS there (started with --plain?): use \
                 http://{authority}"
            )
        } else if self.endpoint.tls && is_certificate_refusal(&lower) {
            self.certificate_hint(lower.contains("not valid for name"))
        } else if !self.endpoint.tls && cut_off(&lower) {
            format!(
                "; if the server speaks TLS (herald does unless started with --plain), use https://{authority}"
            )
        } else {
            String::new()
        };
        CliError::Unreachable {
            endpoint: self.endpoint.base.clone(),
            reason: format!("{text}{hint}"),
        }
    }

    /// Whether a failed connection is worth retrying: not when the server's certificate is not
    /// trusted, nor when it does not speak TLS where the endpoint says https.
    pub(super) fn may_succeed_later(&self, error: &str) -> bool {
        let lower = error.to_ascii_lowercase();
        !(self.endpoint.tls && (is_certificate_refusal(&lower) || speaks_plain(&lower)))
    }

    /// What to do about a certificate that failed verification, naming the names it holds.
    fn certificate_hint(&self, wrong_name: bool) -> String {
        let host = &self.endpoint.host;
        let held = match presented_names(&self.endpoint) {
            Some(names) if !names.is_empty() => names.join(", "),
            Some(_) => "no names".to_owned(),
            None => "names this client could not read".to_owned(),
        };
        if wrong_name {
            format!(
                "; the certificate holds {held}, not {host}: connect by one of those, or start \
                 herald with --tls-san {host} (and trust its new tls/cert.pem)"
            )
        } else {
            format!(
                "; the server's certificate (for {held}) is not trusted: pass --ca-cert with \
                 herald's tls/cert.pem, or --insecure"
            )
        }
    }
}

/// Whether a TLS failure reads like a server answering in plain HTTP.
fn speaks_plain(lower: &str) -> bool {
    [
        "corrupt message",
        "invalidcontenttype",
        "invalid content type",
        "wrong version number",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
}

/// Whether a plain HTTP request was cut off the way a TLS server cuts one off.
fn cut_off(lower: &str) -> bool {
    [
        "connection reset",
        "unexpected eof",
        "connection closed",
        "closed before",
    ]
    .iter()
    .any(|sign| lower.contains(sign))
}

/// How long the look at a server's certificate may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The names the server's certificate holds, read by a handshake that accepts any certificate
/// and sends nothing; `None` when the handshake fails.
fn presented_names(endpoint: &Endpoint) -> Option<Vec<String>> {
    use std::net::ToSocketAddrs as _;
    let addr = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let mut tcp = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    tcp.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    tcp.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(AnyCertificate::new(provider.clone()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(endpoint.host.clone()).ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).ok()?;
    }
    let der = capture.seen.lock().ok()?.clone()?;
    crate::net::tls::certificate_names(&der).ok()
}

/// Whether a connection failed because the server's certificate is not trusted.
fn is_certificate_refusal(lower: &str) -> bool {
    lower.contains("certificate") || lower.contains("issuer")
}

/// The messages of a DRP-shaped error body, or the body itself.
pub(super) fn error_messages(status: u16, body: &str) -> Vec<String> {
    let parsed: Option<Vec<String>> = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.get("Messages")?.as_array().map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    });
    match parsed {
        Some(messages) if !messages.is_empty() => messages,
        _ if body.trim().is_empty() => vec![format!("HTTP status {status}")],
        _ => {
            let mut end = body.len().min(QUOTED_BODY_BYTES);
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            vec![body[..end].trim().to_owned()]
        }
    }
}

/// The rustls client setup for the websocket: the given CA, or the public web roots, or (with
/// `--insecure`) any certificate, still checking the handshake's signatures.
fn rustls_config(insecure: bool, ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Usage(format!("TLS setup failed: {e}")))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(pem) => {
                use rustls::pki_types::pem::PemObject as _;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|e| CliError::Usage(format!("the CA file is not PEM: {e}")))?;
                    roots.add(cert).map_err(|e| {
                        CliError::Usage(format!("the CA certificate is unusable: {e}"))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any server certificate, but still verifies handshake signatures. It
/// keeps the last certificate it accepted, so a failed verification can say what it held.
#[derive(Debug)]
pub struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<CertificateDer<'static>>>,
}

impl AnyCertificate {
    /// A verifier that checks signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> AnyCertificate {
        AnyCertificate {
            provider,
            seen: Mutex::new(None),
        }
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A websocket's byte stream, plain or TLS.
pub enum Stream {
    /// ws://
    Plain(TcpStream),
    /// wss://
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket under it, for timeouts.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_default_ports_and_ipv6_hosts() {
        let parse = |text| Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let e = parse("https://127.0.0.1:8092");
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "127.0.0.1", 8092));
        assert_eq!(parse("http://localhost/").base, "http://localhost:80");
        let v6 = parse("https://[::1]:9000");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.base.as_str()),
            ("::1", 9000, "https://[::1]:9000")
        );
        for bad in [
            "127.0.0.1:8092",
            "ftp://x",
            "https://",
            "https://h:port",
            "https://h:1/api",
            "https://[::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_paths_escape_keys_and_params() {
        assert_eq!(
            object_path("profiles", "global", &["params", "bar"]),
            "/api/v3/profiles/global/params/bar"
        );
        assert_eq!(
            object_path("profiles", "a b?", &[]),
            "/api/v3/profiles/a%20b%3F"
        );
        assert_eq!(
            object_path("machines", "u", &["params", "esxi/opt"]),
            "/api/v3/machines/u/params/esxi%2Fopt"
        );
    }

    #[test]
    fn error_bodies_give_their_messages_or_a_short_quote() {
        let drp = r#"{"Model":"","Key":"","Type":"NOT_FOUND","Messages":["profiles \"x\" does not exist"],"Code":404}"#;
        assert_eq!(
            error_messages(404, drp),
            vec!["profiles \"x\" does not exist".to_owned()]
        );
        assert_eq!(error_messages(502, ""), vec!["HTTP status 502".to_owned()]);
        let long = "é".repeat(300);
        assert!(error_messages(500, &long)[0].len() <= QUOTED_BODY_BYTES);
    }
}

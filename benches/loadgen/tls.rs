//! The TLS client setup for `--tls`: herald's generated certificate is self-signed, and on
//! loopback there is nobody to impersonate it, so the load generator accepts any certificate
//! while still doing the full handshake and record encryption the server pays for.

use std::sync::Arc;

use herald::cli::AnyCertificate;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

/// A client configuration for loopback benchmarks against a self-signed server.
pub(crate) fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider)))
                .with_no_client_auth()
        });
    match config {
        Ok(config) => Arc::new(config),
        Err(error) => panic!("the ring provider supports no default TLS version: {error}"),
    }
}

/// The name the client presents; herald's generated certificate does not need to match it.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

//! TLS from the client side: trusting exactly the generated certificate.

use std::net::TcpStream;
use std::sync::Arc;

use super::Server;

impl Server {
    /// A TLS handshake with the server, trusting only its generated certificate and asking for
    /// `name` (a DNS name or an IP address); `Err` says why it failed (TLS servers only).
    pub fn tls_handshake_as(&self, name: &str) -> Result<(), String> {
        self.tls_session_as(name).map(drop)
    }

    /// A connection whose TLS handshake is complete and that has sent no request yet, kept open
    /// for as long as the caller holds it (TLS servers only).
    pub fn tls_session_as(
        &self,
        name: &str,
    ) -> Result<(rustls::ClientConnection, TcpStream), String> {
        let config = self.tls.clone().expect("a TLS server");
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("{name} is not a server name: {e}"))?;
        let mut connection =
            rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
        let mut tcp = self.connect_tcp();
        while connection.is_handshaking() {
            connection
                .complete_io(&mut tcp)
                .map_err(|e| e.to_string())?;
        }
        Ok((connection, tcp))
    }
}

/// A rustls client config that trusts exactly this PEM certificate.
pub(super) fn rustls_config_trusting(pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.expect("the generated certificate is PEM"))
            .expect("the generated certificate is a usable trust anchor");
    }
    assert!(!roots.is_empty(), "cert.pem holds no certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

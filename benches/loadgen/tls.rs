//! The TLS setup for `--tls`: one certificate for 127.0.0.1 and localhost, generated per run and
//! served by herald and NATS alike, which the clients verify as their only trusted root. So both
//! servers pay for the same handshake, key type and record encryption.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::server::TlsFiles;

/// The run's certificate and key, as PEM files in a temporary directory removed with it.
pub(crate) struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

impl Certificate {
    /// A new self-signed certificate for the loopback address the servers listen on.
    pub(crate) fn generate() -> Result<Certificate, String> {
        let failed = |e: rcgen::Error| format!("generating the TLS certificate: {e}");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(failed)?;
        let key_pair = rcgen::KeyPair::generate().map_err(failed)?;
        let cert = params.self_signed(&key_pair).map_err(failed)?;
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        for (path, pem) in [
            (&cert_path, cert.pem()),
            (&key_path, key_pair.serialize_pem()),
        ] {
            std::fs::write(path, pem).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(Certificate {
            cert: cert_path,
            key: key_path,
            der: cert.der().clone(),
            _dir: dir,
        })
    }

    /// The PEM files, for `herald --tls-cert/--tls-key` and NATS's websocket `tls {}` block.
    pub(crate) fn files(&self) -> TlsFiles<'_> {
        TlsFiles {
            cert: &self.cert,
            key: &self.key,
        }
    }

    /// A client configuration that trusts this certificate alone and verifies it as usual.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der.clone())
            .map_err(|e| format!("trusting the generated certificate: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("the ring provider supports no default TLS version: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The name the clients verify: the address both servers listen on.
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

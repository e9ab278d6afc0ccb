//! The server certificate (configured PEM files, or self-signed) and the rustls server setup
//! built from it.
//!
//! The self-signed pair lives in `<data_dir>/tls/` (mode 0700) as `cert.pem` (0644) and
//! `key.pem` (0600). Both are written to a temporary file and renamed, key first, so a crash
//! leaves either a complete pair or a pair that is regenerated on the next start. It is valid
//! for localhost, the loopback addresses, the host name, every local interface address and the
//! names from `--tls-san`; a start that needs a name the stored certificate lacks (a new
//! interface address, a new `--tls-san`) generates a new pair.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsMode;

/// Directory under the data directory that holds the self-signed pair.
pub(crate) const TLS_DIR: &str = "tls";
/// File name of the self-signed certificate.
pub(crate) const CERT_FILE: &str = "cert.pem";
/// File name of the self-signed private key.
pub(crate) const KEY_FILE: &str = "key.pem";
/// Common name of the self-signed certificate, so a user who inspects it knows where it came from.
const SELF_SIGNED_NAME: &str = "herald self-signed";

/// Why the listener's TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        cause: io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{} holds no certificate: expected a -----BEGIN CERTIFICATE----- block", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// A key file holds no PEM private key.
    #[error(
        "{} holds no private key: expected a -----BEGIN PRIVATE KEY----- (or RSA/EC PRIVATE KEY) block",
        path.display()
    )]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// A PEM file is damaged (bad base64, a missing END line…).
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader found wrong.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the pair (an unparsable certificate, an unsupported key type…).
    #[error("cannot use certificate {} with key {}: {reason}", cert.display(), key.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// The stored self-signed pair is unusable; deleting it makes herald generate a new one.
    #[error("{cause}; delete {} to have herald generate a new self-signed certificate", dir.display())]
    BrokenSelfSigned {
        /// The directory holding the pair.
        dir: PathBuf,
        /// What is wrong with it.
        cause: Box<TlsError>,
    },
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {reason}")]
    Generate {
        /// rcgen's reason.
        reason: String,
    },
    /// Writing the self-signed certificate, key or their directory failed.
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why writing failed.
        cause: io::Error,
    },
}

/// None for Plain; otherwise a rustls ServerConfig (ring provider, safe default protocol
/// versions, ALPN http/1.1) from the configured PEM files, or from a self-signed certificate kept
/// in `<data_dir>/tls/{cert.pem,key.pem}`: generated with rcgen when missing or lacking one of
/// [`self_signed_names`] (`extra_names` included), reused otherwise.
pub(crate) fn server_config(
    mode: &TlsMode,
    data_dir: &Path,
    extra_names: &[String],
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let config = match mode {
        TlsMode::Plain => return Ok(None),
        TlsMode::Files { cert, key } => {
            warn_if_key_is_readable_by_others(key);
            build(cert, key)?
        }
        TlsMode::SelfSigned => {
            let dir = data_dir.join(TLS_DIR);
            let (cert, key) = ensure_self_signed(&dir, &self_signed_names(extra_names))?;
            build(&cert, &key).map_err(|cause| TlsError::BrokenSelfSigned {
                dir,
                cause: Box::new(cause),
            })?
        }
    };
    Ok(Some(Arc::new(config)))
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether the first bytes a client sent to the TLS port are a plain HTTP request (they start
/// with a method's capital letter) rather than a TLS handshake.
pub(crate) fn is_plain_http(first_bytes: &[u8]) -> bool {
    first_bytes
        .first()
        .is_some_and(|&b| b != TLS_HANDSHAKE_RECORD && b.is_ascii_uppercase())
}

/// A complete plain HTTP `400` answer for a plain HTTP request sent to the TLS port, with the
/// https:// (or wss://) URL to use instead when the request names its host.
pub(crate) fn plain_http_refusal(request: &[u8]) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    // A head cut short by the first read still names its path and usually its host.
    let _ = parsed.parse(request);
    let host = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .filter(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let path = parsed.path.filter(|p| p.starts_with('/')).unwrap_or("/");
    let scheme = if path.starts_with("/api/v3/ws") {
        "wss"
    } else {
        "https"
    };
    let message = match host {
        Some(host) => format!(
            "this port speaks HTTPS, not plain HTTP: use {scheme}://{host}{path} (http:// and \
             ws:// work only against a server started with --plain)"
        ),
        None => format!(
            "this port speaks HTTPS, not plain HTTP: use {scheme}:// (http:// and ws:// work \
             only against a server started with --plain)"
        ),
    };
    let mut out = Vec::new();
    crate::wire::http::Response::error(crate::wire::http::ApiError::new(400, message))
        .encode(false, false, &mut out);
    out
}

/// Loads a certificate chain and key and builds the rustls server configuration.
fn build(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let rejected = |error: rustls::Error| match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            }
        }
        other => TlsError::Rejected {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: other.to_string(),
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rejected)?;
    // herald speaks HTTP/1.1 only (websockets upgrade from it); h2 must not be offered.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let no_items = || TlsError::NoCertificate {
        path: path.to_owned(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e, no_items))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e, no_items))?;
    if certs.is_empty() {
        return Err(no_items());
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        pem_error(path, e, || TlsError::NoPrivateKey {
            path: path.to_owned(),
        })
    })
}

fn pem_error(path: &Path, error: pem::Error, no_items: impl FnOnce() -> TlsError) -> TlsError {
    match error {
        pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            cause: source,
        },
        pem::Error::NoItemsFound => no_items(),
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Returns the paths of the self-signed pair in `dir`, generating it when it is not complete or
/// its certificate lacks one of `names`.
fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join(CERT_FILE);
    let key = dir.join(KEY_FILE);
    let exists = |path: &Path| {
        path.try_exists().map_err(|source| TlsError::Read {
            path: path.to_owned(),
            cause: source,
        })
    };
    match (exists(&cert)?, exists(&key)?) {
        (true, true) => {
            // An unreadable certificate is left to `build`, whose error says how to recover.
            let Ok(held) = load_certs(&cert).and_then(|certs| {
                certificate_names(&certs[0]).map_err(|reason| TlsError::BadPem {
                    path: cert.clone(),
                    reason,
                })
            }) else {
                return Ok((cert, key));
            };
            let missing: Vec<&str> = names
                .iter()
                .filter(|name| !held.iter().any(|h| same_name(h, name)))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                return Ok((cert, key));
            }
            tracing::warn!(
                cert = %cert.display(),
                "the self-signed certificate lacks {}; generating a new one (clients that \
                 trusted the old certificate must trust the new one)",
                missing.join(", ")
            );
        }
        (false, false) => {}
        // A crash between the two renames, or a file deleted by hand: the pair is useless.
        _ => tracing::warn!(
            dir = %dir.display(),
            "the self-signed certificate or its key is missing; generating a new pair"
        ),
    }

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            cause: source,
        })?;
    let (cert_pem, key_pem) = generate_self_signed(names)?;
    // Key first: a certificate on disk then always has its key next to it.
    write_atomically(&key, key_pem.as_bytes(), 0o600)?;
    write_atomically(&cert, cert_pem.as_bytes(), 0o644)?;
    sync_dir(dir)?;
    tracing::info!(
        cert = %cert.display(),
        "generated a self-signed TLS certificate for {}; clients must trust it or skip \
         verification",
        names.join(", ")
    );
    Ok((cert, key))
}

/// The names a self-signed certificate must hold: localhost, the loopback addresses, the host
/// name, every local interface address (link-local ones aside) and `extra`, without repeats.
pub(crate) fn self_signed_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(crate::config::host_name());
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => names.extend(interfaces.iter().map(|i| i.ip().to_string())),
        Err(error) => tracing::warn!(
            %error,
            "cannot list this machine's interface addresses, so the self-signed certificate \
             holds none of them; name them with --tls-san"
        ),
    }
    names.extend(extra.iter().cloned());
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.iter().any(|u| same_name(u, &name)) {
            unique.push(name);
        }
    }
    unique
}

/// The DNS names and IP addresses a certificate (DER) is valid for, from its subjectAltName.
pub(crate) fn certificate_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let Some(san) = cert.subject_alternative_name().map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect())
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Whether two certificate names are the same: IP addresses by value (`::1` is
/// `0:0:0:0:0:0:0:1`), DNS names without regard to case.
fn same_name(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// A new certificate and key, both PEM, valid for `names` (DNS names or IP addresses).
fn generate_self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate {
        reason: e.to_string(),
    };
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SELF_SIGNED_NAME);
    let key_pair = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key_pair).map_err(generate)?;
    Ok((cert.pem(), key_pair.serialize_pem()))
}

/// Writes `bytes` to `path` through a temporary file created with `mode`, so the file never
/// exists with looser permissions or partial content.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |cause| TlsError::Write { path, cause }
    };
    let temp = path.with_extension("pem.tmp");
    // A temporary file left by a crash may have any mode; create_new below must make a fresh one.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(&temp)(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(failed(&temp))?;
    file.write_all(bytes).map_err(failed(&temp))?;
    file.sync_all().map_err(failed(&temp))?;
    fs::rename(&temp, path).map_err(failed(path))
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            cause: source,
        })
}

fn warn_if_key_is_readable_by_others(key: &Path) {
    if let Ok(meta) = fs::metadata(key)
        && meta.mode() & 0o077 != 0
    {
        tracing::warn!(
            key = %key.display(),
            mode = format!("{:o}", meta.mode() & 0o777),
            "the TLS private key is readable by other users; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Writes a freshly generated pair into `dir` under `name` and returns (cert, key) paths.
    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert_pem, key_pem) = generate_self_signed(&["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}-cert.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        fs::write(&cert, cert_pem).unwrap();
        fs::write(&key, key_pem).unwrap();
        (cert, key)
    }

    fn files(cert: &Path, key: &Path) -> TlsMode {
        TlsMode::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }
    }

    fn error_for(mode: &TlsMode, data_dir: &Path) -> TlsError {
        match server_config(mode, data_dir, &[]) {
            Ok(_) => panic!("{mode:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_mode_has_no_tls_config_and_writes_nothing() {
        let data = tempfile::tempdir().unwrap();
        assert!(
            server_config(&TlsMode::Plain, data.path(), &[])
                .unwrap()
                .is_none()
        );
        assert_eq!(fs::read_dir(data.path()).unwrap().count(), 0);
    }

    #[test]
    fn self_signed_is_generated_with_a_private_key_file_and_offers_http_1_1() {
        let data = tempfile::tempdir().unwrap();
        let config = server_config(&TlsMode::SelfSigned, data.path(), &[])
            .unwrap()
            .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let dir = data.path().join(TLS_DIR);
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join(KEY_FILE)), 0o600);
        assert!(!dir.join("key.pem.tmp").exists());
        assert!(!dir.join("cert.pem.tmp").exists());
    }

    #[test]
    fn self_signed_is_reused_on_the_next_start() {
        let data = tempfile::tempdir().unwrap();
        let cert = data.path().join(TLS_DIR).join(CERT_FILE);
        let key = data.path().join(TLS_DIR).join(KEY_FILE);
        server_config(&TlsMode::SelfSigned, data.path(), &[]).unwrap();
        let first = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());
        server_config(&TlsMode::SelfSigned, data.path(), &[]).unwrap();
        let second = (fs::read(&cert).unwrap(), fs::read(&key).unwrap());
        assert_eq!(first, second);
    }

    #[test]
    fn self_signed_certificate_names_herald_as_its_subject() {
        let data = tempfile::tempdir().unwrap();
        server_config(&TlsMode::SelfSigned, data.path(), &[]).unwrap();
        let cert =
            CertificateDer::from_pem_file(data.path().join(TLS_DIR).join(CERT_FILE)).unwrap();
        let der = cert.as_ref();
        let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
        assert!(contains(SELF_SIGNED_NAME.as_bytes()));
    }

    /// Runs a TLS handshake in memory from a client trusting `trusted` to `server`, and returns
    /// the ALPN protocol agreed.
    fn handshake(
        server: Arc<ServerConfig>,
        trusted: CertificateDer<'static>,
        name: &str,
    ) -> Result<Option<Vec<u8>>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = rustls_pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), server_name)?;
        let mut server = rustls::ServerConnection::new(server)?;
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(client.alpn_protocol().map(<[u8]>::to_vec));
            }
        }
        Err(rustls::Error::General(
            "handshake did not finish".to_owned(),
        ))
    }

    #[test]
    fn a_client_trusting_the_self_signed_certificate_connects_by_loopback_name_and_ip() {
        let data = tempfile::tempdir().unwrap();
        let config = server_config(&TlsMode::SelfSigned, data.path(), &[])
            .unwrap()
            .unwrap();
        let cert =
            CertificateDer::from_pem_file(data.path().join(TLS_DIR).join(CERT_FILE)).unwrap();
        for name in ["localhost", "127.0.0.1", "::1"] {
            let alpn = handshake(config.clone(), cert.clone(), name);
            assert_eq!(alpn, Ok(Some(b"http/1.1".to_vec())), "{name}");
        }
        assert!(handshake(config, cert, "example.com").is_err());
    }

    fn stored_names(data_dir: &Path) -> Vec<String> {
        let cert = CertificateDer::from_pem_file(data_dir.join(TLS_DIR).join(CERT_FILE)).unwrap();
        certificate_names(&cert).unwrap()
    }

    #[test]
    fn self_signed_holds_the_loopback_and_interface_addresses_and_the_extra_names() {
        let data = tempfile::tempdir().unwrap();
        let extra = ["herald.example.org".to_owned(), "192.0.2.10".to_owned()];
        server_config(&TlsMode::SelfSigned, data.path(), &extra).unwrap();
        let held = stored_names(data.path());
        let interfaces = if_addrs::get_if_addrs().unwrap();
        assert!(!interfaces.is_empty());
        let expected = [
            "localhost",
            "127.0.0.1",
            "::1",
            "herald.example.org",
            "192.0.2.10",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(interfaces.iter().map(|i| i.ip().to_string()));
        for name in expected {
            assert!(
                held.iter().any(|h| same_name(h, &name)),
                "{name} not in {held:?}"
            );
        }
    }

    #[test]
    fn a_stored_certificate_lacking_a_required_name_is_regenerated_and_one_holding_all_is_kept() {
        let data = tempfile::tempdir().unwrap();
        let cert_path = data.path().join(TLS_DIR).join(CERT_FILE);
        server_config(&TlsMode::SelfSigned, data.path(), &[]).unwrap();
        let first = fs::read(&cert_path).unwrap();
        let extra = ["new.example.org".to_owned()];
        server_config(&TlsMode::SelfSigned, data.path(), &extra).unwrap();
        let second = fs::read(&cert_path).unwrap();
        assert_ne!(first, second, "a new name needs a new certificate");
        assert!(stored_names(data.path()).contains(&extra[0]));
        // Names differing only in case or IPv6 spelling are already held.
        let same = ["NEW.example.org".to_owned(), "0:0:0:0:0:0:0:1".to_owned()];
        server_config(&TlsMode::SelfSigned, data.path(), &same).unwrap();
        assert_eq!(fs::read(&cert_path).unwrap(), second);
    }

    #[test]
    fn a_half_written_self_signed_pair_is_regenerated() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join(TLS_DIR);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(KEY_FILE), "left by a crash").unwrap();
        server_config(&TlsMode::SelfSigned, data.path(), &[]).unwrap();
        assert_eq!(mode_of(&dir.join(KEY_FILE)), 0o600);
        assert!(dir.join(CERT_FILE).exists());
    }

    #[test]
    fn a_damaged_self_signed_pair_is_an_error_that_says_how_to_recover() {
        let data = tempfile::tempdir().unwrap();
        server_config(&TlsMode::SelfSigned, data.path(), &[]).unwrap();
        let dir = data.path().join(TLS_DIR);
        fs::write(dir.join(CERT_FILE), "garbage").unwrap();
        let error = error_for(&TlsMode::SelfSigned, data.path());
        assert!(
            matches!(&error, TlsError::BrokenSelfSigned { cause, .. }
                if matches!(**cause, TlsError::NoCertificate { .. })),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("delete"), "{message}");
        assert!(message.contains(&dir.display().to_string()), "{message}");
    }

    #[test]
    fn configured_pem_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "server");
        let config = server_config(&files(&cert, &key), dir.path(), &[])
            .unwrap()
            .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Configured files never trigger generation.
        assert!(!dir.path().join(TLS_DIR).exists());
    }

    #[test]
    fn a_missing_configured_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = write_pair(dir.path(), "server");
        let missing = dir.path().join("absent.pem");
        let error = error_for(&files(&missing, &key), dir.path());
        assert!(
            matches!(&error, TlsError::Read { path, .. } if *path == missing),
            "{error:?}"
        );
        assert!(error.to_string().contains("absent.pem"));
    }

    #[test]
    fn garbage_pem_gives_an_error_naming_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "server");
        let garbage = dir.path().join("garbage.pem");
        fs::write(&garbage, "this is not a certificate\n").unwrap();

        let error = error_for(&files(&garbage, &key), dir.path());
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");
        assert!(error.to_string().contains("garbage.pem"));

        let error = error_for(&files(&cert, &garbage), dir.path());
        assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");

        // The certificate in the key's place: a PEM file, but not a key.
        let error = error_for(&files(&cert, &cert), dir.path());
        assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");

        let broken = dir.path().join("broken.pem");
        fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = error_for(&files(&broken, &key), dir.path());
        assert!(matches!(error, TlsError::BadPem { .. }), "{error:?}");
        assert!(error.to_string().contains("broken.pem"));

        let not_der = dir.path().join("not-der.pem");
        fs::write(
            &not_der,
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let error = error_for(&files(&not_der, &key), dir.path());
        assert!(matches!(error, TlsError::Rejected { .. }), "{error:?}");
    }

    #[test]
    fn a_key_from_another_pair_is_reported_as_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path(), "one");
        let (_, other_key) = write_pair(dir.path(), "two");
        let error = error_for(&files(&cert, &other_key), dir.path());
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("two-key.pem") && message.contains("one-cert.pem"));
    }
}

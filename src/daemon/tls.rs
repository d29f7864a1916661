//! TLS files and configurations shared by the peer link (`tls-*`, [`super::peer::PeerTls`])
//! and the NBD export (`nbd-tls*`, [`nbd_export_tls`]): PEM loading with errors that name
//! the setting and the file, and the crypto provider (rustls with ring).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::config::{NbdTls, NbdTlsMode};
use crate::nbd::{ExportTls, TlsMode};

/// Why the TLS settings cannot be used, naming the file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// Which setting (`tls-cert`, `tls-key`, `tls-ca`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the combination (for example a key that does not match the
    /// certificate).
    #[error("TLS settings ({}, {}): {reason}", cert.display(), key.display())]
    Rejected {
        /// `tls-cert`.
        cert: PathBuf,
        /// `tls-key`.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The peer's name cannot be checked against a certificate.
    #[error("peer name {name:?} is neither a DNS name nor an IP address")]
    PeerName {
        /// The name.
        name: String,
    },
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bad = |reason: String| TlsConfigError::File {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(pem_reason(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (BEGIN CERTIFICATE) in the file".into()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (`what`: the setting that names it).
pub fn load_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsConfigError::File {
        what,
        path: path.to_owned(),
        reason: pem_reason(&e),
    })
}

fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => e.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind in the file".into()
        }
        other => format!("not a valid PEM file: {other:?}"),
    }
}

/// A root store of every certificate of a CA file (`what`: the setting that names it).
pub fn load_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(what, path)? {
        roots.add(c).map_err(|e| TlsConfigError::File {
            what,
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The NBD export's TLS (`nbd-tls on|require`): the server presents `nbd-tls-cert` with
/// `nbd-tls-key`; with `nbd-tls-ca`, a client must present a certificate chaining to it
/// (any name: who may connect is decided by that CA), else none is asked for. TLS 1.2 and
/// 1.3 (the NBD spec requires 1.2 to be available), rustls's safe defaults otherwise.
///
/// Errors: a file cannot be read or holds nothing usable, or rustls refuses the key.
pub fn nbd_export_tls(t: &NbdTls) -> Result<ExportTls, TlsConfigError> {
    let certs = load_certs("nbd-tls-cert", &t.cert)?;
    let key = load_key("nbd-tls-key", &t.key)?;
    let rejected = |reason: String| TlsConfigError::Rejected {
        cert: t.cert.clone(),
        key: t.key.clone(),
        reason,
    };
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| rejected(e.to_string()))?;
    let builder = match &t.ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots("nbd-tls-ca", ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| rejected(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| rejected(e.to_string()))?;
    Ok(ExportTls {
        mode: match t.mode {
            NbdTlsMode::On => TlsMode::On,
            NbdTlsMode::Require => TlsMode::Require,
        },
        config: Arc::new(config),
    })
}

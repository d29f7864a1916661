//! TLS for the peer link (`tls-cert`, `tls-key`, `tls-ca` in `urbd-options`; docs/PROTOCOL.md
//! §1.1): TLS 1.3 with mutual authentication, on rustls with the ring provider.
//!
//! Each socket of a link runs its own handshake right after [`establish`](super::establish)
//! returns it: the node that dialed the socket is the TLS client, the node that accepted it
//! the server. Both present their certificate, and both accept the other only if its chain
//! ends at a certificate of `tls-ca` and its leaf names the peer's host name (a
//! subjectAltName entry equal to the peer's `on` section name, or its IP address for a
//! floating section). The client checks the server's name as every TLS client does; the
//! server checks the client's with [`PeerNameVerifier`], so a certificate the same CA gave
//! another node cannot stand in for the peer.
//!
//! The initial frames (`INITIAL_DATA`, `INITIAL_META`) travel in clear before the
//! handshake: they only say which socket is which, and a handshake that fails drops both
//! sockets before anything else is read or written. Everything after them (HELLO,
//! authentication, data, acks) is inside TLS.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::TlsFiles;
use crate::daemon::tls::{TlsConfigError, load_certs, load_key, load_roots, provider};

use super::stream::{PeerStream, TlsStream};

/// The TLS side of a node's link to its peer: both roles, ready for any number of
/// handshakes.
#[derive(Debug, Clone)]
pub struct PeerTls {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    peer_name: ServerName<'static>,
}

impl PeerTls {
    /// Reads the files and builds both configurations for the link to `peer_name`.
    pub fn load(files: &TlsFiles, peer_name: &str) -> Result<PeerTls, TlsConfigError> {
        let peer =
            ServerName::try_from(peer_name.to_owned()).map_err(|_| TlsConfigError::PeerName {
                name: peer_name.to_owned(),
            })?;
        let certs = load_certs("tls-cert", &files.cert)?;
        let key = load_key("tls-key", &files.key)?;
        let roots = Arc::new(load_roots("tls-ca", &files.ca)?);
        let rejected = |e: rustls::Error| TlsConfigError::Rejected {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        };
        let provider = provider();
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| rejected(rustls::Error::General(e.to_string())))?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rejected)?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(rejected)?;
        let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| rejected(rustls::Error::General(e.to_string())))?;
        let verifier = Arc::new(PeerNameVerifier {
            inner,
            name: peer.clone(),
        });
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rejected)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(rejected)?;
        Ok(PeerTls {
            client: Arc::new(client),
            server: Arc::new(server),
            peer_name: peer,
        })
    }

    /// Runs the handshake on one socket of the link (`dialed`: this node is the client),
    /// each step bounded by `timeout`, and returns the encrypted stream.
    ///
    /// Errors: the socket failed or timed out, or the peer's certificate (or its absence,
    /// or a peer that does not speak TLS) was refused; the error says which.
    pub fn secure(
        &self,
        mut sock: TcpStream,
        dialed: bool,
        timeout: Duration,
    ) -> io::Result<PeerStream> {
        let mut conn: rustls::Connection = if dialed {
            rustls::ClientConnection::new(self.client.clone(), self.peer_name.clone())
                .map_err(io::Error::other)?
                .into()
        } else {
            rustls::ServerConnection::new(self.server.clone())
                .map_err(io::Error::other)?
                .into()
        };
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let deadline = std::time::Instant::now() + timeout;
        while conn.is_handshaking() {
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            if let Err(e) = conn.complete_io(&mut sock) {
                // An alert rustls queued (bad certificate, ...) still goes to the peer.
                let _ = conn.write_tls(&mut sock);
                return Err(e);
            }
        }
        // The last flight (the client's Finished) may still be queued.
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(None)?;
        Ok(PeerStream::Tls(TlsStream::new(sock, conn)?))
    }
}

/// The server side's check of a client certificate: rustls's chain check against
/// `tls-ca`, then the leaf must name the peer.
#[derive(Debug)]
struct PeerNameVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for PeerNameVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        cert.verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

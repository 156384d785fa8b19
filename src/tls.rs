//! TLS for the client and peer ports, with rustls and the ring provider (the choices in docs/operations.md).
//!
//! * A port serves HTTPS when it has a certificate and a key. With a CA file as well, a client
//!   certificate chained to that CA is *required*: anything else fails the handshake before a
//!   byte of HTTP is exchanged.
//! * Peers present the node's own certificate as their client certificate and trust the peer
//!   CA file. (Without a peer CA file they accept any server certificate, as etcd v0.1 did; a
//!   warning says so at start-up.)
//! * Plain HTTP sent to an HTTPS port gets Go's clear answer,
//!   `400 Client sent an HTTP request to an HTTPS server.`, instead of a garbled handshake.
//! * Handshakes run in the connection's own task with a deadline, so a slow or silent client
//!   never holds up the accept loop; a connection in its handshake counts against the port's
//!   connection cap (`conn.rs`).
//!
//! Every file problem (missing, unreadable, not PEM, no certificate, no key, key not matching
//! the certificate) is one error line naming the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;
use crate::conn::Guarded;
use crate::error::Error;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bad = |e: String| Error::Config(format!("certificate file {}: {e}", path.display()));
    std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in it".to_string()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bad = |e: String| Error::Config(format!("key file {}: {e}", path.display()));
    std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad(format!("no usable private key ({e})")))
}

fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)
        .map_err(|e| Error::Config(e.to_string().replacen("certificate file", "CA file", 1)))?
    {
        roots.add(cert).map_err(|e| {
            Error::Config(format!(
                "CA file {}: not a usable CA certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The server side of a port, or None when the port is plain HTTP.
pub fn server_config(files: &TlsFiles) -> Result<Option<Arc<ServerConfig>>, Error> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Ok(None);
    };
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    // A CA file is always read (a bad one is a start-up error), and enforced only when
    // client certificates are required.
    let roots = files.ca.as_deref().map(load_roots).transpose()?;
    let builder = match (roots, &files.ca) {
        (Some(roots), Some(ca)) if files.client_cert_auth => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::Config(format!("CA file {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key_der).map_err(|e| {
        Error::Config(format!(
            "key file {} does not match certificate file {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The client side used to talk to peers: our certificate as client certificate, the peer
/// CA as trust anchor.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &files.ca {
        Some(ca) => builder.with_root_certificates(load_roots(ca)?),
        None => {
            if files.enabled() {
                tracing::warn!("no peer CA file: peer certificates are not verified");
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
        }
    };
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                Error::Config(format!(
                    "key file {} does not match certificate file {}: {e}",
                    key.display(),
                    cert.display()
                ))
            }),
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The client side for services on the open network (an `https://` discovery URL): the
/// system's trusted roots (`SSL_CERT_FILE`, else the usual bundle paths), no client
/// certificate. Without a bundle, no `https://` server is trusted (the error says so).
pub fn public_client_config() -> ClientConfig {
    let mut roots = RootCertStore::empty();
    let candidates = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/etc/ssl/certs/ca-certificates.crt",
                "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ssl/cert.pem",
            ]
            .map(PathBuf::from),
        );
    for path in candidates {
        if let Ok(iter) = CertificateDer::pem_file_iter(&path) {
            let (added, _) = roots.add_parsable_certificates(iter.filter_map(|c| c.ok()));
            if added > 0 {
                break;
            }
        }
    }
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the default protocol versions are supported")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// v0.1's peer behaviour without a CA file: any server certificate is accepted (the
/// signature over the handshake is still checked).
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Complete a client's TLS handshake within [`HANDSHAKE_TIMEOUT`]; None when it fails, times
/// out, or the client spoke plain HTTP (which is answered as Go does).
pub(crate) async fn handshake(
    mut stream: Guarded<TcpStream>,
    acceptor: &TlsAcceptor,
    addr: SocketAddr,
) -> Option<TlsStream<Guarded<TcpStream>>> {
    // A TLS connection starts with a handshake record (0x16); an HTTP request with a letter.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0].is_ascii_alphabetic() => {
            let _ = stream
                .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                .await;
            let _ = stream.shutdown().await;
            return None;
        }
        Ok(Ok(_)) => {}
        _ => return None,
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(peer = %addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

//! The client side of the daemon's TLS: whom to trust, and the client certificate to show.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result, bail};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        self, CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::WebPkiSupportedAlgorithms,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _},
    },
};

/// Whom the client trusts.
pub enum Trust<'a> {
    /// Exactly the certificate the daemon is configured to serve (the first in its
    /// `cert_file`), whatever names it carries: status reads the daemon's own file, so no CA
    /// is needed, and a certificate issued for the node's name still serves 127.0.0.1.
    DaemonCertificate(&'a Path),
    /// Certificates that chain to this CA and carry the name asked for.
    Ca(&'a Path),
}

/// A client certificate and its key.
pub struct ClientCertificate<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
}

/// The connector for `trust`, showing `client` when given.
///
/// # Errors
/// When a file cannot be read or holds no usable certificate or key.
pub fn connector(
    trust: &Trust<'_>,
    client: Option<&ClientCertificate<'_>>,
) -> Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?;
    let builder = match trust {
        Trust::DaemonCertificate(cert_file) => {
            let certificate = certificates(cert_file)?.remove(0);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                    certificate,
                    algorithms: provider.signature_verification_algorithms,
                }))
        }
        Trust::Ca(ca_file) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(ca_file)? {
                roots.add(certificate).with_context(|| {
                    format!("{} holds a certificate that is no CA", ca_file.display())
                })?;
            }
            builder.with_root_certificates(roots)
        }
    };
    let config = match client {
        Some(client) => {
            let key = PrivateKeyDer::from_pem_file(client.key_file).with_context(|| {
                format!(
                    "cannot read a PEM private key from {} (--status.key-file)",
                    client.key_file.display()
                )
            })?;
            builder
                .with_client_auth_cert(certificates(client.cert_file)?, key)
                .context("the client certificate and key do not fit together")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name the certificate is checked against: `--status.server-name`, else the address.
///
/// # Errors
/// When `name` is not a DNS name or an IP address.
pub fn server_name(name: Option<&str>, address: std::net::IpAddr) -> Result<ServerName<'static>> {
    match name {
        Some(name) => ServerName::try_from(name.to_owned())
            .with_context(|| format!("--status.server-name: {name:?} is no DNS name or address")),
        None => Ok(ServerName::from(address)),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("cannot read PEM certificates from {}", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "no certificate in {} (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certificates)
}

/// Accepts the one certificate read from the daemon's own configuration. Its validity dates
/// and names are not checked: the file on disk is what the daemon serves, so presenting it is
/// the proof; the handshake's signatures are still verified, so only the holder of its key
/// can present it.
#[derive(Debug)]
struct PinnedCertificate {
    certificate: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.certificate.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

//! The TLS side: the server's certificate and key, and client certificates checked against
//! a CA when the file asks for them.

use std::{path::Path, sync::Arc};

use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    },
};

use super::{ClientAuth, WebConfigError};

/// The acceptor that completes every connection's handshake.
pub(super) fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_auth: ClientAuth,
    client_ca_file: Option<&Path>,
) -> Result<TlsAcceptor, WebConfigError> {
    let certificates = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| WebConfigError::Pem {
            what: "certificate",
            path: cert_file.to_owned(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| WebConfigError::Pem {
        what: "private key",
        path: key_file.to_owned(),
        source,
    })?;
    // One provider for the handshake and the client certificate checks, so that both accept
    // the same algorithms.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match client_ca_file {
        Some(ca_file) => client_verifier(ca_file, client_auth, Arc::clone(&provider))?,
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Checks client certificates against the CAs in `ca_file`. A certificate that does not chain
/// to one of them fails the handshake, before any HTTP is read.
pub(super) fn client_verifier(
    ca_file: &Path,
    client_auth: ClientAuth,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| WebConfigError::Pem {
            what: "client CA certificate",
            path: ca_file.to_owned(),
            source,
        })?;
    // Checked here, where the file can be named: rustls would only say "no root trust
    // anchors".
    if certificates.is_empty() {
        return Err(WebConfigError::NoClientCa {
            path: ca_file.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|source| WebConfigError::BadClientCa {
                path: ca_file.to_owned(),
                source,
            })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match client_auth {
        ClientAuth::VerifyClientCertIfGiven => builder.allow_unauthenticated(),
        // NoClientCert comes with no CA file (WebConfigFile::parse sees to it), so it never
        // gets here; were it to, requiring a certificate is the side to err on.
        ClientAuth::NoClientCert | ClientAuth::RequireAndVerifyClientCert => builder,
    };
    builder
        .build()
        .map_err(|source| WebConfigError::ClientVerifier {
            path: ca_file.to_owned(),
            source,
        })
}

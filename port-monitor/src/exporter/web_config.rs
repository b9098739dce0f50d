//! TLS and basic auth for the endpoint, read from a web configuration file in the format of
//! the Prometheus exporter-toolkit (`--web.config.file`), so that scrape configs written for
//! `node_exporter` work unchanged.
//!
//! Supported: `tls_server_config.cert_file` and `key_file` (PEM; relative paths are relative
//! to the file, as in the toolkit) and `basic_auth_users` (user: bcrypt hash). Any other key
//! is refused by name at start-up rather than silently ignored: a client CA that is not
//! enforced would be worse than an error.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    },
};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsServerConfig {
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// Why a web configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: {source} (supported: tls_server_config.cert_file, tls_server_config.key_file, basic_auth_users)"
    )]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)")]
    NotBcrypt { user: String },
    #[error("tls_server_config: cannot read a PEM {what} from {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls_server_config: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the server enforces.
#[derive(Clone)]
pub struct WebConfig {
    /// Present when `tls_server_config` is: every connection must complete a TLS handshake.
    pub tls: Option<TlsAcceptor>,
    /// Users and their bcrypt hashes; empty means no authentication.
    users: Arc<BTreeMap<String, String>>,
    /// Digests of credentials bcrypt already accepted. bcrypt costs tens of milliseconds on
    /// purpose; Prometheus sends the same credentials on every scrape, so only the first one
    /// pays it. Digests, not passwords, are kept.
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    /// bcrypt runs at most this many at once: a flood of wrong passwords costs the node a
    /// bounded share of CPU, and cached credentials skip the queue.
    verifying: Arc<Semaphore>,
}

impl Default for WebConfig {
    /// Plain HTTP, no authentication.
    fn default() -> Self {
        Self {
            tls: None,
            users: Arc::default(),
            verified: Arc::default(),
            verifying: Arc::new(Semaphore::new(CONCURRENT_VERIFICATIONS)),
        }
    }
}

/// Accepted credentials remembered at most; past it the cache starts over (a changed
/// password must not leave the old one usable for ever, and memory stays bounded).
const VERIFIED_CACHE_ENTRIES: usize = 64;

/// bcrypt verifications at once.
const CONCURRENT_VERIFICATIONS: usize = 2;

impl WebConfig {
    /// Reads and checks `path`; without a path the endpoint is plain HTTP without
    /// authentication.
    ///
    /// # Errors
    /// When the file, a certificate or a key cannot be read, a key is unknown or a password
    /// is not a bcrypt hash.
    pub fn load(path: Option<&Path>) -> Result<Self, WebConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: WebConfigFile =
            serde_norway::from_str(&text).map_err(|source| WebConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        for (user, hash) in &file.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(WebConfigError::NotBcrypt { user: user.clone() });
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|tls| acceptor(&base.join(tls.cert_file), &base.join(tls.key_file)))
            .transpose()?;
        Ok(Self {
            tls,
            users: Arc::new(file.basic_auth_users),
            ..Self::default()
        })
    }

    /// Whether requests must carry credentials.
    #[must_use]
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header value names a user with the right password.
    pub async fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        // An unknown user is checked against some hash all the same, so that the answer's
        // timing does not tell which users exist.
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => match self.users.values().next() {
                Some(hash) => (false, hash.clone()),
                None => return false,
            },
        };
        let digest: [u8; 32] = Sha256::new()
            .chain_update(&user)
            .chain_update([0])
            .chain_update(&password)
            .chain_update([0])
            .chain_update(&hash)
            .finalize()
            .into();
        if known && self.cache().contains(&digest) {
            return true;
        }
        let Ok(_permit) = self.verifying.acquire().await else {
            return false;
        };
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if known && matches {
            let mut cache = self.cache();
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(digest);
        }
        known && matches
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A panic while holding the lock leaves a set of digests, still valid.
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// User and password of a `Basic` authorization header.
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, WebConfigError> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("port-monitor-web-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[tokio::test]
    async fn basic_auth_accepts_only_the_right_password() {
        let dir = temp_dir("auth");
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let path = write(
            &dir,
            "web.yml",
            &format!("basic_auth_users:\n  prometheus: {hash}\n"),
        );
        let config = WebConfig::load(Some(&path)).expect("load");
        assert!(config.requires_auth());
        assert!(config.tls.is_none());
        let header = |user: &str, password: &str| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}").into_bytes()
        };
        let right = header("prometheus", "s3cret");
        assert!(config.authorized(Some(&right)).await);
        // Second time from the cache, same answer.
        assert!(config.authorized(Some(&right)).await);
        assert!(
            !config
                .authorized(Some(&header("prometheus", "wrong")))
                .await
        );
        assert!(!config.authorized(Some(&header("nobody", "s3cret"))).await);
        assert!(!config.authorized(Some(b"Bearer abc")).await);
        assert!(!config.authorized(Some(b"Basic !!!not-base64")).await);
        assert!(!config.authorized(None).await);
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = temp_dir("bad");
        let cases = [
            ("basic_auth_users:\n  a: plaintext\n", "not a bcrypt hash"),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n",
                "client_ca_file",
            ),
            (
                "http_server_config:\n  http2: false\n",
                "http_server_config",
            ),
            (
                "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.pem\n",
                "missing.pem",
            ),
            ("basic_auth_users: [", "supported:"),
        ];
        for (text, expected) in cases {
            let path = write(&dir, "web.yml", text);
            let error = WebConfig::load(Some(&path))
                .err()
                .expect("refused")
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        assert!(WebConfig::load(None).expect("no file").tls.is_none());
        fs::remove_dir_all(dir).expect("cleanup");
    }
}

//! TLS, client certificates and basic auth for the endpoint, read from a web configuration
//! file in the format of the Prometheus exporter-toolkit (`--web.config.file`), so that scrape
//! configs written for `node_exporter` work unchanged.
//!
//! Supported: `tls_server_config.cert_file` and `key_file` (PEM; relative paths are relative
//! to the file, as in the toolkit), `tls_server_config.client_auth_type` and `client_ca_file`,
//! and `basic_auth_users` (user: bcrypt hash). Any other key is refused by name at start-up
//! rather than silently ignored: an option that looks configured but is not enforced would be
//! worse than an error. For the same reason the toolkit's client auth types that take a
//! certificate without verifying it are refused too.

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
        self, RootCertStore,
        crypto::CryptoProvider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::{VerifierBuilderError, WebPkiClientVerifier, danger::ClientCertVerifier},
    },
};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
}

/// Which client certificates the TLS handshake asks for, named as in the toolkit (after Go's
/// `tls.ClientAuthType`). Only the modes that verify the certificates they accept are here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    NoClientCert,
    /// A certificate is asked for; a client may send none, but one it sends must chain to
    /// `client_ca_file`.
    VerifyClientCertIfGiven,
    /// Every client must send a certificate that chains to `client_ca_file`.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(value: &str) -> Result<Self, WebConfigError> {
        let unverified = |instead| WebConfigError::UnverifiedClientAuth {
            value: value.to_owned(),
            instead,
        };
        match value {
            // The toolkit takes an empty value for the default too.
            "" | "NoClientCert" => Ok(Self::NoClientCert),
            "VerifyClientCertIfGiven" => Ok(Self::VerifyClientCertIfGiven),
            "RequireAndVerifyClientCert" => Ok(Self::RequireAndVerifyClientCert),
            // Go's modes that take any certificate: one that anybody can make proves nothing
            // about who sent it, yet the setting reads as if it did.
            "RequestClientCert" => Err(unverified(Self::VerifyClientCertIfGiven)),
            // RequireClientCert is the toolkit's older name for RequireAnyClientCert.
            "RequireAnyClientCert" | "RequireClientCert" => {
                Err(unverified(Self::RequireAndVerifyClientCert))
            }
            _ => Err(WebConfigError::UnknownClientAuth {
                value: value.to_owned(),
            }),
        }
    }

    /// The name in the file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::NoClientCert => "NoClientCert",
            Self::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            Self::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }

    /// Whether client certificates are checked against `client_ca_file`.
    #[must_use]
    pub fn verifies(self) -> bool {
        self != Self::NoClientCert
    }
}

impl std::fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A web configuration file, parsed and checked as far as it can be without reading the files
/// it names.
#[derive(Debug)]
pub struct WebConfigFile {
    tls: Option<TlsFiles>,
    users: BTreeMap<String, String>,
}

#[derive(Debug)]
struct TlsFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_auth: ClientAuth,
    /// Present exactly when `client_auth` verifies.
    client_ca_file: Option<PathBuf>,
}

impl TlsFiles {
    fn check(raw: RawTls) -> Result<Self, WebConfigError> {
        let client_auth = ClientAuth::parse(raw.client_auth_type.as_deref().unwrap_or_default())?;
        // An empty path is no path, as in the toolkit.
        let client_ca_file = raw
            .client_ca_file
            .filter(|path| !path.as_os_str().is_empty());
        match (client_auth.verifies(), &client_ca_file) {
            // The toolkit refuses a CA that nothing uses: the file would suggest that clients
            // are checked when they are not.
            (false, Some(_)) => return Err(WebConfigError::UnusedClientCa),
            // Go would verify against the system's CAs here, so that a certificate from any
            // public CA would pass: refused, the CA must be named.
            (true, None) => return Err(WebConfigError::MissingClientCa { client_auth }),
            _ => {}
        }
        Ok(Self {
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            client_auth,
            client_ca_file,
        })
    }
}

impl WebConfigFile {
    /// Parses and checks `text`, naming `path` in errors. Reads no file: certificates and
    /// keys are read by [`WebConfig::load`].
    ///
    /// # Errors
    /// When a key is unknown, a value has the wrong type, a password is not a bcrypt hash or
    /// the client certificate settings do not fit together.
    pub fn parse(text: &str, path: &Path) -> Result<Self, WebConfigError> {
        let raw: RawFile =
            serde_norway::from_str(text).map_err(|source| WebConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if let Some(user) = raw
            .basic_auth_users
            .iter()
            .find_map(|(user, hash)| (!is_bcrypt(hash)).then_some(user))
        {
            return Err(WebConfigError::NotBcrypt { user: user.clone() });
        }
        Ok(Self {
            tls: raw.tls_server_config.map(TlsFiles::check).transpose()?,
            users: raw.basic_auth_users,
        })
    }

    /// Which client certificates the handshake asks for; `NoClientCert` without TLS.
    #[must_use]
    pub fn client_auth(&self) -> ClientAuth {
        self.tls
            .as_ref()
            .map_or(ClientAuth::NoClientCert, |tls| tls.client_auth)
    }

    /// The CA file client certificates must chain to, as written (relative to the file).
    #[must_use]
    pub fn client_ca_file(&self) -> Option<&Path> {
        self.tls.as_ref()?.client_ca_file.as_deref()
    }

    /// Reads the certificates and keys, relative paths from `base`.
    fn build(self, base: &Path) -> Result<WebConfig, WebConfigError> {
        let tls = self
            .tls
            .map(|tls| {
                acceptor(
                    &base.join(tls.cert_file),
                    &base.join(tls.key_file),
                    tls.client_auth,
                    tls.client_ca_file.map(|file| base.join(file)).as_deref(),
                )
            })
            .transpose()?;
        Ok(WebConfig {
            tls,
            users: Arc::new(self.users),
            ..WebConfig::default()
        })
    }
}

/// Whether `hash` is a bcrypt hash that `bcrypt::verify` can use. The crate's parser takes
/// any cost and any characters, and `verify` then fails on every request: each scrape would
/// get 401 with no hint why, so such a hash is refused at start-up instead.
fn is_bcrypt(hash: &str) -> bool {
    let Ok(parts) = hash.parse::<bcrypt::HashParts>() else {
        return false;
    };
    let digest = hash.rsplit('$').next().and_then(|last| last.get(22..));
    (4..=31).contains(&parts.get_cost())
        && bcrypt::BASE_64
            .decode(parts.get_salt())
            .is_ok_and(|salt| salt.len() == 16)
        && digest.is_some_and(|digest| bcrypt::BASE_64.decode(digest).is_ok())
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
        "{path}: {source} (supported: tls_server_config.cert_file, tls_server_config.key_file, tls_server_config.client_auth_type, tls_server_config.client_ca_file, basic_auth_users)"
    )]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 {user}`)")]
    NotBcrypt { user: String },
    #[error(
        "tls_server_config.client_auth_type: {value} accepts a client certificate without verifying it, and anyone can make one; use {instead} with client_ca_file set to the CA that signs your clients' certificates"
    )]
    UnverifiedClientAuth { value: String, instead: ClientAuth },
    #[error(
        "tls_server_config.client_auth_type: unknown value {value:?} (supported: NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
    )]
    UnknownClientAuth { value: String },
    #[error(
        "tls_server_config.client_auth_type: {client_auth} needs client_ca_file, the PEM file of the CA that signs your clients' certificates"
    )]
    MissingClientCa { client_auth: ClientAuth },
    #[error(
        "tls_server_config.client_ca_file is set but client_auth_type is NoClientCert (or unset), so no client certificate would be checked: set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven, or remove client_ca_file"
    )]
    UnusedClientCa,
    #[error("tls_server_config: cannot read a PEM {what} from {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "tls_server_config.client_ca_file: no certificate in {path} (expected PEM blocks starting with -----BEGIN CERTIFICATE-----)"
    )]
    NoClientCa { path: PathBuf },
    #[error(
        "tls_server_config.client_ca_file: {path} holds a certificate that cannot be used as a CA: {source}"
    )]
    BadClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("tls_server_config.client_ca_file: {path}: {source}")]
    ClientVerifier {
        path: PathBuf,
        source: VerifierBuilderError,
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

/// How long a request waits for a bcrypt slot before it is turned away as busy: a flood of
/// wrong passwords must not pile up waiting requests (each holding a connection) behind the
/// two slots.
const VERIFICATION_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// The answer to a request's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Authorized,
    Refused,
    /// Every bcrypt slot stayed busy (a flood of new credentials): try again shortly.
    Busy,
}

impl WebConfig {
    /// Reads and checks `path`; without a path the endpoint is plain HTTP without
    /// authentication.
    ///
    /// # Errors
    /// When the file, a certificate, a key or the client CA cannot be read, or the file does
    /// not pass [`WebConfigFile::parse`].
    pub fn load(path: Option<&Path>) -> Result<Self, WebConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        WebConfigFile::parse(&text, path)?.build(base)
    }

    /// Whether requests must carry credentials.
    #[must_use]
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header value names a user with the right password.
    /// Credentials accepted before are answered at once; new ones wait at most
    /// [`VERIFICATION_WAIT`] for a bcrypt slot.
    pub async fn authorized(&self, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Refused;
        };
        // An unknown user is checked against some hash all the same, so that the answer's
        // timing does not tell which users exist.
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => match self.users.values().next() {
                Some(hash) => (false, hash.clone()),
                None => return Verdict::Refused,
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
            return Verdict::Authorized;
        }
        let Ok(Ok(_permit)) =
            tokio::time::timeout(VERIFICATION_WAIT, self.verifying.acquire()).await
        else {
            return Verdict::Busy;
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
        if known && matches {
            Verdict::Authorized
        } else {
            Verdict::Refused
        }
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

fn acceptor(
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
fn client_verifier(
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
        assert_eq!(config.authorized(Some(&right)).await, Verdict::Authorized);
        // Second time from the cache, same answer.
        assert_eq!(config.authorized(Some(&right)).await, Verdict::Authorized);
        for refused in [
            header("prometheus", "wrong"),
            header("nobody", "s3cret"),
            b"Bearer abc".to_vec(),
            b"Basic !!!not-base64".to_vec(),
        ] {
            assert_eq!(config.authorized(Some(&refused)).await, Verdict::Refused);
        }
        assert_eq!(config.authorized(None).await, Verdict::Refused);
        // Every bcrypt slot taken: new credentials are turned away at once, cached ones
        // still pass.
        let permits = config
            .verifying
            .acquire_many(u32::try_from(CONCURRENT_VERIFICATIONS).expect("small"))
            .await
            .expect("permits");
        assert_eq!(
            config
                .authorized(Some(&header("prometheus", "other")))
                .await,
            Verdict::Busy
        );
        assert_eq!(config.authorized(Some(&right)).await, Verdict::Authorized);
        drop(permits);
        fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = temp_dir("bad");
        let cases = [
            ("basic_auth_users:\n  a: plaintext\n", "not a bcrypt hash"),
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

    const TLS: &str = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n";

    fn parse(text: &str) -> Result<WebConfigFile, WebConfigError> {
        WebConfigFile::parse(text, Path::new("web.yml"))
    }

    #[test]
    fn client_auth_types_that_verify_take_a_ca() {
        let cases = [
            (String::new(), ClientAuth::NoClientCert, None),
            (TLS.to_owned(), ClientAuth::NoClientCert, None),
            (
                format!("{TLS}  client_auth_type: NoClientCert\n"),
                ClientAuth::NoClientCert,
                None,
            ),
            // Empty means the default in the toolkit, for the type and for the file.
            (
                format!("{TLS}  client_auth_type: \"\"\n  client_ca_file: \"\"\n"),
                ClientAuth::NoClientCert,
                None,
            ),
            (
                format!(
                    "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
                ),
                ClientAuth::VerifyClientCertIfGiven,
                Some("ca.pem"),
            ),
            (
                format!(
                    "{TLS}  client_ca_file: ../ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
                ),
                ClientAuth::RequireAndVerifyClientCert,
                Some("../ca.pem"),
            ),
        ];
        for (text, client_auth, ca) in cases {
            let file = parse(&text).unwrap_or_else(|error| panic!("{text:?}: {error}"));
            assert_eq!(file.client_auth(), client_auth, "{text:?}");
            assert_eq!(file.client_ca_file(), ca.map(Path::new), "{text:?}");
        }
    }

    #[test]
    fn client_auth_mistakes_are_refused_with_what_to_do() {
        let cases = [
            (
                format!("{TLS}  client_auth_type: RequestClientCert\n  client_ca_file: ca.pem\n"),
                "use VerifyClientCertIfGiven",
            ),
            (
                format!("{TLS}  client_auth_type: RequireAnyClientCert\n"),
                "use RequireAndVerifyClientCert",
            ),
            (
                format!("{TLS}  client_auth_type: RequireClientCert\n"),
                "use RequireAndVerifyClientCert",
            ),
            // Names are matched exactly, as in the toolkit.
            (
                format!("{TLS}  client_auth_type: requireandverifyclientcert\n"),
                "supported: NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
            ),
            (
                format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n"),
                "RequireAndVerifyClientCert needs client_ca_file",
            ),
            (
                format!("{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: \"\"\n"),
                "VerifyClientCertIfGiven needs client_ca_file",
            ),
            (
                format!("{TLS}  client_ca_file: ca.pem\n"),
                "set client_auth_type to RequireAndVerifyClientCert",
            ),
            (
                format!("{TLS}  client_auth_type: NoClientCert\n  client_ca_file: ca.pem\n"),
                "or remove client_ca_file",
            ),
            (
                format!("{TLS}  client_auth_type: [RequireAndVerifyClientCert]\n"),
                "client_auth_type",
            ),
            // The toolkit's other keys stay refused, with the list of what is supported.
            (
                format!("{TLS}  client_allowed_sans: [prometheus]\n"),
                "tls_server_config.client_ca_file, basic_auth_users)",
            ),
            (
                format!("{TLS}  client_ca: \"-----BEGIN CERTIFICATE-----\"\n"),
                "unknown field `client_ca`",
            ),
            (
                "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n".to_owned(),
                "missing field `cert_file`",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).expect_err("refused").to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn only_usable_bcrypt_hashes_are_accepted() {
        let good = bcrypt::hash("s3cret", 4).expect("hash");
        let (head, tail) = good.split_at(7);
        assert!(is_bcrypt(&good), "{good}");
        assert!(is_bcrypt(&good.replacen("$2b$", "$2y$", 1)), "{good}");
        let bad = [
            "plaintext".to_owned(),
            String::new(),
            // Costs bcrypt::verify refuses.
            format!("$2b$03${tail}"),
            format!("$2b$32${tail}"),
            format!("$2b$99${tail}"),
            // Not bcrypt's base64 alphabet, in the salt and in the digest.
            format!("{head}!{}", &tail[1..]),
            format!("{}+", &good[..good.len() - 1]),
            // One character short, and a multi-byte one in its place.
            good[..good.len() - 1].to_owned(),
            format!("{}é", &good[..good.len() - 2]),
            good.replacen("$2b$", "$3b$", 1),
        ];
        for hash in bad {
            assert!(!is_bcrypt(&hash), "{hash:?}");
            let text = format!("basic_auth_users:\n  prometheus: '{hash}'\n");
            let error = parse(&text).expect_err("refused").to_string();
            assert!(
                error.contains("basic_auth_users.prometheus: not a bcrypt hash"),
                "{error}"
            );
        }
    }

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/exporter/testdata")
            .join(name)
    }

    #[test]
    fn client_certificates_are_asked_for_as_configured() {
        // client-ca.pem: a self-signed CA certificate made with openssl, its key thrown away;
        // a trust anchor needs none.
        let ca = testdata("client-ca.pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        for (client_auth, mandatory) in [
            (ClientAuth::VerifyClientCertIfGiven, false),
            (ClientAuth::RequireAndVerifyClientCert, true),
        ] {
            let verifier =
                client_verifier(&ca, client_auth, Arc::clone(&provider)).expect("verifier");
            assert!(verifier.offer_client_auth(), "{client_auth}");
            assert_eq!(verifier.client_auth_mandatory(), mandatory, "{client_auth}");
            // Clients are told which CA to pick a certificate for.
            assert_eq!(verifier.root_hint_subjects().len(), 1, "{client_auth}");
        }
    }

    #[test]
    fn unusable_client_ca_files_are_refused_with_the_path() {
        let dir = temp_dir("client-ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cases = [
            (dir.join("absent.pem"), "PEM client CA certificate"),
            (write(&dir, "empty.pem", ""), "no certificate in"),
            (
                write(
                    &dir,
                    "key.pem",
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ),
                "no certificate in",
            ),
            (
                write(
                    &dir,
                    "garbage.pem",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                "cannot be used as a CA",
            ),
        ];
        for (path, expected) in cases {
            let error = client_verifier(
                &path,
                ClientAuth::RequireAndVerifyClientCert,
                Arc::clone(&provider),
            )
            .expect_err("refused")
            .to_string();
            assert!(
                error.contains(expected) && error.contains(&path.display().to_string()),
                "{}: {error}",
                path.display()
            );
        }
        fs::remove_dir_all(dir).expect("cleanup");
    }
}

//! The web configuration file as written: the exporter-toolkit format, parsed and checked as
//! far as it can be without reading the files it names.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use serde::Deserialize;
use tokio_rustls::rustls::{self, server::VerifierBuilderError};

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
    pub(super) tls: Option<TlsFiles>,
    pub(super) users: BTreeMap<String, String>,
}

#[derive(Debug)]
pub(super) struct TlsFiles {
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    pub(super) client_auth: ClientAuth,
    /// Present exactly when `client_auth` verifies.
    pub(super) client_ca_file: Option<PathBuf>,
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

    /// Reads and parses the file at `path`, without reading the files it names: what a
    /// client of the endpoint (`port-monitor status`) learns from it.
    ///
    /// # Errors
    /// When the file cannot be read or does not pass [`WebConfigFile::parse`].
    pub fn read(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The server's certificate file when TLS is on, as written (relative to the file).
    #[must_use]
    pub fn server_cert_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.cert_file.as_path())
    }

    /// Whether requests must carry basic auth credentials.
    #[must_use]
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

/// Whether `hash` is a bcrypt hash that `bcrypt::verify` can use. The crate's parser takes
/// any cost and any characters, and `verify` then fails on every request: each scrape would
/// get 401 with no hint why, so such a hash is refused at start-up instead.
pub(super) fn is_bcrypt(hash: &str) -> bool {
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

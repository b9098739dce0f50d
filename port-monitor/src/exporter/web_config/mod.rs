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

mod basic_auth;
mod file;
mod tls;

use std::{fs, path::Path};

use tokio_rustls::TlsAcceptor;

pub use self::{
    basic_auth::{BasicAuth, Verdict},
    file::{ClientAuth, WebConfigError, WebConfigFile},
};

/// What the server enforces.
#[derive(Clone, Default)]
pub struct WebConfig {
    /// Present when `tls_server_config` is: every connection must complete a TLS handshake.
    pub tls: Option<TlsAcceptor>,
    /// Basic auth; without users, none.
    pub auth: BasicAuth,
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
        let file = WebConfigFile::parse(&text, path)?;
        // Relative paths are relative to the file, as in the toolkit.
        let tls = file
            .tls
            .map(|tls| {
                tls::acceptor(
                    &base.join(tls.cert_file),
                    &base.join(tls.key_file),
                    tls.client_auth,
                    tls.client_ca_file.map(|file| base.join(file)).as_deref(),
                )
            })
            .transpose()?;
        Ok(Self {
            tls,
            auth: BasicAuth::new(file.users),
        })
    }

    /// Whether requests must carry credentials.
    #[must_use]
    pub fn requires_auth(&self) -> bool {
        self.auth.is_on()
    }

    /// The verdict on an `Authorization` header value (see [`BasicAuth::authorized`]).
    pub async fn authorized(&self, authorization: Option<&[u8]>) -> Verdict {
        self.auth.authorized(authorization).await
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::Arc};

    use base64::Engine as _;

    use tokio_rustls::rustls;

    use super::{basic_auth::CONCURRENT_VERIFICATIONS, file::is_bcrypt, tls::client_verifier, *};

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
            .auth
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

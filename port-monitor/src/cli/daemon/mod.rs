//! The daemon on this node, asked over its own endpoint for what only it knows: the calls its
//! kernel programs saw fail and the anomalies it counted, with the process. Optional: without
//! an answer, status shows the snapshot alone and says why in one line.

mod exposition;
mod tls;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{
    Request, StatusCode,
    header::{AUTHORIZATION, HOST},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};

#[cfg(test)]
pub use self::exposition::LastAnomaly;
pub use self::exposition::{DaemonReport, NamespaceCounters, report};
use crate::{
    config::{DaemonAccess, Flags},
    exporter::web_config::{ClientAuth, WebConfigFile},
};

/// How long the daemon has to answer: a scrape of a large node takes well under a second.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest exposition read: far above a node with thousands of namespaces.
const MAX_EXPOSITION_BYTES: usize = 256 * 1024 * 1024;

/// How to reach the daemon: address, path, TLS and credentials, from its own flags.
pub struct Daemon {
    address: SocketAddr,
    path: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    authorization: Option<String>,
    /// What to call it in messages.
    url: String,
}

impl Daemon {
    /// The daemon that `flags` describe (`--web.listen-address`, `--web.telemetry-path`,
    /// `--web.config.file`), reached with `access`.
    ///
    /// # Errors
    /// When a file cannot be used, or the daemon's web configuration asks for credentials or
    /// a client certificate that `access` lacks: the message names the flag to give.
    pub fn new(flags: &Flags, access: &DaemonAccess) -> Result<Self, String> {
        let address = asked_address(flags.listen_address);
        let web = flags
            .web_config_file
            .as_deref()
            .map(|path| {
                WebConfigFile::read(path)
                    .map(|file| (path, file))
                    .map_err(|error| format!("cannot use --web.config.file: {error}"))
            })
            .transpose()?;
        let tls = tls_connector(address.ip(), web.as_ref(), access)?;
        let authorization = authorization(web.as_ref(), access)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            url: format!("{scheme}://{address}{}", flags.telemetry_path),
            address,
            path: flags.telemetry_path.clone(),
            tls,
            authorization,
        })
    }

    /// The URL asked.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Scrapes the daemon and reads its counters.
    ///
    /// # Errors
    /// When nothing answers, the handshake or the request fails, or the answer is not 200:
    /// one line saying which, and what to give when a flag would help.
    pub async fn report(&self) -> Result<DaemonReport, String> {
        let exposition = tokio::time::timeout(ANSWER_TIMEOUT, self.scrape())
            .await
            .map_err(|_| {
                format!(
                    "no answer from {} within {}",
                    self.url,
                    humantime::format_duration(ANSWER_TIMEOUT)
                )
            })??;
        Ok(report(&exposition))
    }

    async fn scrape(&self) -> Result<String, String> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|error| format!("no daemon answers at {} ({error})", self.url))?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|error| {
                        format!(
                            "TLS handshake with {} failed: {error} (--web.config.file must be \
                             the daemon's own, or give --status.ca-file)",
                            self.address
                        )
                    })?;
                self.get(stream).await
            }
            None => self.get(stream).await.map_err(|error| {
                format!(
                    "{error} (if the daemon serves TLS, give its --web.config.file or \
                     --status.ca-file)"
                )
            }),
        }
    }

    async fn get<Io>(&self, io: Io) -> Result<String, String>
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |error: &dyn std::fmt::Display| format!("{}: {error}", self.url);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|error| failed(&error))?;
        tokio::spawn(connection);
        let mut request = Request::get(&self.path).header(HOST, self.address.to_string());
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| failed(&error))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| failed(&error))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED if self.authorization.is_some() => {
                return Err(format!(
                    "{} refused the credentials of --status.username and --status.password-file",
                    self.url
                ));
            }
            StatusCode::UNAUTHORIZED => {
                return Err(format!(
                    "{} asks for credentials: give --status.username and --status.password-file",
                    self.url
                ));
            }
            status => return Err(format!("{} answered {status}", self.url)),
        }
        let body = Limited::new(response.into_body(), MAX_EXPOSITION_BYTES)
            .collect()
            .await
            .map_err(|error| failed(&*error))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|error| failed(&error))
    }
}

/// Where to ask a daemon listening on `listen`: every interface means this node's loopback.
fn asked_address(listen: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() {
        // The daemon's ":port" socket is dual-stack, so IPv4 loopback reaches it either way.
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
    } else {
        listen
    }
}

fn tls_connector(
    address: IpAddr,
    web: Option<&(&Path, WebConfigFile)>,
    access: &DaemonAccess,
) -> Result<Option<(TlsConnector, ServerName<'static>)>, String> {
    let daemon_certificate = web.and_then(|(path, file)| {
        let base = path.parent().unwrap_or(Path::new("."));
        // Relative paths are relative to the file, as the daemon reads them.
        file.server_cert_file().map(|cert| base.join(cert))
    });
    let trust = match (&access.ca_file, &daemon_certificate) {
        (Some(ca_file), _) => tls::Trust::Ca(ca_file),
        (None, Some(cert_file)) => tls::Trust::DaemonCertificate(cert_file),
        (None, None) => return Ok(None),
    };
    let client = access
        .cert_file
        .as_deref()
        .zip(access.key_file.as_deref())
        .map(|(cert_file, key_file)| tls::ClientCertificate {
            cert_file,
            key_file,
        });
    if let Some((path, file)) = web
        && file.client_auth() == ClientAuth::RequireAndVerifyClientCert
        && client.is_none()
    {
        return Err(format!(
            "the daemon requires a client certificate (client_auth_type in {}): give \
             --status.cert-file and --status.key-file",
            path.display()
        ));
    }
    let connector =
        tls::connector(&trust, client.as_ref()).map_err(|error| format!("{error:#}"))?;
    let name = tls::server_name(access.server_name.as_deref(), address)
        .map_err(|error| format!("{error:#}"))?;
    Ok(Some((connector, name)))
}

fn authorization(
    web: Option<&(&Path, WebConfigFile)>,
    access: &DaemonAccess,
) -> Result<Option<String>, String> {
    match (&access.username, &access.password_file) {
        (Some(username), Some(password_file)) => {
            let password = std::fs::read_to_string(password_file).map_err(|error| {
                format!(
                    "cannot read --status.password-file {}: {error}",
                    password_file.display()
                )
            })?;
            // A file written by `echo` ends with a newline that is no part of the password.
            let password = password.trim_end_matches(['\n', '\r']);
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            Ok(Some(format!("Basic {token}")))
        }
        (Some(_), None) => Err("--status.username needs --status.password-file".to_owned()),
        (None, _) => match web {
            Some((path, file)) if file.requires_auth() => Err(format!(
                "the daemon asks for basic auth (basic_auth_users in {}): give \
                 --status.username and --status.password-file",
                path.display()
            )),
            _ => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_is_asked_on_loopback() {
        let asked = |listen: &str| asked_address(listen.parse().expect("literal")).to_string();
        assert_eq!(asked("[::]:9977"), "127.0.0.1:9977");
        assert_eq!(asked("0.0.0.0:9978"), "127.0.0.1:9978");
        assert_eq!(asked("10.0.0.5:9977"), "10.0.0.5:9977");
        assert_eq!(asked("[::1]:9977"), "[::1]:9977");
    }
}

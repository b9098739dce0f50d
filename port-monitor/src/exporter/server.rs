//! The HTTP endpoint: metrics, a landing page and the health endpoints.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

use super::{
    super::health::Health,
    connections::{Admission, Connections},
    web_config::{Verdict, WebConfig},
    write_deadline::WriteDeadline,
};

/// What the handlers share.
pub struct Endpoint {
    pub registry: Registry,
    pub telemetry_path: String,
    /// The daemon's heartbeats: ready once the first snapshot is in the model, healthy while
    /// its loops beat.
    pub health: Arc<Health>,
    /// TLS and basic auth (`--web.config.file`).
    pub web: WebConfig,
}

/// How long a scrape that arrives before the first snapshot waits for it, before it is
/// answered 503: a scrape right after a restart must not record a node without its gauges.
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(10);

/// A client slower than this to send its request headers is disconnected, so that idle or
/// trickling connections (slowloris) cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that stops reading its answer for this long is disconnected (slow read): the
/// write fails and the connection's slot is freed.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections open at once; past it the one idle longest is closed to make room (see
/// `connections`). An idle connection costs a few KiB: this bounds memory, not scrapes.
const MAX_CONNECTIONS: usize = 512;

/// The largest request head read (request line and headers). A scrape needs well under
/// 1 KiB; hyper answers a larger head with 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Binds the listen address. An unspecified IPv6 address (the ":port" form) falls back to
/// IPv4 on hosts without IPv6.
///
/// # Errors
/// When the address cannot be bound (in use, not local, no permission).
pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = match std::net::TcpListener::bind(address) {
        Err(error) if address.ip().is_unspecified() && address.is_ipv6() => {
            let fallback = SocketAddr::from(([0, 0, 0, 0], address.port()));
            tracing::debug!(%error, %fallback, "IPv6 unavailable, listening on IPv4 only");
            std::net::TcpListener::bind(fallback)
        }
        result => result,
    }?;
    // Handed to the async runtime once it runs.
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connections = Connections::new(MAX_CONNECTIONS);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admission) = connections.admit() else {
            tracing::debug!(%peer, "every connection is being answered, closing");
            continue;
        };
        let admission = Arc::new(admission);
        let stream = WriteDeadline::new(stream, WRITE_STALL_TIMEOUT);
        let task = tokio::spawn(serve_stream(
            stream,
            Arc::clone(&endpoint),
            Arc::clone(&admission),
            peer,
        ));
        admission.attach(task.abort_handle());
    }
}

/// Completes the TLS handshake when TLS is on, then serves HTTP.
async fn serve_stream(
    stream: WriteDeadline<TcpStream>,
    endpoint: Arc<Endpoint>,
    admission: Arc<Admission>,
    peer: SocketAddr,
) {
    let Some(acceptor) = endpoint.web.tls.clone() else {
        serve_connection(stream, endpoint, admission, peer).await;
        return;
    };
    // The handshake gets the same deadline as a request head.
    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_connection(stream, endpoint, admission, peer).await,
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

async fn serve_connection(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    endpoint: Arc<Endpoint>,
    admission: Arc<Admission>,
    peer: SocketAddr,
) {
    let service = service_fn(move |request| {
        let endpoint = Arc::clone(&endpoint);
        let admission = Arc::clone(&admission);
        async move { Ok::<_, Infallible>(answer(endpoint, request, &admission).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Checks credentials, then answers. The health endpoints stay open so that kubelet probes
/// need no password; they reveal nothing but "up".
///
/// Only once the credentials pass is the connection marked as being answered, which keeps it
/// from being the one closed to make room for a newcomer: connections sending wrong
/// passwords, or waiting for a bcrypt slot, stay closable, so a flood of them cannot keep the
/// real scraper out.
async fn answer(
    endpoint: Arc<Endpoint>,
    request: Request<Incoming>,
    admission: &Admission,
) -> Response<Full<Bytes>> {
    let open = matches!(request.uri().path(), "/-/healthy" | "/-/ready");
    if endpoint.web.requires_auth() && !open {
        let header = request.headers().get(hyper::header::AUTHORIZATION);
        match endpoint
            .web
            .authorized(header.map(HeaderValue::as_bytes))
            .await
        {
            Verdict::Authorized => {}
            Verdict::Refused => {
                let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized.\n");
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"port-monitor\""),
                );
                return response;
            }
            Verdict::Busy => {
                let mut response = text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many new credentials to check at once; try again.\n",
                );
                response
                    .headers_mut()
                    .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
        }
    }
    // From here until the answer is handed to hyper, this connection is not the one closed
    // to make room for a newcomer.
    let _answering = admission.answering();
    if request.uri().path() == endpoint.telemetry_path
        && !endpoint.health.wait_ready(FIRST_SNAPSHOT_WAIT).await
    {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: the first snapshot of the node is not taken yet.\n",
        );
    }
    let gzip = accepts_gzip(request.headers());
    route(&endpoint, request.method(), request.uri().path(), gzip)
}

/// Whether the client takes a gzip body (Prometheus asks for it on every scrape).
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            // "gzip;q=0" means "not gzip".
            let refused = parts.any(|parameter| parameter.replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// `body` compressed with gzip, or `None` if compressing failed (then it goes out plain).
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

fn route(endpoint: &Endpoint, method: &Method, path: &str, gzip: bool) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET and HEAD are supported.\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = match path {
        path if path == endpoint.telemetry_path => metrics(endpoint, gzip),
        "/" => landing(&endpoint.telemetry_path),
        "/-/healthy" => healthy(&endpoint.health),
        "/-/ready" if endpoint.health.is_ready() => text(StatusCode::OK, "Ready.\n"),
        "/-/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not ready: programs attaching or first snapshot pending.\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "Not found.\n"),
    };
    if method == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

fn metrics(endpoint: &Endpoint, compress: bool) -> Response<Full<Bytes>> {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&endpoint.registry.gather(), &mut body) {
        Ok(()) => {
            let compressed = if compress { gzip(&body) } else { None };
            let gzipped = compressed.is_some();
            let mut response = Response::new(Full::new(Bytes::from(compressed.unwrap_or(body))));
            if gzipped {
                response.headers_mut().insert(
                    hyper::header::CONTENT_ENCODING,
                    HeaderValue::from_static("gzip"),
                );
            }
            if let Ok(content_type) = HeaderValue::from_str(encoder.format_type()) {
                response.headers_mut().insert(CONTENT_TYPE, content_type);
            }
            response
        }
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Encoding metrics failed.\n",
            )
        }
    }
}

/// 200 while the daemon's loops beat; 503 with what is wrong otherwise, so that kubelet's
/// liveness probe restarts it.
fn healthy(health: &Health) -> Response<Full<Bytes>> {
    let problems = health.problems();
    if problems.is_empty() {
        return text(StatusCode::OK, "Healthy.\n");
    }
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Unhealthy: {}.\n", problems.join("; ")),
    )
}

fn landing(telemetry_path: &str) -> Response<Full<Bytes>> {
    let page = format!(
        "<html><head><title>port-monitor</title></head><body><h1>port-monitor</h1>\
         <p>eBPF ephemeral port monitor.</p><ul><li><a href=\"{telemetry_path}\">Metrics</a></li>\
         <li><a href=\"/-/healthy\">Health</a></li><li><a href=\"/-/ready\">Readiness</a></li>\
         </ul></body></html>\n"
    );
    let mut response = Response::new(Full::new(Bytes::from(page)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(ready: bool) -> Endpoint {
        let health = Health::new(Duration::from_secs(5), Duration::from_secs(1));
        if ready {
            health.snapshot_taken(Duration::ZERO);
            health.counters_polled();
        }
        Endpoint {
            registry: Registry::new(),
            telemetry_path: "/metrics".into(),
            health: Arc::new(health),
            web: WebConfig::default(),
        }
    }

    #[test]
    fn routes_requests() {
        let cases = [
            (Method::GET, "/metrics", true, StatusCode::OK),
            (Method::HEAD, "/metrics", true, StatusCode::OK),
            (Method::GET, "/", true, StatusCode::OK),
            (Method::GET, "/-/healthy", false, StatusCode::OK),
            (Method::GET, "/-/ready", true, StatusCode::OK),
            (
                Method::GET,
                "/-/ready",
                false,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (Method::GET, "/nope", true, StatusCode::NOT_FOUND),
            (
                Method::POST,
                "/metrics",
                true,
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (Method::DELETE, "/", true, StatusCode::METHOD_NOT_ALLOWED),
        ];
        for (method, path, ready, expected) in cases {
            let response = route(&endpoint(ready), &method, path, false);
            assert_eq!(response.status(), expected, "{method} {path}");
        }
    }

    #[test]
    fn gzip_when_asked_and_not_refused() {
        let cases = [
            ("gzip", true),
            ("deflate, gzip;q=0.8", true),
            ("GZIP", true),
            ("gzip;q=0", false),
            ("identity", false),
            ("", false),
        ];
        for (header, expected) in cases {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(
                hyper::header::ACCEPT_ENCODING,
                HeaderValue::from_static(header),
            );
            assert_eq!(accepts_gzip(&headers), expected, "{header:?}");
        }
        let response = route(&endpoint(true), &Method::GET, "/metrics", true);
        assert_eq!(response.headers()[hyper::header::CONTENT_ENCODING], "gzip");
    }

    #[test]
    fn method_not_allowed_says_what_is() {
        let response = route(&endpoint(true), &Method::PUT, "/metrics", false);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}

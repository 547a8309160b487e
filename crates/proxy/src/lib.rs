//! The node-local registry proxy (replaces Workflow's nginx `registry-proxy` DaemonSet).
//!
//! Docker and containerd trust registries on 127.0.0.0/8 over plain HTTP, so every node runs this
//! proxy on `127.0.0.1:5555` and reaches the in-cluster registry through it. It forwards every
//! request to the registry Service with bodies streamed both ways (no size limit, nothing
//! buffered), drops hop-by-hop headers, adds `X-Forwarded-*`, and optionally refuses writes
//! (`read_only`: nodes only pull) or adds upstream Basic credentials (nodes need none).
//!
//! The added credential is a pull identity, so it goes only on reads that carry no credential of
//! their own, and never on the `/v2/` ping: a client holding credentials (a builder that logged
//! in) learns from the registry's challenge there that it must send them, and its requests pass
//! as they are; a write without credentials reaches the registry without any and gets its 401.
//!
//! Dependencies: `hyper-util`'s pooled client (plain HTTP/1.1 to the Service; no TLS inside the
//! cluster), `axum` for the router (served by the `serve` crate, whose `ZeroCopy` relays blob
//! bodies), `httparse` (hyper's own parser) for the response heads of spliced relays, `base64`
//! for the Basic credential.

mod spliced;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use oci::ErrorCode;

#[derive(Clone)]
pub struct Config {
    /// The registry Service, `host:port`.
    pub upstream: String,
    pub read_only: bool,
    /// `Authorization` value added to reads that carry none (see the module docs).
    pub upstream_auth: Option<HeaderValue>,
    /// How long to wait for the registry's response headers (nginx's proxy_read_timeout: 900 s).
    pub response_timeout: Duration,
    /// Relay blob GETs of HTTP/1 clients with `splice(2)` (see `spliced`).
    pub splice: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("upstream", &self.upstream)
            .field("read_only", &self.read_only)
            .field("splice", &self.splice)
            .field(
                "upstream_auth",
                &self.upstream_auth.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `Authorization: Basic …` for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> Option<HeaderValue> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = HeaderValue::from_str(&format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[derive(Clone)]
struct Proxy {
    config: Config,
    client: Client<HttpConnector, Body>,
}

pub fn router(config: Config) -> axum::Router {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    axum::Router::new()
        .fallback(forward)
        .with_state(Proxy { config, client })
}

/// Polls the registry once a second until it answers any HTTP response. While it waits it logs
/// what it tried and what it got, at 1, 2, 4, … up to every 60 s, so a registry that stays down
/// keeps showing in the log without flooding it.
pub async fn wait_for_upstream(upstream: &str) {
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: http::Uri = match format!("http://{upstream}/v2/").parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    let started = std::time::Instant::now();
    let mut next_report = Duration::ZERO;
    let mut gap = Duration::from_secs(1);
    for attempt in 1u64.. {
        // A Service address that drops packets would hang a connect for minutes.
        let error =
            match tokio::time::timeout(Duration::from_secs(5), client.get(uri.clone())).await {
                Ok(Ok(_)) => {
                    tracing::info!(upstream, attempts = attempt, "registry is online");
                    return;
                }
                Ok(Err(e)) => error_chain(&e),
                Err(_) => "no answer within 5 s".to_owned(),
            };
        let waited = started.elapsed();
        if waited >= next_report {
            tracing::info!(
                upstream, url = %uri, attempts = attempt, waited_s = waited.as_secs(),
                error,
                "waiting for the registry to come online..."
            );
            next_report = waited + gap;
            gap = (gap * 2).min(Duration::from_secs(60));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// An error and its causes on one line (hyper's own message is only "client error (Connect)").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn forward(
    State(proxy): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match refusal(&proxy.config, &req) {
        Some(refused) => refused,
        None => relay(&proxy, peer, req).await,
    };
    tracing::info!(%method, path, status = response.status().as_u16(),
        ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3, "proxied");
    response
}

/// Requests answered here without reaching the registry.
fn refusal(config: &Config, req: &Request) -> Option<Response> {
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if is_ancient_docker(agent) {
        return Some(oci_error(ErrorCode::ClientTooOld, None));
    }
    if config.read_only && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Some(oci_error(
            ErrorCode::Unsupported,
            Some(
                "this node proxy is read-only: pushes go to the registry Service, not through 127.0.0.1",
            ),
        ));
    }
    None
}

/// The nginx rule the original shipped: Docker 1.3–1.5 (but not 1.5.x-dev builds) and Go's old
/// `Go 1.1 package http` agent spoke only the v1 API.
fn is_ancient_docker(agent: &str) -> bool {
    if agent.starts_with("Go ") {
        return true;
    }
    let Some(version) = agent.strip_prefix("docker/1.") else {
        return false;
    };
    let mut parts = version.split(|c: char| !c.is_ascii_alphanumeric() && c != '-');
    match parts.next() {
        Some("3" | "4") => true,
        Some("5") => {
            let rest = &version[1..];
            // "1.5.0-dev" passes; "1.5.0" and "1.5.0 go1.4" do not.
            !rest
                .strip_prefix('.')
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|patch| patch.ends_with("-dev"))
        }
        _ => false,
    }
}

async fn relay(proxy: &Proxy, peer: SocketAddr, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match format!("http://{}{path}", proxy.config.upstream).parse() {
        Ok(uri) => uri,
        Err(_) => return oci_error(ErrorCode::QueryInvalid, Some("bad request path")),
    };
    // The registry Service speaks HTTP/1.1 whatever the client spoke (an h2c client's request
    // would otherwise be refused by the HTTP/1 pool).
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, peer);
    if let Some(auth) = &proxy.config.upstream_auth
        && lends_identity(&parts.method, parts.uri.path(), &parts.headers)
    {
        parts.headers.insert(header::AUTHORIZATION, auth.clone());
    }
    if proxy.config.splice
        && let Some(zero_copy) = spliced::spliceable(&parts, &body)
    {
        let upstream = spliced::get(&proxy.config.upstream, &parts, zero_copy);
        match tokio::time::timeout(proxy.config.response_timeout, upstream).await {
            Ok(Ok(Some(response))) => return response,
            // Framed otherwise: asked again through the pooled client below.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "registry unreachable");
                return oci_error(ErrorCode::BadGateway, None);
            }
            Err(_) => return oci_error(ErrorCode::GatewayTimeout, None),
        }
    }
    let upstream = proxy.client.request(Request::from_parts(parts, body));
    match tokio::time::timeout(proxy.config.response_timeout, upstream).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "registry unreachable");
            oci_error(ErrorCode::BadGateway, None)
        }
        Err(_) => oci_error(ErrorCode::GatewayTimeout, None),
    }
}

/// Whether the proxy's pull identity goes on this request: a read other than the ping, from a
/// client without credentials. An empty Basic credential counts as none: containers/image
/// (skopeo, podman) sends `Basic Og==` after a Basic challenge when it has no login.
fn lends_identity(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let ping = path == "/v2/" || path == "/v2";
    let anonymous = match headers.get(header::AUTHORIZATION) {
        None => true,
        Some(value) => value.as_bytes().eq_ignore_ascii_case(b"basic og=="),
    };
    read && !ping && anonymous
}

/// RFC 9110 §7.6.1: connection-specific headers, and any the Connection header names, are for
/// one hop only.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn add_forwarded(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {ip}"),
        None => ip.clone(),
    };
    for (name, value) in [
        ("x-forwarded-for", chain),
        ("x-real-ip", ip),
        ("x-forwarded-proto", "http".to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

/// An OCI error body with the code's status from `oci`'s table (and its message unless given).
fn oci_error(code: ErrorCode, message: Option<&str>) -> Response {
    let message = message.unwrap_or(code.message());
    let body = serde_json::json!({"errors": [{"code": code.as_str(), "message": message, "detail": null}]});
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancient_docker_agents() {
        for old in [
            "docker/1.3.0 go/go1.3.3",
            "docker/1.4.1",
            "docker/1.5.0 go/go1.4.1",
            "Go 1.1 package http",
        ] {
            assert!(is_ancient_docker(old), "{old}");
        }
        for fine in [
            "docker/1.5.0-dev go/go1.4",
            "docker/1.6.0",
            "docker/1.13.1",
            "docker/20.10.7",
            "Go-http-client/1.1",
            "containerd/1.6.20",
            "skopeo/1.9",
            "",
        ] {
            assert!(!is_ancient_docker(fine), "{fine}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn the_pull_identity_goes_only_on_anonymous_reads_past_the_ping() {
        let none = HeaderMap::new();
        let mut empty_basic = HeaderMap::new();
        empty_basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Og=="),
        );
        let mut own = HeaderMap::new();
        own.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Yjpj"),
        );
        let manifest = "/v2/app/manifests/v1";
        assert!(lends_identity(&Method::GET, manifest, &none));
        assert!(lends_identity(&Method::HEAD, manifest, &empty_basic));
        assert!(!lends_identity(&Method::GET, manifest, &own));
        assert!(!lends_identity(&Method::GET, "/v2/", &none));
        assert!(!lends_identity(&Method::PUT, manifest, &none));
        assert!(!lends_identity(
            &Method::POST,
            "/v2/app/blobs/uploads/",
            &none
        ));
        assert!(!lends_identity(&Method::DELETE, manifest, &empty_basic));
    }

    #[test]
    fn basic_auth_is_sensitive_and_redacted() {
        let v = basic_auth("user", "pass").unwrap();
        assert_eq!(v.to_str().unwrap(), "Basic dXNlcjpwYXNz");
        assert!(v.is_sensitive());
        let c = Config {
            upstream: "r:80".into(),
            read_only: true,
            upstream_auth: Some(v),
            response_timeout: Duration::from_secs(1),
            splice: true,
        };
        assert!(!format!("{c:?}").contains("dXNl"));
    }
}

//! Quayside's registry HTTP API: the OCI Distribution Spec v1.1 (Docker Registry HTTP API v2) over
//! a [`storage::Store`], plus `/metrics` (Prometheus), `/healthz` (liveness) and `/readyz`
//! (readiness: storage answers).
//!
//! A request's path: [`telemetry`] (one log line, metrics) → [`dispatch`] (parse the path into a
//! typed [`route::Target`], pick the handler by method) → a handler module per resource, each a few
//! lines calling the store → a [`response`] constructor or an [`error::ApiError`].
//!
//! Dependencies: `axum` (routing, extractors; hyper underneath streams bodies both ways),
//! `prometheus-client` (the Prometheus project's own Rust client: typed label sets, OpenMetrics text), `governor`
//! (keyed GCRA rate limiting for `--rate-limit`, rather than a hand-written token bucket),
//! `percent-encoding` (paths arrive encoded; `%2e%2e` must be seen as `..` and refused), `serde_urlencoded`
//! for query strings, `http-body-util` for the bounded manifest read; `mirror` for the
//! repositories of declared upstreams (`mirrored` renames a request to the cache's repository
//! before access control, then answers it through the mirror).

mod auth;
mod blobs;
pub mod error;
pub mod gc;
pub mod health;
mod limit;
mod listing;
mod manifests;
pub mod metrics;
mod mirrored;
mod response;
pub mod route;
mod telemetry;
mod uploads;

/// The parsers of client input, public for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod parsers {
    pub use crate::blobs::parse_range;
    pub use crate::uploads::parse_content_range;
}

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{StreamExt, TryStreamExt};
use oci::ErrorCode;
use serde::Deserialize;
use storage::{ByteStream, Store};

use crate::error::ApiError;
use crate::route::{RouteError, Target};

pub use axum::Router;

/// What every handler needs. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub metrics: Arc<metrics::Metrics>,
    pub health: Arc<health::Health>,
    /// Answer blob GETs with a redirect to a presigned storage URL, where storage can sign one.
    pub redirect: bool,
    /// Send filesystem blobs with `sendfile(2)` where the connection allows (`serve::ZeroCopy`).
    pub sendfile: bool,
    /// Longest pause allowed between two pieces of a request body: a stalled upload must not hold
    /// its connection (and, on disk, a writer thread) forever.
    pub body_timeout: std::time::Duration,
    /// `None`: no access control (anyone who can reach the registry may do anything).
    pub access: Option<Arc<access::Access>>,
    /// The token endpoint URL put in challenges; `None`: derived from the request's Host.
    pub auth_realm: Option<String>,
    /// `None`: no rate limit.
    pub rate_limit: Option<Arc<limit::RateLimit>>,
    /// `None`: no upstream is mirrored.
    pub mirror: Option<Arc<mirror::Mirror>>,
}

impl App {
    pub fn new(store: Store) -> App {
        App {
            store,
            metrics: Arc::new(metrics::Metrics::default()),
            health: Arc::new(health::Health::default()),
            redirect: false,
            sendfile: true,
            body_timeout: std::time::Duration::from_secs(60),
            access: None,
            auth_realm: None,
            rate_limit: None,
            mirror: None,
        }
    }

    /// At most `per_second` requests a second per client address, `burst` at once.
    pub fn with_rate_limit(
        mut self,
        per_second: std::num::NonZeroU32,
        burst: std::num::NonZeroU32,
    ) -> App {
        self.rate_limit = Some(limit::RateLimit::new(per_second, burst));
        self
    }

    pub fn with_access(mut self, access: access::Access, realm: Option<String>) -> App {
        self.access = Some(Arc::new(access));
        self.auth_realm = realm;
        self
    }

    /// Mirrors upstreams; build the mirror with `self.metrics.mirror`, so that `/metrics`
    /// shows what it counts.
    pub fn with_mirror(mut self, mirror: mirror::Mirror) -> App {
        self.mirror = Some(Arc::new(mirror));
        self
    }

    pub fn with_body_timeout(mut self, timeout: std::time::Duration) -> App {
        self.body_timeout = timeout;
        self
    }

    pub fn with_redirect(mut self, redirect: bool) -> App {
        self.redirect = redirect;
        self
    }

    pub fn with_sendfile(mut self, sendfile: bool) -> App {
        self.sendfile = sendfile;
        self
    }
}

/// Every query parameter the API reads.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    pub digest: Option<String>,
    pub mount: Option<String>,
    pub from: Option<String>,
    pub n: Option<String>,
    pub last: Option<String>,
    #[serde(rename = "artifactType")]
    pub artifact_type: Option<String>,
    /// containerd's mirror convention: the registry the client meant (`docker.io`).
    pub ns: Option<String>,
    /// Every `tag=` of a manifest PUT by digest (the spec's main branch: several tags at once).
    #[serde(skip)]
    pub tags: Vec<String>,
}

/// The route label a response carries for the telemetry middleware.
#[derive(Clone, Copy, Debug)]
pub struct RouteLabel(pub &'static str);

/// The registry's router, built once.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/v2/", get(base).head(base))
        .route("/v2", get(base).head(base))
        .route("/v2/_catalog", get(catalog))
        .route("/auth/token", get(auth::token))
        .route("/v2/{*rest}", axum::routing::any(dispatch))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::serve))
        .fallback(|| async {
            ApiError::new(ErrorCode::NameUnknown, "no such endpoint").into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            limit::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            health::gate,
        ))
        .layer(axum::middleware::from_fn(refuse_large_headers))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            telemetry::observe,
        ))
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .with_state(app)
}

/// An error answered to a request that carried a body (a 401 before a push's body is read, a
/// refused chunk) may leave that body unread in the connection; hyper then closes it, and a
/// client that reuses it (Go's does) finds it closed under its next request. Saying
/// `Connection: close` up front makes the client open a new one instead.
async fn close_after_refused_body(req: Request, next: axum::middleware::Next) -> Response {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    // HTTP/2 has no Connection header; its streams end on their own.
    let h1 = req.version() <= axum::http::Version::HTTP_11;
    let mut response = next.run(req).await;
    let refused = response.status().is_client_error() || response.status().is_server_error();
    if has_body && h1 && refused {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Header limits the registry enforces itself, so that a client over them gets an OCI error
/// body. The connection layer (`serve`) lets through 1,024 fields and hyper's buffer of about
/// 400 KiB; only a request past those gets hyper's own bare 431.
pub const MAX_HEADER_FIELDS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

async fn refuse_large_headers(req: Request, next: axum::middleware::Next) -> Response {
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() <= MAX_HEADER_FIELDS && bytes <= MAX_HEADER_BYTES {
        return next.run(req).await;
    }
    let message = format!(
        "{} header fields of {bytes} bytes; at most {MAX_HEADER_FIELDS} fields and {} KiB",
        headers.len(),
        MAX_HEADER_BYTES / 1024
    );
    let mut response = ApiError::new(ErrorCode::HeadersTooLarge, message).into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

async fn base(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = auth::check_base(&app, &headers) {
        return labelled(e.into_response(), "base");
    }
    let mut response = axum::Json(serde_json::json!({})).into_response();
    response.headers_mut().insert(
        "docker-distribution-api-version",
        response::header_value("registry/2.0"),
    );
    labelled(response, "base")
}

async fn ready(State(app): State<App>) -> Response {
    match app.store.check().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            ApiError::internal(ErrorCode::Unavailable, &format!("storage: {e}")).into_response()
        }
    }
}

async fn catalog(State(app): State<App>, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    // Only what the caller may pull is listed.
    let visible = |name: &str| auth::can_list(&app, &headers, name);
    let result = match params(uri.query()) {
        Ok(p) => listing::catalog(&app, &p, &visible).await,
        Err(e) => Err(e),
    };
    labelled(
        result.unwrap_or_else(IntoResponse::into_response),
        "catalog",
    )
}

/// Every `/v2/<name>/...` request: parse the path once, then pick the handler by method.
async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (target, label) = match target(parts.uri.path()) {
        Ok(t) => {
            let label = t.label();
            (t, label)
        }
        Err(e) => return labelled(e.into_response(), "unknown"),
    };
    // Set once the request's `ns` named a mirrored upstream.
    let mut honoured_ns = None;
    let result = async {
        let mut params = params(parts.uri.query())?;
        let (target, mirrored) = mirrored::resolve(&app, target, params.ns.as_deref())?;
        if mirrored.is_some() {
            honoured_ns = params.ns.clone();
        }
        auth::check(&app, &parts.headers, &parts.method, &target, &mut params)?;
        match mirrored {
            Some((mirror, m)) => mirrored::handle(&app, mirror, &m, &parts, target, &params).await,
            None => handle(&app, &parts, target, &params, body).await,
        }
    }
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    // The spec's main branch: a registry that honours `ns` says so (and only then).
    if let Some(ns) = honoured_ns
        && let Ok(value) = axum::http::HeaderValue::from_str(&ns)
    {
        response.headers_mut().insert("oci-namespace", value);
    }
    labelled(response, label)
}

pub(crate) async fn handle(
    app: &App,
    req: &Parts,
    target: Target,
    params: &Params,
    body: Body,
) -> Result<Response, ApiError> {
    let (method, headers) = (&req.method, &req.headers);
    let head = method == Method::HEAD;
    match (method.clone(), target) {
        (Method::GET | Method::HEAD, Target::Manifest(n, r)) => {
            manifests::get(app, &n, &r, head).await
        }
        (Method::PUT, Target::Manifest(n, r)) => {
            manifests::put(app, &n, &r, &params.tags, headers, body).await
        }
        (Method::DELETE, Target::Manifest(n, r)) => manifests::delete(app, &n, &r).await,
        (Method::GET | Method::HEAD, Target::Blob(n, d)) => {
            blobs::get(app, &n, &uploads::parse_digest(&d)?, req, head).await
        }
        (Method::DELETE, Target::Blob(n, d)) => {
            blobs::delete(app, &n, &uploads::parse_digest(&d)?).await
        }
        (Method::POST, Target::Uploads(n)) => uploads::start(app, &n, params, body).await,
        (Method::GET, Target::Upload(n, id)) => uploads::status(app, &n, &id).await,
        (Method::PATCH, Target::Upload(n, id)) => uploads::patch(app, &n, &id, headers, body).await,
        (Method::PUT, Target::Upload(n, id)) => {
            uploads::put(app, &n, &id, params, headers, body).await
        }
        (Method::DELETE, Target::Upload(n, id)) => uploads::cancel(app, &n, &id).await,
        (Method::GET, Target::Tags(n)) => listing::tags(app, &n, params).await,
        (Method::GET, Target::Referrers(n, d)) => listing::referrers(app, &n, &d, params).await,
        (method, target) => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("{method} is not supported on {}", target.label()),
        )),
    }
}

fn target(path: &str) -> Result<Target, ApiError> {
    let rest = path.strip_prefix("/v2/").unwrap_or(path);
    let rest = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| ApiError::new(ErrorCode::NameInvalid, "path is not valid UTF-8"))?;
    route::parse(&rest).map_err(|e| match e {
        RouteError::NoRoute => ApiError::new(ErrorCode::NameUnknown, "no such endpoint"),
        RouteError::Name(e) => ApiError::new(ErrorCode::NameInvalid, e.to_string()),
    })
}

fn params(query: Option<&str>) -> Result<Params, ApiError> {
    let query = query.unwrap_or("");
    let invalid = |e: serde_urlencoded::de::Error| {
        ApiError::new(ErrorCode::QueryInvalid, format!("query string: {e}"))
    };
    let mut params: Params = serde_urlencoded::from_str(query).map_err(invalid)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(invalid)?;
    params.tags = pairs
        .into_iter()
        .filter_map(|(k, v)| (k == "tag").then_some(v))
        .collect();
    Ok(params)
}

fn labelled(mut response: Response, label: &'static str) -> Response {
    response.extensions_mut().insert(RouteLabel(label));
    response
}

/// A request body as the store consumes it; a pause longer than `idle` ends it with an error.
pub(crate) fn body_stream(body: Body, idle: std::time::Duration) -> ByteStream {
    let data = body.into_data_stream().map_err(io::Error::other);
    Box::pin(futures_util::stream::unfold(
        Some(data),
        move |state| async move {
            let mut data = state?;
            match tokio::time::timeout(idle, data.next()).await {
                Ok(Some(item)) => Some((item, Some(data))),
                Ok(None) => None,
                Err(_) => {
                    let stalled = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no request body data for {idle:?}"),
                    );
                    Some((Err(stalled), None))
                }
            }
        },
    ))
}

//! Prometheus metrics: requests by route, method and status; latency by route; bytes in and out.
//! Labels are bounded (route labels are fixed strings, never repository names).

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    /// One of the methods the API routes, else `other`: the label comes from the client, and an
    /// unbounded one would grow the registry's memory and every scrape.
    pub method: &'static str,
    pub status: u16,
}

/// The method as a bounded label value.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Latency,
    pub received: Family<RouteLabels, Counter>,
    pub sent: Family<RouteLabels, Counter>,
    pub gc: GcMetrics,
    /// Counted by the mirror, when upstreams are mirrored.
    pub mirror: mirror::MirrorMetrics,
}

/// What scheduled garbage collection did.
#[derive(Default)]
pub struct GcMetrics {
    pub runs: Counter,
    pub failures: Counter,
    pub blobs_deleted: Counter,
    pub bytes_reclaimed: Counter,
    pub manifests_deleted: Counter,
    pub uploads_purged: Counter,
    pub last_duration_seconds: Gauge<f64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("quayside");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let received = Family::<RouteLabels, Counter>::default();
        let sent = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to the end of the response body",
            latency.clone(),
        );
        registry.register(
            "http_received_bytes",
            "Request body bytes received",
            received.clone(),
        );
        registry.register("http_sent_bytes", "Response body bytes sent", sent.clone());
        let gc = GcMetrics::default();
        registry.register("gc_runs", "Garbage collection runs", gc.runs.clone());
        registry.register(
            "gc_failures",
            "Garbage collection runs that failed",
            gc.failures.clone(),
        );
        registry.register(
            "gc_blobs_deleted",
            "Blobs garbage collection deleted",
            gc.blobs_deleted.clone(),
        );
        registry.register(
            "gc_reclaimed_bytes",
            "Bytes garbage collection reclaimed",
            gc.bytes_reclaimed.clone(),
        );
        registry.register(
            "gc_manifests_deleted",
            "Untagged manifests garbage collection deleted",
            gc.manifests_deleted.clone(),
        );
        registry.register(
            "gc_uploads_purged",
            "Abandoned uploads garbage collection purged",
            gc.uploads_purged.clone(),
        );
        registry.register(
            "gc_last_duration_seconds",
            "How long the last garbage collection took",
            gc.last_duration_seconds.clone(),
        );
        let mirror = mirror::MirrorMetrics::default();
        mirror.register(&mut registry);
        Metrics {
            registry,
            requests,
            latency,
            received,
            sent,
            gc,
            mirror,
        }
    }
}

pub async fn serve(State(app): State<App>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry).is_err() {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

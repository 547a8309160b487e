//! Storage health, as distribution's storage-driver health check: a background task checks the
//! store every `interval`; after `threshold` consecutive failures every endpoint but `/metrics`
//! answers 503, so readiness and liveness probes fail, and the first success restores service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use oci::ErrorCode;
use storage::Store;

use crate::App;
use crate::error::ApiError;

#[derive(Clone, Copy, Debug)]
pub struct HealthConfig {
    pub interval: Duration,
    pub threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(10),
            threshold: 3,
        }
    }
}

/// Whether storage answered recently enough to serve.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// Checks storage forever; run it beside the server.
pub async fn watch(store: Store, health: Arc<Health>, config: HealthConfig) {
    let mut failures = 0u32;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // A check that hangs (a storage endpoint that accepts but never answers) is a failure.
        let result = tokio::time::timeout(config.interval, store.check()).await;
        match result {
            Ok(Ok(())) => {
                if health.down.swap(false, Ordering::Relaxed) {
                    tracing::warn!("storage answers again: serving");
                }
                failures = 0;
            }
            Ok(Err(e)) => failures = note_failure(&health, failures, config, &e.to_string()),
            Err(_) => failures = note_failure(&health, failures, config, "check timed out"),
        }
    }
}

fn note_failure(health: &Health, failures: u32, config: HealthConfig, why: &str) -> u32 {
    let failures = failures.saturating_add(1);
    tracing::warn!(failures, error = why, "storage check failed");
    if failures >= config.threshold && !health.down.swap(true, Ordering::Relaxed) {
        tracing::error!(
            failures,
            "storage unreachable: answering 503 until it returns"
        );
    }
    failures
}

/// Answers 503 while storage is down. Metrics stay available to show why, and liveness
/// (`/healthz`) stays 200: restarting the process does not bring storage back.
pub async fn gate(State(app): State<App>, req: Request, next: Next) -> Response {
    if app.health.is_down() && !matches!(req.uri().path(), "/metrics" | "/healthz") {
        return ApiError::new(ErrorCode::Unavailable, "storage is unreachable").into_response();
    }
    next.run(req).await
}

//! What an operator alerts on: when the last refresh succeeded, when the token in the secrets
//! expires, how stale they are, how many secrets were written, errors by kind, leadership.

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `denied`, `unavailable`, `config`, `expired` (issuer handed out an expired token), `kube`.
    pub kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub last_success: FloatGauge,
    pub token_expiry: FloatGauge,
    staleness: FloatGauge,
    pub secrets_written: Counter,
    pub token_fetches: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("quayside_refresher");
        let m = Metrics {
            last_success: FloatGauge::default(),
            token_expiry: FloatGauge::default(),
            staleness: FloatGauge::default(),
            secrets_written: Counter::default(),
            token_fetches: Counter::default(),
            errors: Family::default(),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "last_success_timestamp_seconds",
            "When credentials were last fetched successfully (0: never)",
            m.last_success.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the credentials being written expire (0: long-lived or none yet)",
            m.token_expiry.clone(),
        );
        registry.register(
            "staleness_seconds",
            "Seconds since the last successful fetch (since start when there was none)",
            m.staleness.clone(),
        );
        registry.register(
            "secrets_written",
            "Pull secrets created or updated",
            m.secrets_written.clone(),
        );
        registry.register(
            "token_fetches",
            "Requests to the credential issuer",
            m.token_fetches.clone(),
        );
        registry.register("errors", "Failures by kind", m.errors.clone());
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }
}

pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// The text exposition, with staleness computed now.
    pub fn encode(&self, started: SystemTime) -> String {
        let since = match self.last_success.get() {
            0.0 => unix_seconds(started),
            t => t,
        };
        self.staleness
            .set((unix_seconds(SystemTime::now()) - since).max(0.0));
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

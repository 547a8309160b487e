//! What the mirror counts, per upstream. Label values are declared hosts and fixed words, so
//! the series are bounded by the configuration, not by clients.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    upstream: String,
    /// `manifest` or `blob`.
    kind: &'static str,
    /// `hit` or `miss`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

/// Cheap to clone: every clone counts into the same series.
#[derive(Clone, Default)]
pub struct MirrorMetrics {
    requests: Family<CacheLabels, Counter>,
    upstream_bytes: Family<UpstreamLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    expired: Family<UpstreamLabels, Counter>,
}

impl MirrorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mirror_requests",
            "Mirrored manifest and blob requests by upstream, answered from the cache (hit) or fetched (miss)",
            self.requests.clone(),
        );
        registry.register(
            "mirror_upstream_received_bytes",
            "Bytes received from each upstream",
            self.upstream_bytes.clone(),
        );
        registry.register(
            "mirror_upstream_errors",
            "Upstream requests that failed (unreachable, refused, rate-limited or not verifying)",
            self.upstream_errors.clone(),
        );
        registry.register(
            "mirror_repositories_expired",
            "Mirrored repositories forgotten after --upstream-cache-max-age without a pull",
            self.expired.clone(),
        );
    }

    pub(crate) fn hit(&self, upstream: &str, kind: &'static str) {
        self.count(upstream, kind, "hit");
    }

    pub(crate) fn miss(&self, upstream: &str, kind: &'static str) {
        self.count(upstream, kind, "miss");
    }

    fn count(&self, upstream: &str, kind: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&CacheLabels {
                upstream: upstream.to_owned(),
                kind,
                result,
            })
            .inc();
    }

    pub(crate) fn fetched(&self, upstream: &str, bytes: u64) {
        self.upstream_bytes
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc_by(bytes);
    }

    pub(crate) fn expired(&self, upstream: &str, repositories: u64) {
        self.expired
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc_by(repositories);
    }

    pub(crate) fn error(&self, upstream: &str) {
        self.upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc();
    }
}

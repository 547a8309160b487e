//! The pull-through cache: upstream registries (Docker Hub, quay.io, ECR, any registry) mirrored
//! into the registry's own storage, next to its own repositories.
//!
//! A mirrored repository is stored as `<HOST>/<repository>` (`docker.io/library/alpine`), in
//! distribution's layout like any pushed one, so garbage collection, replicas sharing a bucket
//! and crash safety are the store's. Both ways of asking land there: containerd's mirror
//! convention (`/v2/library/alpine/...?ns=docker.io`) and the path prefix
//! (`/v2/docker.io/alpine/...`), Docker Hub's `library/` rule applied to either.
//!
//! - Manifests by digest are fetched once and kept; a tag is checked upstream by `HEAD` once
//!   its last check is older than the tag TTL, and served from the cache when the upstream is
//!   down or rate-limits ([`Mirror::manifest`]).
//! - Blobs stream through ([`fetch`]): one upstream fetch per digest however many clients ask
//!   at once, each client reading at its own pace from a spool file as bytes arrive, the fetch
//!   going on when clients leave, and the last byte of any answer held back until the whole
//!   blob verified, so a lying upstream's bytes never make a complete answer or a cached blob.
//! - With a cache max age, repositories nobody pulled for that long are forgotten (`expiry`),
//!   for gc to reclaim.
//!
//! Dependencies: `registry-client` (the upstream side: Basic and Bearer auth, streamed blobs),
//! `storage` (the cache is the store), `tempfile` (spool files unlinked on creation, so a crash
//! leaves none behind), `prometheus-client` (hit, miss, upstream bytes and errors per upstream),
//! `tokio` (`watch` carries a fetch's progress to every reader).

mod expiry;
pub mod fetch;
mod metrics;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci::{Digest, Reference, RepoName, Tag};
use registry_client::{Client, CredentialSource};
use storage::{ManifestContent, Store, StoreError};

pub use fetch::{BlobSource, Fetch};
pub use metrics::MirrorMetrics;

/// Docker Hub's namespace, whose one-component names live under `library/`.
pub const DOCKER_HUB: &str = "docker.io";

/// Above this many remembered tag checks the memory is cleared: the next request of each tag
/// checks its upstream again, which is only a `HEAD`.
const MAX_FRESH_TAGS: usize = 100_000;

/// One upstream as declared: `HOST=URL`.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// The namespace clients name (`docker.io`, `quay.io`): containerd's `ns`, and the first
    /// component of a prefixed path.
    pub host: String,
    /// Where the upstream's API is (`https://registry-1.docker.io`).
    pub url: String,
    /// `None`: anonymous (a Bearer token realm is still followed).
    pub credentials: Option<Arc<dyn CredentialSource>>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("host", &self.host)
            .field("url", &self.url)
            .field("credentials", &self.credentials.is_some())
            .finish()
    }
}

impl UpstreamConfig {
    /// Parses `HOST=URL`.
    pub fn parse(text: &str) -> Result<UpstreamConfig, String> {
        let (host, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not HOST=URL"))?;
        let host = host.trim().to_ascii_lowercase();
        if host.contains('/') || format!("{host}/x").parse::<RepoName>().is_err() {
            return Err(format!(
                "upstream host {host:?} must be one repository-name component \
                 (lowercase letters, digits, '.', '_', '-'), e.g. docker.io"
            ));
        }
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "upstream URL {url:?} for {host} must start with https:// or http://"
            ));
        }
        Ok(UpstreamConfig {
            host,
            url: url.to_owned(),
            credentials: None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// How long a tag's upstream answer is trusted before it is checked again.
    pub tag_ttl: Duration,
    /// Where blobs being fetched are spooled for the clients reading them.
    pub spool_dir: PathBuf,
    /// Forget a mirrored repository nobody pulled for this long (`None`: keep everything).
    pub cache_max_age: Option<Duration>,
    /// Blob fetches running at once. Fetches outlive the clients that started them, so this is
    /// what bounds the tasks, upstream connections and spool space clients can make us hold.
    pub max_fetches: usize,
}

/// Why a mirrored request failed. Messages name the upstream by its declared host, never its
/// URL or anything of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    #[error("no upstream is declared for namespace {0:?}")]
    UnknownUpstream(String),
    #[error("{0}")]
    NotFound(String),
    #[error("upstream {upstream} refused access: {reason}")]
    Denied { upstream: String, reason: String },
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: String, reason: String },
    #[error("upstream {upstream} sent content that does not verify: {reason}")]
    Invalid { upstream: String, reason: String },
    #[error("{0}")]
    Name(String),
    /// The store failed (or refused what the upstream sent); the registry maps it as any
    /// store error.
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// `max_fetches` blob fetches are running; the client should come back shortly.
    #[error(
        "{0} blob fetches from upstreams are running, the most this registry runs at once; retry shortly"
    )]
    Busy(usize),
    /// Our side: a spool file could not be made or read.
    #[error("spooling a fetched blob: {0}")]
    Spool(String),
}

impl From<StoreError> for MirrorError {
    fn from(e: StoreError) -> Self {
        MirrorError::Store(Arc::new(e))
    }
}

struct Upstream {
    host: String,
    client: Client,
}

/// A request's repository seen through the mirror.
#[derive(Clone)]
pub struct Mirrored {
    /// Where the cache keeps it: `<HOST>/<remote>`.
    pub cache: RepoName,
    /// The repository's name upstream.
    pub remote: String,
    upstream: Arc<Upstream>,
}

impl Mirrored {
    pub fn host(&self) -> &str {
        &self.upstream.host
    }
}

pub struct Mirror {
    store: Store,
    upstreams: HashMap<String, Arc<Upstream>>,
    options: Options,
    fetches: fetch::Fetches,
    /// When each cached tag was last confirmed upstream (per process: a restart checks again).
    fresh: Mutex<HashMap<(RepoName, Tag), Instant>>,
    expiry: Option<expiry::Expiry>,
    metrics: MirrorMetrics,
}

impl Mirror {
    pub fn new(
        store: Store,
        upstreams: Vec<UpstreamConfig>,
        options: Options,
        metrics: MirrorMetrics,
    ) -> Mirror {
        let upstreams = upstreams
            .into_iter()
            .map(|u| {
                let client = Client::at_url(&u.host, &u.url, u.credentials);
                (
                    u.host.clone(),
                    Arc::new(Upstream {
                        host: u.host,
                        client,
                    }),
                )
            })
            .collect();
        Mirror {
            store,
            upstreams,
            expiry: options.cache_max_age.map(expiry::Expiry::new),
            options,
            fetches: fetch::Fetches::default(),
            fresh: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Whether `name` (with containerd's `ns`, if sent) is a mirrored repository, and which.
    /// `ns` naming no declared upstream is an error, so that containerd moves on to its next
    /// host instead of being served a local repository of the same name.
    pub fn resolve(
        &self,
        ns: Option<&str>,
        name: &RepoName,
    ) -> Result<Option<Mirrored>, MirrorError> {
        let (upstream, remote) = match ns {
            Some(ns) => {
                let ns = ns.to_ascii_lowercase();
                let upstream = self
                    .upstreams
                    .get(&ns)
                    .ok_or(MirrorError::UnknownUpstream(ns))?;
                (upstream, name.as_str())
            }
            None => {
                let Some((first, rest)) = name.as_str().split_once('/') else {
                    return Ok(None);
                };
                match self.upstreams.get(first) {
                    Some(upstream) => (upstream, rest),
                    None => return Ok(None),
                }
            }
        };
        let remote = if upstream.host == DOCKER_HUB && !remote.contains('/') {
            format!("library/{remote}")
        } else {
            remote.to_owned()
        };
        let cache = format!("{}/{remote}", upstream.host)
            .parse()
            .map_err(|e| MirrorError::Name(format!("{}/{remote}: {e}", upstream.host)))?;
        Ok(Some(Mirrored {
            cache,
            remote,
            upstream: upstream.clone(),
        }))
    }

    /// The manifest `reference` names, from the cache or the upstream.
    pub async fn manifest(
        &self,
        m: &Mirrored,
        reference: &Reference,
    ) -> Result<ManifestContent, MirrorError> {
        self.touch(m);
        match reference {
            Reference::Digest(d) => self.manifest_by_digest(m, d).await,
            Reference::Tag(t) => self.manifest_by_tag(m, t).await,
        }
    }

    async fn manifest_by_digest(
        &self,
        m: &Mirrored,
        digest: &Digest,
    ) -> Result<ManifestContent, MirrorError> {
        let reference = Reference::Digest(digest.clone());
        if let Some(cached) = self.cached_manifest(m, &reference).await? {
            self.metrics.hit(m.host(), "manifest");
            return Ok(cached);
        }
        self.metrics.miss(m.host(), "manifest");
        self.fetch_manifest(m, &digest.to_string(), &reference)
            .await
    }

    async fn manifest_by_tag(
        &self,
        m: &Mirrored,
        tag: &Tag,
    ) -> Result<ManifestContent, MirrorError> {
        let reference = Reference::Tag(tag.clone());
        let cached = self.cached_manifest(m, &reference).await?;
        if let Some(cached) = &cached
            && self.is_fresh(m, tag)
        {
            self.metrics.hit(m.host(), "manifest");
            return Ok(cached.clone());
        }
        let image = self.image(m, tag.as_str());
        let content = match (m.upstream.client.manifest_digest(&image).await, cached) {
            (Ok(Some(now)), Some(cached)) if now == cached.digest => {
                self.metrics.hit(m.host(), "manifest");
                cached
            }
            (Ok(Some(now)), _) => {
                // New or moved upstream: its content by digest (perhaps cached already under
                // another tag), then the tag pointed at it.
                let content = self.manifest_by_digest(m, &now).await?;
                self.store
                    .manifest_put_mirrored(
                        &m.cache,
                        &reference,
                        Some(&content.media_type),
                        content.body.clone(),
                    )
                    .await?;
                content
            }
            (Ok(None), _) => {
                self.metrics.miss(m.host(), "manifest");
                self.fetch_manifest(m, tag.as_str(), &reference).await?
            }
            (Err(e), cached) => {
                let e = self.upstream_error(m, e);
                match (e, cached) {
                    // Gone upstream: not served from the cache as if it were still there.
                    (e @ MirrorError::NotFound(_), _) | (e, None) => return Err(e),
                    (e, Some(cached)) => {
                        tracing::warn!(upstream = m.host(), repository = %m.remote, %tag, error = %e,
                            "serving the cached tag: its upstream did not answer");
                        return Ok(cached);
                    }
                }
            }
        };
        self.mark_fresh(m, tag);
        Ok(content)
    }

    async fn cached_manifest(
        &self,
        m: &Mirrored,
        reference: &Reference,
    ) -> Result<Option<ManifestContent>, MirrorError> {
        match self.store.manifest_get(&m.cache, reference).await {
            Ok(content) => Ok(Some(content)),
            Err(StoreError::ManifestUnknown) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches a manifest (verified against its digest when asked by digest) and caches it
    /// under `reference`.
    async fn fetch_manifest(
        &self,
        m: &Mirrored,
        upstream_reference: &str,
        reference: &Reference,
    ) -> Result<ManifestContent, MirrorError> {
        let image = self.image(m, upstream_reference);
        let fetched = m
            .upstream
            .client
            .manifest(&image)
            .await
            .map_err(|e| self.upstream_error(m, e))?;
        let stored = self
            .store
            .manifest_put_mirrored(
                &m.cache,
                reference,
                Some(&fetched.media_type),
                fetched.body.clone(),
            )
            .await
            .map_err(|e| match e {
                StoreError::DigestMismatch { .. } | StoreError::ManifestInvalid(_) => {
                    self.metrics.error(m.host());
                    MirrorError::Invalid {
                        upstream: m.host().to_owned(),
                        reason: e.to_string(),
                    }
                }
                e => e.into(),
            })?;
        self.metrics.fetched(m.host(), fetched.body.len() as u64);
        Ok(ManifestContent {
            digest: stored.digest,
            media_type: fetched.media_type,
            body: fetched.body,
        })
    }

    /// Where a blob's bytes come from: the cache, or a fetch (joined if one is running).
    pub async fn blob(&self, m: &Mirrored, digest: &Digest) -> Result<BlobSource, MirrorError> {
        self.touch(m);
        match self.store.blob_size(&m.cache, digest).await {
            Ok(size) => {
                self.metrics.hit(m.host(), "blob");
                return Ok(BlobSource::Stored { size });
            }
            Err(StoreError::BlobUnknown) => {}
            Err(e) => return Err(e.into()),
        }
        let source = self.fetches.join_or_start(self, m, digest).await?;
        match &source {
            BlobSource::Stored { .. } => self.metrics.hit(m.host(), "blob"),
            BlobSource::Fetching(_) => self.metrics.miss(m.host(), "blob"),
        }
        Ok(source)
    }

    /// A blob's size without fetching it: the cache's, or the upstream's by `HEAD`.
    pub async fn blob_size(&self, m: &Mirrored, digest: &Digest) -> Result<u64, MirrorError> {
        match self.store.blob_size(&m.cache, digest).await {
            Ok(size) => Ok(size),
            Err(StoreError::BlobUnknown) => m
                .upstream
                .client
                .blob_size(&m.remote, digest)
                .await
                .map_err(|e| self.upstream_error(m, e)),
            Err(e) => Err(e.into()),
        }
    }

    fn touch(&self, m: &Mirrored) {
        if let Some(expiry) = &self.expiry {
            expiry.touch(&self.store, &m.cache);
        }
    }

    /// With a cache max age, forgets unused mirrored repositories every so often, forever.
    pub async fn expire_unused(self: Arc<Self>) {
        let Some(expiry) = &self.expiry else {
            return;
        };
        loop {
            tokio::time::sleep(expiry.pass_interval()).await;
            for host in self.upstreams.keys() {
                match expiry.pass(&self.store, host).await {
                    Ok(forgotten) if !forgotten.is_empty() => {
                        tracing::info!(upstream = %host, repositories = ?forgotten, max_age = ?expiry.max_age,
                            "forgot mirrored repositories nobody pulled; gc reclaims their blobs");
                        self.metrics.expired(host, forgotten.len() as u64);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(upstream = %host, error = %e, "expiring mirrored repositories failed")
                    }
                }
            }
        }
    }

    fn image(&self, m: &Mirrored, reference: &str) -> images::ImageRef {
        images::ImageRef {
            registry: m.host().to_owned(),
            repository: m.remote.clone(),
            reference: reference.to_owned(),
        }
    }

    fn is_fresh(&self, m: &Mirrored, tag: &Tag) -> bool {
        let fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        fresh
            .get(&(m.cache.clone(), tag.clone()))
            .is_some_and(|at| at.elapsed() < self.options.tag_ttl)
    }

    fn mark_fresh(&self, m: &Mirrored, tag: &Tag) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if fresh.len() >= MAX_FRESH_TAGS {
            fresh.clear();
        }
        fresh.insert((m.cache.clone(), tag.clone()), Instant::now());
    }

    /// An upstream's refusal or failure as the mirror reports it, counted.
    fn upstream_error(&self, m: &Mirrored, e: registry_client::Error) -> MirrorError {
        let e = upstream_error(m, e);
        if !matches!(e, MirrorError::NotFound(_)) {
            self.metrics.error(m.host());
        }
        e
    }
}

/// An upstream's refusal or failure as the mirror reports it.
fn upstream_error(m: &Mirrored, e: registry_client::Error) -> MirrorError {
    use registry_client::Error as E;
    let upstream = m.host().to_owned();
    let reason = e.to_string();
    match e {
        E::NotFound { what, .. } => MirrorError::NotFound(format!("{what} upstream")),
        E::Unauthorized { .. } | E::LoginFailed { .. } | E::Denied { .. } => {
            MirrorError::Denied { upstream, reason }
        }
        E::Protocol { .. } => MirrorError::Invalid { upstream, reason },
        E::Status { .. } | E::Http { .. } | E::Credentials { .. } => {
            MirrorError::Unavailable { upstream, reason }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mirror(dir: &std::path::Path) -> Mirror {
        // The upstream clients' HTTPS, as the binary sets it up first thing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let backend = Arc::new(storage::FsBackend::new(dir, false));
        let upstreams = [
            "docker.io=https://registry-1.docker.io",
            "quay.io=https://quay.io/",
        ]
        .iter()
        .map(|u| UpstreamConfig::parse(u).unwrap())
        .collect();
        let options = Options {
            tag_ttl: Duration::from_secs(60),
            spool_dir: dir.to_owned(),
            cache_max_age: None,
            max_fetches: 4,
        };
        Mirror::new(
            Store::new(backend, 1 << 20),
            upstreams,
            options,
            MirrorMetrics::default(),
        )
    }

    fn resolved(m: &Mirror, ns: Option<&str>, name: &str) -> Option<(String, String)> {
        m.resolve(ns, &name.parse().unwrap())
            .unwrap()
            .map(|r| (r.cache.to_string(), r.remote))
    }

    #[test]
    fn both_ways_of_asking_name_one_cached_repository() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(dir.path());
        let alpine = Some(("docker.io/library/alpine".into(), "library/alpine".into()));
        assert_eq!(resolved(&m, Some("docker.io"), "alpine"), alpine);
        assert_eq!(resolved(&m, Some("docker.io"), "library/alpine"), alpine);
        assert_eq!(resolved(&m, None, "docker.io/alpine"), alpine);
        assert_eq!(resolved(&m, None, "docker.io/library/alpine"), alpine);
        // Docker Hub's rule is Docker Hub's only.
        assert_eq!(
            resolved(&m, None, "quay.io/app"),
            Some(("quay.io/app".into(), "app".into()))
        );
        // The registry's own repositories stay its own.
        assert_eq!(resolved(&m, None, "team/app"), None);
        assert_eq!(resolved(&m, None, "docker.io"), None);
        assert!(matches!(
            m.resolve(Some("ghcr.io"), &"app".parse().unwrap()),
            Err(MirrorError::UnknownUpstream(_))
        ));
    }

    #[test]
    fn declarations_are_checked() {
        let u = UpstreamConfig::parse("Docker.IO=https://registry-1.docker.io/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.url.as_str()),
            ("docker.io", "https://registry-1.docker.io")
        );
        for bad in [
            "docker.io",
            "a/b=https://x",
            "docker.io=ftp://x",
            "has space=https://x",
        ] {
            assert!(UpstreamConfig::parse(bad).is_err(), "{bad}");
        }
    }
}

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Algorithm, Digest, Hasher, ManifestError};

use crate::backend::{Backend, BackendError};

/// Largest link file read; links hold one digest.
pub(crate) const LINK_LIMIT: u64 = 1024;

/// The registry's store over one backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) max_manifest: u64,
    /// Manifest bytes by digest. Content under a digest never changes, so entries never go
    /// stale; whether a repository still holds the manifest is read from storage every time.
    pub(crate) manifests: Arc<quick_cache::sync::Cache<Digest, CachedManifest, ManifestWeight>>,
    /// Tag and digest resolutions, for [`Store::with_resolution_ttl`].
    pub(crate) resolved: Arc<crate::resolved::Resolutions>,
}

/// Bytes of manifests kept in memory.
const MANIFEST_CACHE_BYTES: u64 = 32 << 20;

#[derive(Clone)]
pub(crate) struct CachedManifest {
    pub media_type: Arc<str>,
    pub body: bytes::Bytes,
}

#[derive(Clone)]
pub(crate) struct ManifestWeight;

impl quick_cache::Weighter<Digest, CachedManifest> for ManifestWeight {
    fn weight(&self, _: &Digest, m: &CachedManifest) -> u64 {
        m.body.len() as u64 + 64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob unknown to this repository")]
    BlobUnknown,
    #[error("upload unknown")]
    UploadUnknown,
    #[error("upload is in use by another request; retry when it has finished")]
    UploadBusy,
    /// A garbage collection that stalled (or died) still marks a blob this request needs.
    #[error("garbage collection is deciding about {0}; retry shortly")]
    Collecting(Digest),
    /// Garbage collection cannot know what an unreadable manifest references, so it stops.
    #[error(
        "stored manifest {digest} cannot be read ({reason}): delete it, or raise --max-manifest-bytes if it is merely larger; garbage collection deleted no blob"
    )]
    StoredManifestInvalid { digest: Digest, reason: String },
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("repository unknown")]
    NameUnknown,
    #[error("content digest is {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upload is at offset {current}")]
    UploadOffset { current: u64 },
    #[error("received {actual} bytes where {expected} were declared")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error(transparent)]
    ManifestInvalid(#[from] ManifestError),
    #[error("manifest references {digest}, which has size {actual}, not {declared}")]
    ManifestSizeMismatch {
        digest: Digest,
        declared: u64,
        actual: u64,
    },
    #[error("manifest is larger than {limit} bytes")]
    ManifestTooBig { limit: u64 },
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("reading the request body: {0}")]
    Body(std::io::Error),
    #[error("stored link {0} is corrupt")]
    CorruptLink(String),
    #[error(transparent)]
    Backend(BackendError),
}

impl From<BackendError> for StoreError {
    fn from(e: BackendError) -> Self {
        match e {
            // Only upload claims and upload state are conditional.
            BackendError::Busy => StoreError::UploadBusy,
            e => StoreError::Backend(e),
        }
    }
}

/// Maps a backend's NotFound to the caller's notion of "unknown".
pub(crate) fn or_unknown<T>(
    r: Result<T, BackendError>,
    unknown: StoreError,
) -> Result<T, StoreError> {
    match r {
        Err(BackendError::NotFound) => Err(unknown),
        other => Ok(other?),
    }
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>, max_manifest: u64) -> Store {
        let manifests =
            quick_cache::sync::Cache::with_weighter(4096, MANIFEST_CACHE_BYTES, ManifestWeight);
        Store {
            backend,
            max_manifest,
            manifests: Arc::new(manifests),
            resolved: Arc::new(crate::resolved::Resolutions::new(std::time::Duration::ZERO)),
        }
    }

    /// Serves manifest GETs from tag and digest resolutions up to `ttl` old (zero: none kept).
    /// Changes made through this store are seen at once; changes made by another process (a
    /// replica) after at most `ttl`. See [`crate::resolved`].
    pub fn with_resolution_ttl(mut self, ttl: std::time::Duration) -> Store {
        self.resolved = Arc::new(crate::resolved::Resolutions::new(ttl));
        self
    }

    pub fn max_manifest(&self) -> u64 {
        self.max_manifest
    }

    /// Proves the backend answers: lists the top of the layout.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.backend.list(&crate::layout::repositories()).await?;
        Ok(())
    }

    /// Proves the backend takes writes: writes a small object outside the registry's layout
    /// (distribution and every walk here ignore it), reads it back, deletes it. Returns the key.
    pub async fn check_writable(&self) -> Result<String, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let key = format!("quayside-check/{nanos}-{}", std::process::id());
        let data = Bytes::from(format!("quayside check {nanos}"));
        self.backend.put(&key, data.clone()).await?;
        let read = self.backend.read(&key, 1024).await;
        self.backend.delete(&key).await?;
        if read? != data {
            let message = format!("{key} read back different bytes than were written");
            return Err(BackendError::Io(std::io::Error::other(message)).into());
        }
        Ok(key)
    }

    pub(crate) async fn read_link(&self, key: &str) -> Result<Option<Digest>, StoreError> {
        match self.backend.read(key, LINK_LIMIT).await {
            Ok(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| StoreError::CorruptLink(key.to_owned())),
            Err(BackendError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn write_link(&self, key: &str, d: &Digest) -> Result<(), StoreError> {
        Ok(self.backend.put(key, d.to_string().into()).await?)
    }

    /// The digest of an object's bytes under `alg`, by reading it through, and how many bytes
    /// that was.
    pub(crate) async fn hash_object(
        &self,
        key: &str,
        alg: Algorithm,
    ) -> Result<(Digest, u64), StoreError> {
        let mut hasher = Hasher::new(alg);
        let mut read = 0;
        let mut data = self.backend.get(key, None).await?;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(BackendError::Io)?;
            read += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hasher.finish(), read))
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.backend.size(key).await {
            Ok(size) => Ok(Some(size)),
            Err(BackendError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

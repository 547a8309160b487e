//! Upload sessions, kept entirely in the backend so that any process can continue one.
//!
//! Each append hashes the bytes as they stream through and stores the hash state for the new
//! offset; finishing an upload compares the digest without re-reading the data (unless the state is
//! missing, e.g. after a crash between append and state write, or the client asks for another
//! algorithm), then commits it under its digest in one atomic step.

use futures_util::StreamExt;
use oci::{Algorithm, Digest, Hasher, RepoName};

use crate::backend::{BackendError, ByteStream};
use crate::layout::{self, UploadId};
use crate::store::{Store, StoreError, or_unknown};

/// The algorithm hashed while chunks arrive, before the client has named the digest.
const STREAMING_ALGORITHM: Algorithm = Algorithm::Sha256;
const HASH_STATE_LIMIT: u64 = 4096;

impl Store {
    pub async fn upload_start(&self, name: &RepoName) -> Result<UploadId, StoreError> {
        let id = UploadId::new();
        let started = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
        self.backend
            .put(&layout::upload_started_at(name, id), started.into())
            .await?;
        self.backend
            .append(&layout::upload_data(name, id), 0)
            .await?
            .finish()
            .await?;
        Ok(id)
    }

    /// How many bytes the upload holds.
    pub async fn upload_offset(&self, name: &RepoName, id: UploadId) -> Result<u64, StoreError> {
        or_unknown(
            self.backend.size(&layout::upload_data(name, id)).await,
            StoreError::UploadUnknown,
        )
    }

    /// Appends a chunk. `start` (from `Content-Range`) must equal the current offset, and `len`
    /// (from `Content-Length`), when given, the number of bytes the body holds. Returns the new
    /// offset.
    pub async fn upload_append(
        &self,
        name: &RepoName,
        id: UploadId,
        start: Option<u64>,
        len: Option<u64>,
        body: ByteStream,
    ) -> Result<u64, StoreError> {
        let current = self.upload_offset(name, id).await?;
        if start.is_some_and(|s| s != current) {
            return Err(StoreError::UploadOffset { current });
        }
        let end = self
            .append_hashed(name, id, current, STREAMING_ALGORITHM, body)
            .await?;
        match len {
            Some(expected) if end - current != expected => Err(StoreError::SizeMismatch {
                expected,
                actual: end - current,
            }),
            _ => Ok(end),
        }
    }

    /// Appends the last chunk (if any), verifies the digest and makes the blob visible in the
    /// repository. Returns its size. A digest mismatch ends the upload.
    pub async fn upload_finish(
        &self,
        name: &RepoName,
        id: UploadId,
        digest: &Digest,
        body: Option<ByteStream>,
    ) -> Result<u64, StoreError> {
        let mut offset = self.upload_offset(name, id).await?;
        if let Some(body) = body {
            offset = self
                .append_hashed(name, id, offset, digest.algorithm(), body)
                .await?;
        }
        let actual = self
            .hasher_at(name, id, digest.algorithm(), offset)
            .await?
            .finish();
        if actual != *digest {
            self.upload_cancel(name, id).await?;
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let data = layout::upload_data(name, id);
        let blob = layout::blob_data(digest);
        if self.exists(&blob).await?.is_none() {
            self.backend.commit(&data, &blob).await?;
        }
        self.write_link(&layout::layer_link(name, digest), digest)
            .await?;
        self.backend
            .delete_prefix(&layout::upload_dir(name, id))
            .await?;
        Ok(offset)
    }

    pub async fn upload_cancel(&self, name: &RepoName, id: UploadId) -> Result<(), StoreError> {
        self.upload_offset(name, id).await?;
        Ok(self
            .backend
            .delete_prefix(&layout::upload_dir(name, id))
            .await?)
    }

    async fn append_hashed(
        &self,
        name: &RepoName,
        id: UploadId,
        offset: u64,
        alg: Algorithm,
        mut body: ByteStream,
    ) -> Result<u64, StoreError> {
        let mut hasher = self.hasher_at(name, id, alg, offset).await?;
        let mut out = match self
            .backend
            .append(&layout::upload_data(name, id), offset)
            .await
        {
            Err(BackendError::OffsetMismatch { current }) => {
                return Err(StoreError::UploadOffset { current });
            }
            other => or_unknown(other, StoreError::UploadUnknown)?,
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            hasher.update(&chunk);
            out.write(chunk).await?;
        }
        let end = out.finish().await?;
        if end != offset {
            let state = layout::upload_hash_state(name, id, alg, end);
            self.backend.put(&state, hasher.save().into()).await?;
            let old = layout::upload_hash_state(name, id, alg, offset);
            self.backend.delete(&old).await?;
        }
        Ok(end)
    }

    /// The hash of the first `offset` bytes: from the stored state, or by reading them.
    async fn hasher_at(
        &self,
        name: &RepoName,
        id: UploadId,
        alg: Algorithm,
        offset: u64,
    ) -> Result<Hasher, StoreError> {
        if offset == 0 {
            return Ok(Hasher::new(alg));
        }
        let state = layout::upload_hash_state(name, id, alg, offset);
        match self.backend.read(&state, HASH_STATE_LIMIT).await {
            Ok(bytes) => {
                if let Some(h) = Hasher::restore(alg, &bytes) {
                    return Ok(h);
                }
                tracing::warn!(key = %state, "unreadable hash state; re-reading the upload");
            }
            Err(BackendError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let mut hasher = Hasher::new(alg);
        let mut data = self
            .backend
            .get(&layout::upload_data(name, id), Some(0..offset))
            .await?;
        while let Some(chunk) = data.next().await {
            hasher.update(&chunk.map_err(BackendError::Io)?);
        }
        Ok(hasher)
    }
}

//! Upload sessions, kept entirely in the backend so that any process can continue one.
//!
//! Each append hashes the bytes as they stream through; the backend publishes the hash state
//! together with the new length, so finishing an upload compares the digest without re-reading
//! the data. Only when the state is unusable (the client finishes with another algorithm than the
//! one hashed while streaming) is the data read back, where the backend can (the filesystem).
//! The blob is then committed under its digest in one atomic step.

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Algorithm, Digest, Hasher, RepoName};

use crate::backend::{Appended, BackendError, ByteStream};
use crate::layout::{self, UploadId};
use crate::store::{Store, StoreError, or_unknown};

/// The algorithm hashed while chunks arrive, before the client has named the digest.
const STREAMING_ALGORITHM: Algorithm = Algorithm::Sha256;

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
            .finish(encode_state(&Hasher::new(STREAMING_ALGORITHM)))
            .await?;
        Ok(id)
    }

    /// How many bytes the upload holds.
    pub async fn upload_offset(&self, name: &RepoName, id: UploadId) -> Result<u64, StoreError> {
        Ok(self.appended(name, id).await?.len)
    }

    async fn appended(&self, name: &RepoName, id: UploadId) -> Result<Appended, StoreError> {
        or_unknown(
            self.backend.appended(&layout::upload_data(name, id)).await,
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
        let appended = self.appended(name, id).await?;
        let current = appended.len;
        if start.is_some_and(|s| s != current) {
            return Err(StoreError::UploadOffset { current });
        }
        let end = self
            .append_hashed(name, id, appended, STREAMING_ALGORITHM, body)
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
        let mut appended = self.appended(name, id).await?;
        if let Some(body) = body {
            self.append_hashed(name, id, appended, digest.algorithm(), body)
                .await?;
            appended = self.appended(name, id).await?;
        }
        let offset = appended.len;
        let actual = self
            .hasher_at(name, id, digest.algorithm(), &appended)
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
        self.backend.abort(&layout::upload_data(name, id)).await?;
        Ok(self
            .backend
            .delete_prefix(&layout::upload_dir(name, id))
            .await?)
    }

    async fn append_hashed(
        &self,
        name: &RepoName,
        id: UploadId,
        appended: Appended,
        alg: Algorithm,
        mut body: ByteStream,
    ) -> Result<u64, StoreError> {
        let mut hasher = self.hasher_at(name, id, alg, &appended).await?;
        let mut out = match self
            .backend
            .append(&layout::upload_data(name, id), appended.len)
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
        Ok(out.finish(encode_state(&hasher)).await?)
    }

    /// The hash of the upload's bytes so far: from the published state, or by reading them.
    async fn hasher_at(
        &self,
        name: &RepoName,
        id: UploadId,
        alg: Algorithm,
        appended: &Appended,
    ) -> Result<Hasher, StoreError> {
        if appended.len == 0 {
            return Ok(Hasher::new(alg));
        }
        if let Some(h) = appended.meta.as_deref().and_then(|m| decode_state(m, alg)) {
            return Ok(h);
        }
        let mut hasher = Hasher::new(alg);
        let mut data = self
            .backend
            .read_appended(&layout::upload_data(name, id), 0..appended.len)
            .await?;
        while let Some(chunk) = data.next().await {
            hasher.update(&chunk.map_err(BackendError::Io)?);
        }
        Ok(hasher)
    }
}

/// Hash state as published with an upload's length: one byte naming the algorithm, then the state.
fn encode_state(h: &Hasher) -> Bytes {
    let tag = match h.algorithm() {
        Algorithm::Sha256 => 1u8,
        Algorithm::Sha512 => 2u8,
    };
    let mut out = vec![tag];
    out.extend_from_slice(&h.save());
    out.into()
}

fn decode_state(bytes: &[u8], alg: Algorithm) -> Option<Hasher> {
    let (&tag, state) = bytes.split_first()?;
    let stored = match tag {
        1 => Algorithm::Sha256,
        2 => Algorithm::Sha512,
        _ => return None,
    };
    if stored != alg {
        return None;
    }
    Hasher::restore(alg, state)
}

//! Upload sessions, kept entirely in the backend so that any process can continue one.
//!
//! Each append hashes the bytes as they stream through; the backend publishes the hash state
//! together with the new length, so finishing an upload compares the digest without re-reading
//! the data, and the blob is committed under its digest in one atomic step. When no usable state
//! exists (the client finishes with another algorithm than the one hashed while streaming, or a
//! crash lost the state), the upload is assembled under a staging name, hashed by reading it
//! back, and only then renamed into place: unverified bytes are never visible under a digest.

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
        let (end, _) = self
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

    /// Appends the last chunk (possibly empty), verifies the digest and makes the blob visible in
    /// the repository. Returns its size. A digest mismatch ends the upload.
    pub async fn upload_finish(
        &self,
        name: &RepoName,
        id: UploadId,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64, StoreError> {
        let appended = self.appended(name, id).await?;
        let (offset, hasher) = self
            .append_hashed(name, id, appended, digest.algorithm(), body)
            .await?;
        match hasher {
            Some(hasher) => {
                self.verify(name, id, digest, hasher.finish()).await?;
                let blob = layout::blob_data(digest);
                let data = layout::upload_data(name, id);
                if self.exists(&blob).await?.is_none() {
                    self.backend.commit(&data, &blob).await?;
                } else {
                    // Already stored: drop this copy (on object stores an unfinished multipart
                    // upload is kept, and billed, until aborted).
                    self.backend.abort(&data).await?;
                }
            }
            None => self.verify_by_reading(name, id, digest).await?,
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

    async fn verify(
        &self,
        name: &RepoName,
        id: UploadId,
        expected: &Digest,
        actual: Digest,
    ) -> Result<(), StoreError> {
        if actual == *expected {
            return Ok(());
        }
        self.upload_cancel(name, id).await?;
        Err(StoreError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }

    /// Assembles the upload under a staging name, hashes it by reading it back, and renames it
    /// to the blob's name if the digest matches.
    async fn verify_by_reading(
        &self,
        name: &RepoName,
        id: UploadId,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let staged = layout::upload_assembled(name, id);
        self.backend
            .commit(&layout::upload_data(name, id), &staged)
            .await?;
        let mut hasher = Hasher::new(digest.algorithm());
        let mut data = self.backend.get(&staged, None).await?;
        while let Some(chunk) = data.next().await {
            hasher.update(&chunk.map_err(BackendError::Io)?);
        }
        self.verify(name, id, digest, hasher.finish()).await?;
        let blob = layout::blob_data(digest);
        if self.exists(&blob).await?.is_none() {
            self.backend.rename(&staged, &blob).await?;
        }
        Ok(())
    }

    /// Appends `body`, hashing it on top of the state published so far. Returns the new length
    /// and the hash of everything appended (`None` when no usable state came before).
    async fn append_hashed(
        &self,
        name: &RepoName,
        id: UploadId,
        appended: Appended,
        alg: Algorithm,
        mut body: ByteStream,
    ) -> Result<(u64, Option<Hasher>), StoreError> {
        // Without the hash of what came before, keep appending and verify by reading at the end.
        let mut hasher = self.hasher_at(alg, &appended);
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
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            out.write(chunk).await?;
        }
        let meta = hasher.as_ref().map(encode_state).unwrap_or_default();
        let end = out.finish(meta).await?;
        Ok((end, hasher))
    }

    /// The hash of the upload's bytes so far, from the state published with its length.
    fn hasher_at(&self, alg: Algorithm, appended: &Appended) -> Option<Hasher> {
        if appended.len == 0 {
            return Some(Hasher::new(alg));
        }
        appended.meta.as_deref().and_then(|m| decode_state(m, alg))
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

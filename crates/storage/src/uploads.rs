//! Upload sessions, kept entirely in the backend so that any process can continue one.
//!
//! Each append hashes the bytes as they stream through; the backend publishes the hash state
//! together with the new length, so finishing an upload compares the digest without re-reading
//! the data, and the blob is committed under its digest in one atomic step. When no usable state
//! exists (the client finishes with another algorithm than the one hashed while streaming, or a
//! crash lost the state), the upload is assembled under a staging name, hashed by reading it
//! back, and only then renamed into place: unverified bytes are never visible under a digest.
//!
//! One request at a time works on an upload: PATCH, PUT and DELETE hold its claim
//! ([`crate::Backend::claim`]), so two requests racing on one session (a client's retry and its
//! first attempt) never interleave bytes; the second one waits, then finds the offset moved (416)
//! or the session finished (404).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Algorithm, Digest, Hasher, RepoName};

use crate::backend::{Appended, Appender, BackendError, ByteStream, Claim};
use crate::block::Block;
use crate::layout::{self, UploadId};
use crate::store::{Store, StoreError, or_unknown};

/// The algorithm hashed while chunks arrive, before the client has named the digest.
const STREAMING_ALGORITHM: Algorithm = Algorithm::Sha256;

/// Bytes hashed per blocking-pool hop: large enough that a hop costs nothing beside the hash
/// (~0.6 ms per MiB), small enough that an upload holds little memory.
const HASH_BLOCK: usize = 1 << 20;

/// How long a request waits for another one to finish with the same upload before it is told
/// the upload is busy (a client's retry racing its first attempt usually finishes well within).
const CLAIM_WAIT: Duration = Duration::from_secs(2);

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
        let expected = self.expected_offset(name, id, start).await?;
        let claim = self.claim_upload(name, id).await?;
        let appended = self
            .append_at(name, id, expected, STREAMING_ALGORITHM, body)
            .await;
        claim.release().await;
        let (end, _) = appended?;
        match len {
            Some(len) if end - expected != len => Err(StoreError::SizeMismatch {
                expected: len,
                actual: end - expected,
            }),
            _ => Ok(end),
        }
    }

    /// Appends the last chunk (possibly empty; `start` as for [`Store::upload_append`]),
    /// verifies the digest and makes the blob visible in the repository. Returns its size. A
    /// digest mismatch ends the upload.
    pub async fn upload_finish(
        &self,
        name: &RepoName,
        id: UploadId,
        start: Option<u64>,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64, StoreError> {
        let expected = self.expected_offset(name, id, start).await?;
        let claim = self.claim_upload(name, id).await?;
        let finished = self.finish_claimed(name, id, expected, digest, body).await;
        claim.release().await;
        finished
    }

    async fn finish_claimed(
        &self,
        name: &RepoName,
        id: UploadId,
        expected: u64,
        digest: &Digest,
        body: ByteStream,
    ) -> Result<u64, StoreError> {
        let (size, hasher) = self
            .append_at(name, id, expected, digest.algorithm(), body)
            .await?;
        match hasher {
            Some(hasher) => {
                self.verify(name, id, digest, hasher.finish()).await?;
                self.hold_blob(digest).await?;
                // Always over an existing copy: it may predate verified commits, and the new
                // one is young for garbage collection's grace period.
                self.backend
                    .commit(&layout::upload_data(name, id), &layout::blob_data(digest))
                    .await?;
            }
            None => self.verify_by_reading(name, id, digest).await?,
        }
        self.write_link(&layout::layer_link(name, digest), digest)
            .await?;
        self.backend
            .delete_prefix(&layout::upload_dir(name, id))
            .await?;
        Ok(size)
    }

    pub async fn upload_cancel(&self, name: &RepoName, id: UploadId) -> Result<(), StoreError> {
        let claim = self.claim_upload(name, id).await?;
        let cancelled = match self.upload_offset(name, id).await {
            Ok(_) => self.discard_upload(name, id).await,
            Err(e) => Err(e),
        };
        claim.release().await;
        cancelled
    }

    /// Where the client means its bytes to go: its `Content-Range`, or else the offset when the
    /// request arrived, so that a retry racing its first attempt cannot append the bytes twice.
    async fn expected_offset(
        &self,
        name: &RepoName,
        id: UploadId,
        start: Option<u64>,
    ) -> Result<u64, StoreError> {
        match start {
            Some(start) => Ok(start),
            None => self.upload_offset(name, id).await,
        }
    }

    /// Waits (briefly) until no other request holds the upload, then holds it.
    pub(crate) async fn claim_upload(
        &self,
        name: &RepoName,
        id: UploadId,
    ) -> Result<Box<dyn Claim>, StoreError> {
        let key = layout::upload_data(name, id);
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            match self.backend.claim(&key).await {
                Err(BackendError::Busy) if started.elapsed() < CLAIM_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(BackendError::Busy) => return Err(StoreError::UploadBusy),
                other => return or_unknown(other, StoreError::UploadUnknown),
            }
        }
    }

    /// Removes an upload whatever state a crash or a commit left it in.
    pub(crate) async fn discard_upload(
        &self,
        name: &RepoName,
        id: UploadId,
    ) -> Result<(), StoreError> {
        match self.backend.abort(&layout::upload_data(name, id)).await {
            Ok(()) | Err(BackendError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
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
        self.discard_upload(name, id).await?;
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
        let (actual, _) = self.hash_object(&staged, digest.algorithm()).await?;
        self.verify(name, id, digest, actual).await?;
        self.hold_blob(digest).await?;
        self.backend
            .rename(&staged, &layout::blob_data(digest))
            .await?;
        Ok(())
    }

    /// Appends `body` where the upload must end now (`expected`), hashing it on top of the state
    /// published so far. The caller holds the upload's claim. Returns the new length and the hash
    /// of everything appended (`None` when no usable state came before).
    async fn append_at(
        &self,
        name: &RepoName,
        id: UploadId,
        expected: u64,
        alg: Algorithm,
        mut body: ByteStream,
    ) -> Result<(u64, Option<Hasher>), StoreError> {
        let appended = self.appended(name, id).await?;
        if appended.len != expected {
            return Err(StoreError::UploadOffset {
                current: appended.len,
            });
        }
        // Without the hash of what came before, keep appending and verify by reading at the end.
        let hasher = self.hasher_at(alg, &appended);
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
        let mut hashing = BlockHasher(hasher.map(|h| HashJob::Ready(Box::new(h))));
        let mut block = Block::with_capacity(HASH_BLOCK);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                rest = &rest[block.fill(rest)..];
                if block.is_full() {
                    let full = std::mem::replace(&mut block, Block::with_capacity(HASH_BLOCK));
                    hashing.pass_on(full.freeze(), out.as_mut()).await?;
                }
            }
        }
        if !block.is_empty() {
            hashing.pass_on(block.freeze(), out.as_mut()).await?;
        }
        let hasher = hashing.settle().await?;
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

/// An append's hash, computed a block at a time on the blocking pool: the hash is the push path's
/// largest cost, and there it runs beside the backend's write of the same block while the request
/// task goes on receiving the next one, instead of on a runtime worker in line with both. A slow
/// client holds one partly filled block, not a thread.
struct BlockHasher(Option<HashJob>);

enum HashJob {
    Ready(Box<Hasher>),
    Running(tokio::task::JoinHandle<Hasher>),
}

impl BlockHasher {
    /// Hashes `block` in the background once the blocks before it are hashed.
    async fn push(&mut self, block: Bytes) -> Result<(), StoreError> {
        if let Some(mut hasher) = self.settle().await? {
            self.0 = Some(HashJob::Running(tokio::task::spawn_blocking(move || {
                hasher.update(&block);
                hasher
            })));
        }
        Ok(())
    }

    /// Hashes `block` in the background and hands it to the backend's append meanwhile.
    async fn pass_on(&mut self, block: Bytes, out: &mut dyn Appender) -> Result<(), StoreError> {
        self.push(block.clone()).await?;
        Ok(out.write(block).await?)
    }

    /// The hash of every block pushed so far; `None` when not hashing.
    async fn settle(&mut self) -> Result<Option<Hasher>, StoreError> {
        Ok(match self.0.take() {
            None => None,
            Some(HashJob::Ready(hasher)) => Some(*hasher),
            Some(HashJob::Running(job)) => Some(job.await.map_err(|e| {
                BackendError::Io(std::io::Error::other(format!("hashing stopped: {e}")))
            })?),
        })
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

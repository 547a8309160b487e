//! Blob fetches, one per blob however many clients ask: per process through a map, across
//! replicas sharing the storage through a claim in it (the others wait for the commit).
//!
//! A fetch runs in a task of its own, so a client that disconnects does not stop it for the
//! others (nor for the cache). Each chunk from the upstream is written to an unlinked spool file
//! and to an upload in the store; the upload commits only when the digest verifies, exactly as a
//! pushed blob does. Readers tail the spool with positional reads, each at its own pace: a slow
//! client holds one block and a timer, not the fetch. A reader never sends the last byte of its
//! answer before the blob verified: should it fail, the reader ends with an error and the client
//! sees a cut answer, never a complete one with the wrong bytes.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Digest, RepoName};
use storage::{ByteStream, StoreError};
use tokio::sync::watch;

use crate::{Mirror, MirrorError, Mirrored};

/// How much one reader reads from the spool at a time.
const READ_BLOCK: usize = 256 * 1024;

/// How long a fetch waits for another replica's fetch of the same blob (whose holder is alive:
/// a dead one's claim lapses) before it answers that the upstream is unavailable.
const FETCH_WAIT: Duration = Duration::from_secs(30 * 60);

/// Where a blob's bytes come from.
pub enum BlobSource {
    /// The cache has it: serve it as any stored blob.
    Stored { size: u64 },
    /// Being fetched; read it as it arrives.
    Fetching(Fetch),
}

#[derive(Clone, Debug)]
enum State {
    /// Waiting for the upstream's answer.
    Connecting,
    Streaming,
    /// Fetched, verified and committed to the store.
    Verified,
    /// Another fetch committed it first; the store has it.
    AlreadyStored,
    Failed(MirrorError),
}

#[derive(Clone, Debug)]
struct Progress {
    state: State,
    /// The upstream's `Content-Length`, once it answered.
    size: Option<u64>,
    /// Bytes in the spool.
    written: u64,
}

/// One running fetch, shared by every reader.
struct Shared {
    spool: File,
    progress: watch::Receiver<Progress>,
}

/// A reader's handle on a running fetch.
#[derive(Clone)]
pub struct Fetch {
    shared: Arc<Shared>,
}

/// Keyed by repository too: a fetch links its blob into its own repository only, and a client
/// of one repository must not read what another repository's upstream sent.
type Running = Arc<Mutex<HashMap<(RepoName, Digest), Arc<Shared>>>>;

#[derive(Default)]
pub(crate) struct Fetches {
    running: Running,
}

impl Fetches {
    /// Joins the running fetch of `digest`, or starts one, and waits for the upstream's answer.
    pub(crate) async fn join_or_start(
        &self,
        mirror: &Mirror,
        m: &Mirrored,
        digest: &Digest,
    ) -> Result<BlobSource, MirrorError> {
        let shared = self.shared(mirror, m, digest)?;
        let mut progress = shared.progress.clone();
        let state = progress
            .wait_for(|p| !matches!(p.state, State::Connecting))
            .await
            .map_err(|_| MirrorError::Spool("the fetch ended without a word".into()))?
            .state
            .clone();
        match state {
            State::Failed(e) => Err(e),
            State::AlreadyStored => Ok(BlobSource::Stored {
                size: mirror.store.blob_size(&m.cache, digest).await?,
            }),
            _ => Ok(BlobSource::Fetching(Fetch { shared })),
        }
    }

    /// The running fetch of `digest`, started here if there is none.
    fn shared(
        &self,
        mirror: &Mirror,
        m: &Mirrored,
        digest: &Digest,
    ) -> Result<Arc<Shared>, MirrorError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let key = (m.cache.clone(), digest.clone());
        if let Some(shared) = running.get(&key) {
            return Ok(shared.clone());
        }
        if running.len() >= mirror.options.max_fetches {
            return Err(MirrorError::Busy(running.len()));
        }
        let spool_error = |e: io::Error| MirrorError::Spool(e.to_string());
        let spool = tempfile::tempfile_in(&mirror.options.spool_dir).map_err(spool_error)?;
        let writer = spool.try_clone().map_err(spool_error)?;
        let (tx, rx) = watch::channel(Progress {
            state: State::Connecting,
            size: None,
            written: 0,
        });
        let shared = Arc::new(Shared {
            spool,
            progress: rx,
        });
        running.insert(key, shared.clone());
        let task = Task {
            store: mirror.store.clone(),
            m: m.clone(),
            digest: digest.clone(),
            spool: Arc::new(writer),
            tx: Arc::new(tx),
            metrics: mirror.metrics.clone(),
        };
        tokio::spawn(task.run(self.running.clone(), shared.clone()));
        Ok(shared)
    }
}

/// What the fetch task owns.
struct Task {
    store: storage::Store,
    m: Mirrored,
    digest: Digest,
    spool: Arc<File>,
    tx: Arc<watch::Sender<Progress>>,
    metrics: crate::MirrorMetrics,
}

impl Task {
    async fn run(self, running: Running, me: Arc<Shared>) {
        let outcome = self.fetch().await;
        let host = self.m.host().to_owned();
        let state = match outcome {
            Ok(state) => state,
            Err(e) => {
                if !matches!(e, MirrorError::NotFound(_)) {
                    tracing::warn!(upstream = %host, repository = %self.m.remote,
                        digest = %self.digest, error = %e, "blob fetch failed");
                    self.metrics.error(&host);
                }
                State::Failed(e)
            }
        };
        self.tx.send_modify(|p| p.state = state);
        // Only after the store has the blob (or the fetch failed): a request arriving from now
        // on finds it there, or starts afresh.
        let key = (self.m.cache.clone(), self.digest.clone());
        let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(&key).is_some_and(|s| Arc::ptr_eq(s, &me)) {
            running.remove(&key);
        }
    }

    async fn fetch(&self) -> Result<State, MirrorError> {
        let Some(claim) = self.claim_or_wait().await? else {
            return Ok(State::AlreadyStored);
        };
        let fetched = self.fetch_claimed().await;
        claim.release().await;
        fetched
    }

    /// The fetch's claim across processes sharing the storage, or `None` once the blob is
    /// there: another replica fetching it is waited for (its clients stream; ours then read
    /// the committed blob), so the upstream is asked once per blob, not once per replica.
    async fn claim_or_wait(&self) -> Result<Option<Box<dyn storage::Claim>>, MirrorError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            // An earlier fetch, here or elsewhere, may have committed it since the caller looked.
            if self.is_stored().await? {
                return Ok(None);
            }
            match self.store.claim_fetch(&self.m.cache, &self.digest).await? {
                Some(claim) if self.is_stored().await? => {
                    claim.release().await;
                    return Ok(None);
                }
                Some(claim) => return Ok(Some(claim)),
                None if started.elapsed() < FETCH_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                None => {
                    return Err(MirrorError::Unavailable {
                        upstream: self.m.host().to_owned(),
                        reason: format!("another replica has been fetching it for {FETCH_WAIT:?}"),
                    });
                }
            }
        }
    }

    async fn is_stored(&self) -> Result<bool, MirrorError> {
        match self.store.blob_size(&self.m.cache, &self.digest).await {
            Ok(_) => Ok(true),
            Err(StoreError::BlobUnknown) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn fetch_claimed(&self) -> Result<State, MirrorError> {
        let (size, body) = self
            .m
            .upstream
            .client
            .blob_sized(&self.m.remote, &self.digest)
            .await
            .map_err(|e| crate::upstream_error(&self.m, e))?;
        self.tx.send_modify(|p| {
            p.state = State::Streaming;
            p.size = size;
        });
        let upload = self.store.upload_start(&self.m.cache).await?;
        let body = self.spooled(body.map(|c| c.map_err(io::Error::other)).boxed());
        match self
            .store
            .upload_finish(&self.m.cache, upload, Some(0), &self.digest, body)
            .await
        {
            Ok(_) => Ok(State::Verified),
            Err(e @ (StoreError::DigestMismatch { .. } | StoreError::Body(_))) => {
                let _ = self.store.upload_cancel(&self.m.cache, upload).await;
                Err(MirrorError::Invalid {
                    upstream: self.m.host().to_owned(),
                    reason: e.to_string(),
                })
            }
            Err(e) => {
                let _ = self.store.upload_cancel(&self.m.cache, upload).await;
                Err(e.into())
            }
        }
    }

    /// The upstream's bytes on their way to the store, each chunk first written to the spool
    /// and announced to the readers.
    fn spooled(&self, body: ByteStream) -> ByteStream {
        let spool = self.spool.clone();
        let tx = self.tx.clone();
        let metrics = self.metrics.clone();
        let host = self.m.host().to_owned();
        body.then(move |chunk| {
            let spool = spool.clone();
            let tx = tx.clone();
            let metrics = metrics.clone();
            let host = host.clone();
            async move {
                let chunk = chunk?;
                let at = tx.borrow().written;
                let len = chunk.len() as u64;
                let data = chunk.clone();
                tokio::task::spawn_blocking(move || spool.write_all_at(&data, at))
                    .await
                    .map_err(io::Error::other)??;
                tx.send_modify(|p| p.written = at + len);
                metrics.fetched(&host, len);
                Ok(chunk)
            }
        })
        .boxed()
    }
}

impl Fetch {
    /// The upstream's `Content-Length`, when it sent one.
    pub fn size(&self) -> Option<u64> {
        self.shared.progress.borrow().size
    }

    /// The blob's bytes (or a range of them) as they arrive. The stream ends with an error if
    /// the fetch fails; its last byte comes only once the blob verified.
    pub fn stream(&self, range: Option<Range<u64>>) -> ByteStream {
        let (offset, end) = match range {
            Some(r) => (r.start, Some(r.end)),
            None => (0, None),
        };
        let reader = Reader {
            shared: self.shared.clone(),
            progress: self.shared.progress.clone(),
            offset,
            end,
        };
        futures_util::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next_block().await {
                Ok(Some(block)) => Some((Ok(block), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }
}

struct Reader {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    offset: u64,
    /// The end of the requested range; `None`: the blob's end.
    end: Option<u64>,
}

impl Reader {
    async fn next_block(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let (state, limit, end) = {
                let p = self.progress.borrow_and_update();
                let end = self.end.or(p.size).unwrap_or(u64::MAX);
                let verified = matches!(p.state, State::Verified);
                // Before verification, the answer's last byte waits.
                let limit = if verified {
                    p.written.min(end)
                } else {
                    p.written.min(end.saturating_sub(1))
                };
                (p.state.clone(), limit, end)
            };
            if let State::Failed(e) = state {
                return Err(io::Error::other(e));
            }
            if self.offset < limit {
                return self.read(limit).await.map(Some);
            }
            if matches!(state, State::Verified) || self.offset >= end {
                return Ok(None);
            }
            if self.progress.changed().await.is_err() {
                return Err(io::Error::other("the blob fetch ended before the blob did"));
            }
        }
    }

    async fn read(&mut self, limit: u64) -> io::Result<Bytes> {
        let len = (limit - self.offset).min(READ_BLOCK as u64) as usize;
        let shared = self.shared.clone();
        let at = self.offset;
        let block = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; len];
            shared.spool.read_exact_at(&mut buf, at).map(|()| buf)
        })
        .await
        .map_err(io::Error::other)??;
        self.offset += len as u64;
        Ok(block.into())
    }
}

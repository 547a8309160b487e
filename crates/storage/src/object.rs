//! The object-storage backend: S3 and S3-compatibles (MinIO), GCS and Azure Blob, through the
//! `object_store` crate (chosen over OpenDAL because it exposes multipart uploads by plain string
//! ids, which lets any replica continue an upload, and server-side copy; see `docs/design.md`).
//!
//! An upload ("append-only object" in [`Backend`] terms) is a multipart upload plus a small state
//! object kept beside it in the bucket:
//!
//! ```text
//! <key>                      the multipart upload's target; exists only after commit
//! <key>.quayside-upload      JSON: multipart id, parts (etag, size), tail object, length, meta
//! <key>.tail-<uuid>          bytes after the last full part (< PART_SIZE), re-read by the next
//!                            append, uploaded as the last part at commit
//! <key>.quayside-lock        the lease of the request that holds the upload's claim
//! ```
//! One request at a time holds an upload: its claim is the lease object, created only if absent
//! (`If-None-Match: *` on S3, generation 0 on GCS), renewed while held and taken over by a
//! conditional replace only once expired. The state object is replaced only if it is still the
//! version the append started from, so even a holder whose lease lapsed cannot publish over
//! another's append.
//! Parts are PART_SIZE bytes (S3 and GCS refuse parts under 5 MiB but the last), so memory per
//! upload is bounded by one part whatever the blob size. The state object is replaced in one PUT
//! after the parts and the tail are written: a crash leaves the previous state, which names only
//! what it wrote, and the leftovers are deleted with the upload.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutPayload, PutResult,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};

use crate::backend::{
    Appended, Appender, Backend, BackendError, ByteStream, Claim, unix_ms, used_marker,
};

/// Size of each uploaded part: above the 5 MiB minimum, and 10,000 parts make ~78 GiB.
pub const PART_SIZE: usize = 8 << 20;

/// The interfaces of one store used here (`AmazonS3`, `GoogleCloudStorage` and `MicrosoftAzure`
/// implement all three): objects, multipart uploads, and presigned URLs for `--redirect`.
pub trait MultipartObjectStore: ObjectStore + MultipartStore + Signer + PaginatedListStore {}
impl<T: ObjectStore + MultipartStore + Signer + PaginatedListStore> MultipartObjectStore for T {}

#[derive(Clone)]
pub struct ObjectBackend {
    store: Arc<dyn MultipartObjectStore>,
    /// Prepended to every key (distribution's `rootdirectory`), without slashes at either end.
    root: String,
    /// Azure: copies may finish after Copy Blob answers; wait before deleting a source.
    copy_waiter: Option<crate::azure::CopyWaiter>,
    /// Largest object the store copies server-side in one request (S3's CopyObject: 5 GiB);
    /// larger ones are streamed into a multipart upload, one part in memory at a time.
    copy_limit: u64,
}

/// S3's CopyObject limit.
pub const S3_COPY_LIMIT: u64 = 5 << 30;

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The store's own Debug can include credentials.
        f.debug_struct("ObjectBackend")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn err(e: object_store::Error) -> BackendError {
    match e {
        object_store::Error::NotFound { .. } => BackendError::NotFound,
        other => BackendError::Io(std::io::Error::other(other)),
    }
}

/// The version a conditional replace of this object must match.
fn version_of(meta: &object_store::ObjectMeta) -> UpdateVersion {
    UpdateVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    }
}

/// A conditional write that found another writer's object: `Busy`.
fn lost_race(e: object_store::Error) -> BackendError {
    match e {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            BackendError::Busy
        }
        other => err(other),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UploadState {
    multipart: Option<String>,
    parts: Vec<Part>,
    tail: Option<String>,
    tail_len: u64,
    len: u64,
    /// Hex of the metadata published with `len`.
    meta: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    etag: String,
    size: u64,
}

impl ObjectBackend {
    pub fn new(store: Arc<dyn MultipartObjectStore>, root: &str) -> ObjectBackend {
        ObjectBackend {
            store,
            root: root.trim_matches('/').to_owned(),
            copy_waiter: None,
            copy_limit: u64::MAX,
        }
    }

    /// Objects above `limit` bytes are copied by streaming instead of one server-side request.
    pub fn with_copy_limit(mut self, limit: u64) -> ObjectBackend {
        self.copy_limit = limit;
        self
    }

    /// For Azure Blob, whose Copy Blob can complete asynchronously.
    pub fn with_copy_waiter(mut self, waiter: crate::azure::CopyWaiter) -> ObjectBackend {
        self.copy_waiter = Some(waiter);
        self
    }

    /// A copy that has finished when it returns: server-side, or streamed above the copy limit.
    async fn copy_complete(&self, from: &Path, to: &Path) -> Result<(), BackendError> {
        let size = self.store.head(from).await.map_err(err)?.size;
        if size > self.copy_limit {
            return self.copy_streamed(from, to).await;
        }
        self.store.copy(from, to).await.map_err(err)?;
        if let Some(waiter) = &self.copy_waiter {
            waiter
                .wait(to.as_ref())
                .await
                .map_err(|e| BackendError::Io(std::io::Error::other(e)))?;
        }
        Ok(())
    }

    fn path(&self, key: &str) -> Path {
        if self.root.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.root))
        }
    }

    fn state_path(&self, key: &str) -> Path {
        self.path(&state_key(key))
    }

    async fn load_state(&self, key: &str) -> Result<UploadState, BackendError> {
        Ok(self.load_versioned_state(key).await?.0)
    }

    /// The state and the version it was read at, for the conditional replace that publishes the
    /// next one.
    async fn load_versioned_state(
        &self,
        key: &str,
    ) -> Result<(UploadState, UpdateVersion), BackendError> {
        let result = self.store.get(&self.state_path(key)).await.map_err(err)?;
        let version = version_of(&result.meta);
        let bytes = result.bytes().await.map_err(err)?;
        let state = serde_json::from_slice(&bytes)
            .map_err(|e| BackendError::Io(std::io::Error::other(format!("upload state: {e}"))))?;
        Ok((state, version))
    }

    /// Publishes `state` if the stored one is still `read` (`None`: if there is none yet).
    async fn save_state(
        &self,
        key: &str,
        state: &UploadState,
        read: Option<UpdateVersion>,
    ) -> Result<(), BackendError> {
        let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        let mode = read.map_or(PutMode::Create, PutMode::Update);
        self.store
            .put_opts(&self.state_path(key), PutPayload::from(json), mode.into())
            .await
            .map_err(lost_race)?;
        Ok(())
    }

    async fn read_tail(&self, state: &UploadState) -> Result<Bytes, BackendError> {
        match &state.tail {
            Some(tail) => self.read(tail, PART_SIZE as u64).await,
            None => Ok(Bytes::new()),
        }
    }
}

#[async_trait]
impl Backend for ObjectBackend {
    async fn size(&self, key: &str) -> Result<u64, BackendError> {
        Ok(self.store.head(&self.path(key)).await.map_err(err)?.size)
    }

    async fn modified(&self, key: &str) -> Result<std::time::SystemTime, BackendError> {
        let (object, marker) = (self.path(key), self.path(&used_marker(key)));
        let (object, marker) =
            futures_util::join!(self.store.head(&object), self.store.head(&marker));
        match (object, marker) {
            (Ok(a), Ok(b)) => Ok(a.last_modified.max(b.last_modified).into()),
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => Ok(m.last_modified.into()),
            (Err(e), Err(_)) => Err(err(e)),
        }
    }

    async fn touch(&self, key: &str) -> Result<(), BackendError> {
        self.put(&used_marker(key), Bytes::new()).await
    }

    async fn create_empty(&self, key: &str) -> Result<(), BackendError> {
        match self
            .store
            .put_opts(&self.path(key), Bytes::new().into(), PutMode::Create.into())
            .await
        {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            other => other.map(drop).map_err(err),
        }
    }

    async fn claim(&self, key: &str) -> Result<Box<dyn Claim>, BackendError> {
        let path = self.path(&lock_key(key));
        let holder = uuid::Uuid::new_v4().to_string();
        let lease = lease(&holder);
        let held = match self
            .store
            .put_opts(&path, lease.clone(), PutMode::Create.into())
            .await
        {
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.take_over_expired(&path, lease).await?
            }
            other => other.map_err(lost_race)?,
        };
        Ok(Box::new(ObjectClaim::hold(
            self.store.clone(),
            path,
            holder,
            held,
        )))
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BackendError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = self
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(err)?;
        Ok(result.into_stream().map_err(std::io::Error::other).boxed())
    }

    async fn read(&self, key: &str, limit: u64) -> Result<Bytes, BackendError> {
        let result = self.store.get(&self.path(key)).await.map_err(err)?;
        if result.meta.size > limit {
            return Err(BackendError::TooLarge { limit });
        }
        result.bytes().await.map_err(err)
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.store
            .put(&self.path(key), PutPayload::from(data))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BackendError> {
        let locations = self
            .store
            .list(Some(&self.path(prefix)))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.store.delete_stream(locations);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.path(prefix)))
            .await
            .map_err(err)?;
        let dirs = listing.common_prefixes.into_iter();
        let files = listing.objects.into_iter().map(|o| o.location);
        Ok(dirs
            .chain(files)
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let dir = format!("{}/", self.path(prefix));
        let mut names = Vec::new();
        let mut page_token = None;
        loop {
            let opts = PaginatedListOptions {
                offset: after.map(|a| format!("{dir}{a}")),
                delimiter: Some("/".into()),
                max_keys: Some(limit.saturating_sub(names.len()).max(1)),
                page_token: page_token.take(),
                ..PaginatedListOptions::default()
            };
            let page = self
                .store
                .list_paginated(Some(&dir), opts)
                .await
                .map_err(err)?;
            let found = page.result.common_prefixes.into_iter();
            let objects = page.result.objects.into_iter().map(|o| o.location);
            names.extend(
                found
                    .chain(objects)
                    .filter_map(|p| p.filename().map(str::to_owned)),
            );
            // A service that ignores the start-after key (an emulator) still gives a right page.
            names.retain(|n| after.is_none_or(|a| n.as_str() > a));
            page_token = page.page_token;
            if names.len() >= limit || page_token.is_none() {
                break;
            }
        }
        names.sort_unstable();
        names.dedup();
        names.truncate(limit);
        Ok(names)
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn Appender>, BackendError> {
        let (state, read) = match self.load_versioned_state(key).await {
            Ok((state, read)) => (state, Some(read)),
            Err(BackendError::NotFound) if offset == 0 => (UploadState::default(), None),
            Err(e) => return Err(e),
        };
        if state.len != offset {
            return Err(BackendError::OffsetMismatch { current: state.len });
        }
        let mut buffer = BytesMut::with_capacity(PART_SIZE);
        buffer.extend_from_slice(&self.read_tail(&state).await?);
        Ok(Box::new(ObjectAppender {
            backend: self.clone(),
            key: key.to_owned(),
            state,
            read,
            buffer,
        }))
    }

    async fn appended(&self, key: &str) -> Result<Appended, BackendError> {
        let state = self.load_state(key).await?;
        let meta = hex::decode(&state.meta).ok().map(Bytes::from);
        Ok(Appended {
            len: state.len,
            meta,
        })
    }

    async fn rename(&self, src: &str, dest: &str) -> Result<(), BackendError> {
        self.copy_complete(&self.path(src), &self.path(dest))
            .await?;
        self.delete(src).await
    }

    async fn commit(&self, src: &str, dest: &str) -> Result<(), BackendError> {
        let state = self.load_state(src).await?;
        let dest_path = self.path(dest);
        match &state.multipart {
            // Everything fits in the tail (or the blob is empty): one server-side copy.
            None => match &state.tail {
                Some(tail) => self.copy_complete(&self.path(tail), &dest_path).await?,
                None => {
                    self.store
                        .put(&dest_path, PutPayload::default())
                        .await
                        .map_err(err)?;
                }
            },
            Some(id) => {
                let src_path = self.path(src);
                let mut parts: Vec<PartId> = state
                    .parts
                    .iter()
                    .map(|p| PartId {
                        content_id: p.etag.clone(),
                    })
                    .collect();
                let tail = self.read_tail(&state).await?;
                if !tail.is_empty() {
                    let part = self
                        .store
                        .put_part(&src_path, id, parts.len(), PutPayload::from(tail))
                        .await
                        .map_err(err)?;
                    parts.push(part);
                }
                self.store
                    .complete_multipart(&src_path, id, parts)
                    .await
                    .map_err(err)?;
                // Server-side: the bytes never pass through the registry again.
                self.copy_complete(&src_path, &dest_path).await?;
                self.delete(src).await?;
            }
        }
        self.discard_state(src, &state).await
    }

    async fn presigned_get(
        &self,
        key: &str,
        expires: std::time::Duration,
    ) -> Result<Option<String>, BackendError> {
        let url = self
            .store
            .signed_url(http::Method::GET, &self.path(key), expires)
            .await
            .map_err(err)?;
        Ok(Some(url.to_string()))
    }

    async fn abort(&self, key: &str) -> Result<(), BackendError> {
        let state = match self.load_state(key).await {
            Ok(state) => state,
            Err(BackendError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(id) = &state.multipart {
            match self.store.abort_multipart(&self.path(key), id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        self.discard_state(key, &state).await
    }
}

impl ObjectBackend {
    /// Replaces a lease whose holder let it expire (a killed process), if no one else did first.
    async fn take_over_expired(
        &self,
        path: &Path,
        lease: PutPayload,
    ) -> Result<PutResult, BackendError> {
        let current = match self.store.get(path).await {
            Ok(current) => current,
            // Released in between: the next try may get it.
            Err(object_store::Error::NotFound { .. }) => return Err(BackendError::Busy),
            Err(e) => return Err(err(e)),
        };
        let version = version_of(&current.meta);
        let body = current.bytes().await.map_err(err)?;
        let expired = serde_json::from_slice::<Lease>(&body).map_or(true, |l| {
            l.expires_ms < unix_ms(std::time::SystemTime::now())
        });
        if !expired {
            return Err(BackendError::Busy);
        }
        self.store
            .put_opts(path, lease, PutMode::Update(version).into())
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => BackendError::Busy,
                other => lost_race(other),
            })
    }

    /// Copies through this process in PART_SIZE parts: for objects the store cannot copy in one
    /// request. Memory holds one part; the destination appears when the upload completes.
    async fn copy_streamed(&self, from: &Path, to: &Path) -> Result<(), BackendError> {
        let id = self.store.create_multipart(to).await.map_err(err)?;
        let result = self.copy_parts(from, to, &id).await;
        if result.is_err() {
            let _ = self.store.abort_multipart(to, &id).await;
        }
        result
    }

    async fn copy_parts(&self, from: &Path, to: &Path, id: &str) -> Result<(), BackendError> {
        let id = id.to_owned();
        let mut source = self.store.get(from).await.map_err(err)?.into_stream();
        let mut parts = Vec::new();
        let mut buffer = BytesMut::with_capacity(PART_SIZE);
        loop {
            let next = source.next().await.transpose().map_err(err)?;
            if let Some(chunk) = &next {
                buffer.extend_from_slice(chunk);
            }
            while buffer.len() >= PART_SIZE || (next.is_none() && !buffer.is_empty()) {
                let take = buffer.len().min(PART_SIZE);
                let part = buffer.split_to(take).freeze();
                let part = self
                    .store
                    .put_part(to, &id, parts.len(), PutPayload::from(part))
                    .await
                    .map_err(err)?;
                parts.push(part);
            }
            if next.is_none() {
                break;
            }
        }
        self.store
            .complete_multipart(to, &id, parts)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn discard_state(&self, key: &str, state: &UploadState) -> Result<(), BackendError> {
        if let Some(tail) = &state.tail {
            self.delete(tail).await?;
        }
        self.delete(&state_key(key)).await
    }
}

/// The key of an upload's state object, beside its data.
fn state_key(key: &str) -> String {
    format!("{key}.quayside-upload")
}

/// The key of an upload's lease, beside its data.
fn lock_key(key: &str) -> String {
    format!("{key}.quayside-lock")
}

/// How long a lease lasts unrenewed: how long a killed holder blocks its upload.
const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Serialize, Deserialize)]
struct Lease {
    holder: String,
    expires_ms: u64,
}

fn lease(holder: &str) -> PutPayload {
    let lease = Lease {
        holder: holder.to_owned(),
        expires_ms: unix_ms(std::time::SystemTime::now()) + LEASE.as_millis() as u64,
    };
    PutPayload::from(serde_json::to_vec(&lease).unwrap_or_default())
}

/// A held lease: renewed every third of its life until released; released by deleting it.
struct ObjectClaim {
    store: Arc<dyn MultipartObjectStore>,
    path: Path,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl ObjectClaim {
    fn hold(
        store: Arc<dyn MultipartObjectStore>,
        path: Path,
        holder: String,
        held: PutResult,
    ) -> ObjectClaim {
        let (renewing, at) = (store.clone(), path.clone());
        let renewer = tokio::spawn(async move {
            let mut version = UpdateVersion::from(held);
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let renewed = renewing
                    .put_opts(&at, lease(&holder), PutMode::Update(version).into())
                    .await;
                match renewed {
                    Ok(r) => version = r.into(),
                    // Lost (taken over after a stall): the state's conditional replace stops
                    // this holder from publishing.
                    Err(e) => {
                        tracing::warn!(lease = %at, error = %e, "upload lease not renewed");
                        return;
                    }
                }
            }
        });
        ObjectClaim {
            store,
            path,
            renewer: Some(renewer),
        }
    }
}

#[async_trait]
impl Claim for ObjectClaim {
    async fn release(mut self: Box<Self>) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let Err(e) = self.store.delete(&self.path).await {
            tracing::debug!(lease = %self.path, error = %e, "upload lease not deleted; it expires");
        }
    }
}

impl Drop for ObjectClaim {
    fn drop(&mut self) {
        // Dropped without release (the request was cancelled): stop renewing, delete in the
        // background.
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            let (store, path) = (self.store.clone(), self.path.clone());
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { store.delete(&path).await });
            }
        }
    }
}

struct ObjectAppender {
    backend: ObjectBackend,
    key: String,
    state: UploadState,
    /// The version of the state this append continues (`None`: a new upload).
    read: Option<UpdateVersion>,
    buffer: BytesMut,
}

impl ObjectAppender {
    async fn upload_part(&mut self, data: Bytes) -> Result<(), BackendError> {
        let path = self.backend.path(&self.key);
        let store = &self.backend.store;
        let id = match &self.state.multipart {
            Some(id) => id.clone(),
            None => {
                let id = store.create_multipart(&path).await.map_err(err)?;
                self.state.multipart = Some(id.clone());
                id
            }
        };
        let size = data.len() as u64;
        let part = store
            .put_part(&path, &id, self.state.parts.len(), PutPayload::from(data))
            .await
            .map_err(err)?;
        self.state.parts.push(Part {
            etag: part.content_id,
            size,
        });
        Ok(())
    }
}

#[async_trait]
impl Appender for ObjectAppender {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError> {
        self.buffer.extend_from_slice(&chunk);
        while self.buffer.len() >= PART_SIZE {
            let part = self.buffer.split_to(PART_SIZE).freeze();
            self.upload_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, meta: Bytes) -> Result<u64, BackendError> {
        let old_tail = self.state.tail.take();
        let tail = self.buffer.split().freeze();
        self.state.tail_len = tail.len() as u64;
        if !tail.is_empty() {
            let name = format!("{}.tail-{}", self.key, uuid::Uuid::new_v4());
            self.backend.put(&name, tail).await?;
            self.state.tail = Some(name);
        }
        let in_parts: u64 = self.state.parts.iter().map(|p| p.size).sum();
        self.state.len = in_parts + self.state.tail_len;
        self.state.meta = hex::encode(&meta);
        let read = self.read.take();
        self.backend
            .save_state(&self.key, &self.state, read)
            .await?;
        if let Some(old) = old_tail {
            self.backend.delete(&old).await?;
        }
        Ok(self.state.len)
    }
}

//! The narrow interface the store needs from a storage medium. The filesystem implements it here;
//! object stores (S3, GCS, Azure) implement the same operations, so the store above is unchanged.

use std::io;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("not found")]
    NotFound,
    /// An append did not start where the object ends.
    #[error("object is {current} bytes long")]
    OffsetMismatch { current: u64 },
    #[error("object is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// Another request holds the claim, or changed the object since it was read.
    #[error("in use by another request")]
    Busy,
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

/// Writes the bytes of an append, in order; nothing is promised durable before [`Appender::finish`].
#[async_trait]
pub trait Appender: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError>;
    /// Makes the appended bytes durable and publishes the object's new length together with `meta`
    /// (the store's hash state), so that a reader sees both or neither. Returns the new length.
    async fn finish(self: Box<Self>, meta: Bytes) -> Result<u64, BackendError>;
}

/// What an append-only object holds so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub len: u64,
    /// The `meta` published with `len`, if the last append's publication completed.
    pub meta: Option<Bytes>,
}

/// An exclusive claim on an upload, for one request at a time across processes and replicas.
/// The filesystem holds an advisory lock that the kernel drops when the process dies; object
/// stores hold a lease object, renewed while held and taken over once expired.
#[async_trait]
pub trait Claim: Send + Sync {
    /// Gives the claim up; dropping it does too (object stores: in the background).
    async fn release(self: Box<Self>);
}

/// Milliseconds since the Unix epoch: the clock marks and leases are written in.
pub(crate) fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The marker [`Backend::touch`] writes beside `key`.
pub(crate) fn used_marker(key: &str) -> String {
    format!("{key}.quayside-used")
}

/// Keys are `/`-separated relative paths built by [`crate::layout`]. Deleting what does not exist
/// succeeds on every backend (S3 says Ok where the filesystem says NotFound: normalised here).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Length of an object.
    async fn size(&self, key: &str) -> Result<u64, BackendError>;
    /// When an object was last written or [touched](Backend::touch), whichever is later
    /// (garbage collection spares recent blobs). NotFound when neither the object nor a touch is
    /// there.
    async fn modified(&self, key: &str) -> Result<std::time::SystemTime, BackendError>;
    /// Records that `key` is about to be relied on (a manifest will reference it, an upload will
    /// commit it), by writing a marker beside it that [`Backend::modified`] reads; works whether
    /// or not the object exists yet.
    async fn touch(&self, key: &str) -> Result<(), BackendError>;
    /// Creates an empty object unless one exists (never replacing it: a claim held on the
    /// existing one stays the only claim).
    async fn create_empty(&self, key: &str) -> Result<(), BackendError>;
    /// Claims the append-only object `key` (an upload's data) for the caller alone; `Busy` while
    /// another holds it, NotFound when there is no such upload (filesystem).
    async fn claim(&self, key: &str) -> Result<Box<dyn Claim>, BackendError>;
    /// Streams an object, or the given byte range of it (already checked against its size).
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BackendError>;
    /// Reads a small object whole (links, manifests, hash states).
    async fn read(&self, key: &str, limit: u64) -> Result<Bytes, BackendError>;
    /// Writes an object atomically: readers see the old content or the new, never a part.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError>;
    async fn delete(&self, key: &str) -> Result<(), BackendError>;
    /// Deletes every object under `prefix/`.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), BackendError>;
    /// Names of the entries directly under `prefix/` ("directories" and objects), unsorted; empty
    /// when there is nothing there.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BackendError>;
    /// Up to `limit` of the names [`list`](Backend::list) gives, in byte order, each strictly
    /// after `after`. Object stores ask the service for just that page (a start-after key), so
    /// walking a large directory a page at a time costs requests per page, not per directory.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, BackendError> {
        let mut names = self.list(prefix).await?;
        names.retain(|n| after.is_none_or(|a| n.as_str() > a));
        names.sort_unstable();
        names.truncate(limit);
        Ok(names)
    }
    /// Opens an append-only object (an upload's data) for writing at `offset`, which must be its
    /// current length (0 creates it). The caller holds its [claim](Backend::claim); publishing
    /// fails with `Busy` if the object changed since it was opened all the same.
    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn Appender>, BackendError>;
    /// Length and metadata of an append-only object.
    async fn appended(&self, key: &str) -> Result<Appended, BackendError>;
    /// Moves a finished append-only object to `dest` in one atomic step; `dest` appears whole or
    /// not at all. An existing `dest` is replaced (content-addressed keys hold identical bytes).
    async fn commit(&self, src: &str, dest: &str) -> Result<(), BackendError>;
    /// Moves a plain object to `dest` (the filesystem renames; object stores copy server-side,
    /// then delete). `dest` appears whole or not at all.
    async fn rename(&self, src: &str, dest: &str) -> Result<(), BackendError>;
    /// Discards an append-only object and everything kept for it.
    async fn abort(&self, key: &str) -> Result<(), BackendError>;
    /// The object as an open file, where it is one (the filesystem backend), for a server that
    /// can send a file without reading it itself; `None`: read it with [`Backend::get`].
    async fn open_file(&self, _key: &str) -> Result<Option<std::fs::File>, BackendError> {
        Ok(None)
    }
    /// A URL that lets a client GET the object directly from storage for `expires`, where the
    /// backend can sign one (object stores); `None` means "serve it yourself".
    async fn presigned_get(
        &self,
        _key: &str,
        _expires: std::time::Duration,
    ) -> Result<Option<String>, BackendError> {
        Ok(None)
    }
}

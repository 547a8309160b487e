//! The local-filesystem backend: the registry's default (`./quayside-data`).
//!
//! Written directly on `tokio::fs` rather than `object_store::local::LocalFileSystem`: uploads are
//! appended to one file and committed with `rename(2)` — atomic and free of copies — which that crate
//! cannot express (it has no append and no multipart resume), and blobs are read in 1 MiB blocks
//! (its streams read 8 KiB at a time, measured ~6x slower here).
//!
//! Upload data is written with `O_DIRECT` where the filesystem takes it (see [`Direct`]); `rustix`
//! names the flag and the errno, as it does for the server's `sendfile`.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{Read, Write};
use tokio::fs;

use crate::backend::{Appended, Appender, Backend, BackendError, ByteStream, Claim, used_marker};
use crate::block::{Block, DIRECT_ALIGN, is_aligned};
use crate::layout;

const IO_BLOCK: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct FsBackend {
    root: PathBuf,
    /// fsync content before it becomes visible, and the directory it is renamed into, so a
    /// committed blob survives power loss too.
    sync: bool,
    /// The locked data file of each upload this process holds a claim on. Appends write through
    /// it, so a write still running after its request was dropped keeps the lock until it is
    /// done, and no later claimer can append beside it.
    claimed: Arc<Mutex<HashMap<PathBuf, Weak<std::fs::File>>>>,
    /// `None` when direct I/O is off.
    direct: Option<Arc<Direct>>,
}

impl FsBackend {
    async fn open(&self, key: &str) -> Result<std::fs::File, BackendError> {
        let path = self.path(key);
        blocking(move || std::fs::File::open(path))
            .await
            .map_err(not_found)
    }

    /// A backend rooted at `root`, writing upload data with `O_DIRECT` where the filesystem
    /// takes it ([`FsBackend::direct_io`] turns that off).
    pub fn new(root: impl Into<PathBuf>, sync: bool) -> FsBackend {
        FsBackend {
            root: root.into(),
            sync,
            claimed: Arc::default(),
            direct: Some(Arc::default()),
        }
    }

    pub fn direct_io(mut self, on: bool) -> FsBackend {
        self.direct = on.then(Arc::default);
        self
    }

    /// Bytes of upload data written with `O_DIRECT` so far.
    pub fn direct_bytes(&self) -> u64 {
        self.direct
            .as_ref()
            .map_or(0, |d| d.written.load(Ordering::Relaxed))
    }

    fn claimed_file(&self, path: &Path) -> Option<Arc<std::fs::File>> {
        let claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        claimed.get(path).and_then(Weak::upgrade)
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn not_found(e: io::Error) -> BackendError {
    if e.kind() == io::ErrorKind::NotFound {
        BackendError::NotFound
    } else {
        BackendError::Io(e)
    }
}

async fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent).await,
        None => Ok(()),
    }
}

fn ok_if_missing(r: io::Result<()>) -> Result<(), BackendError> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => Ok(other?),
    }
}

#[async_trait]
impl Backend for FsBackend {
    async fn size(&self, key: &str) -> Result<u64, BackendError> {
        let meta = fs::metadata(self.path(key)).await.map_err(not_found)?;
        if meta.is_file() {
            Ok(meta.len())
        } else {
            Err(BackendError::NotFound)
        }
    }

    async fn modified(&self, key: &str) -> Result<std::time::SystemTime, BackendError> {
        let (object, marker) = (self.path(key), self.path(&used_marker(key)));
        blocking(move || {
            let times = [object, marker].map(|p| std::fs::metadata(p).and_then(|m| m.modified()));
            match times {
                [Ok(a), Ok(b)] => Ok(a.max(b)),
                [Ok(t), Err(_)] | [Err(_), Ok(t)] => Ok(t),
                [Err(e), Err(_)] => Err(e),
            }
        })
        .await
        .map_err(not_found)
    }

    async fn create_empty(&self, key: &str) -> Result<(), BackendError> {
        let path = self.path(key);
        blocking(move || {
            with_parent(&path, || {
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                    other => other.map(drop),
                }
            })
        })
        .await?;
        Ok(())
    }

    async fn touch(&self, key: &str) -> Result<(), BackendError> {
        // Not synced: the marker only matters to a collection running now, not after a crash.
        let marker = self.path(&used_marker(key));
        blocking(move || with_parent(&marker, || std::fs::File::create(&marker).map(drop))).await?;
        Ok(())
    }

    async fn claim(&self, key: &str) -> Result<Box<dyn Claim>, BackendError> {
        // flock(2) on the data file: per open file, so two requests of one process exclude each
        // other as two processes do, and the kernel releases it when a killed process's files
        // close. The lock file is the data itself, so a waiter never creates a file in an upload
        // directory that is being removed.
        let path = self.path(key);
        let opened = path.clone();
        let locked = blocking(move || {
            let file = std::fs::OpenOptions::new().append(true).open(&opened)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(file)),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            }
        })
        .await
        .map_err(not_found)?;
        let file = Arc::new(locked.ok_or(BackendError::Busy)?);
        self.claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), Arc::downgrade(&file));
        Ok(Box::new(FsClaim {
            file,
            path,
            claimed: self.claimed.clone(),
        }))
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BackendError> {
        let file = self.open(key).await?;
        let (start, end) = match range {
            Some(r) => (r.start, r.end),
            None => (0, u64::MAX),
        };
        Ok(read_blocks(Arc::new(file), start, end))
    }

    async fn open_file(&self, key: &str) -> Result<Option<std::fs::File>, BackendError> {
        Ok(Some(self.open(key).await?))
    }

    async fn read(&self, key: &str, limit: u64) -> Result<Bytes, BackendError> {
        // One blocking hop for open + read: links and manifests are read on every manifest GET.
        let path = self.path(key);
        let buf = blocking(move || {
            let mut buf = Vec::new();
            std::fs::File::open(path)?
                .take(limit + 1)
                .read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(not_found)?;
        if buf.len() as u64 > limit {
            return Err(BackendError::TooLarge { limit });
        }
        Ok(buf.into())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        let tmp = self.path(&layout::staging(&uuid::Uuid::new_v4().to_string()));
        let dest = self.path(key);
        let sync = self.sync;
        blocking(move || {
            let written = write_then_rename(&tmp, &dest, &data, sync);
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        ok_if_missing(fs::remove_file(self.path(key)).await)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BackendError> {
        ok_if_missing(fs::remove_dir_all(self.path(prefix)).await)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        let mut dir = match fs::read_dir(self.path(prefix)).await {
            Ok(dir) => dir,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut names = Vec::new();
        while let Some(entry) = dir.next_entry().await? {
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn Appender>, BackendError> {
        let path = self.path(key);
        if offset == 0 {
            create_parent(&path).await?;
        }
        let opened = path.clone();
        let held = self.claimed_file(&path);
        let direct = self.direct.clone();
        let (file, direct) = blocking(move || {
            let file = match held {
                Some(file) => file,
                None => Arc::new(
                    std::fs::OpenOptions::new()
                        .create(offset == 0)
                        .append(true)
                        .open(&opened)?,
                ),
            };
            let (committed, _) = committed(&opened, file.metadata()?.len());
            if committed != offset {
                return Ok(Err(committed));
            }
            // Bytes past the committed length are from an append that failed or was abandoned
            // (its client got no 202): drop them so the retry lands where the client expects.
            file.set_len(committed)?;
            let direct = direct.and_then(|d| d.open(&opened)).map(Arc::new);
            Ok(Ok((file, direct)))
        })
        .await
        .map_err(not_found)?
        .map_err(|current| BackendError::OffsetMismatch { current })?;
        Ok(Box::new(FsAppender {
            file,
            direct,
            writing: None,
            buffer: bytes::BytesMut::new(),
            written: offset,
            meta_path: meta_path(&path),
            sync: self.sync,
        }))
    }

    async fn appended(&self, key: &str) -> Result<Appended, BackendError> {
        let path = self.path(key);
        let (len, meta) = blocking(move || {
            let file_len = std::fs::metadata(&path)?.len();
            Ok(committed(&path, file_len))
        })
        .await
        .map_err(not_found)?;
        Ok(Appended { len, meta })
    }

    async fn rename(&self, src: &str, dest: &str) -> Result<(), BackendError> {
        let (src, dest, sync) = (self.path(src), self.path(dest), self.sync);
        blocking(move || move_into_place(&src, &dest, sync))
            .await
            .map_err(not_found)
    }

    async fn abort(&self, key: &str) -> Result<(), BackendError> {
        let path = self.path(key);
        ok_if_missing(std::fs::remove_file(meta_path(&path)))?;
        ok_if_missing(fs::remove_file(path).await)
    }

    async fn commit(&self, src: &str, dest: &str) -> Result<(), BackendError> {
        let (src, dest, sync) = (self.path(src), self.path(dest), self.sync);
        let moved = src.clone();
        blocking(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&moved)?;
            let (committed, _) = committed(&moved, file.metadata()?.len());
            file.set_len(committed)?;
            // The blob appears as new: an upload's last write may be older than gc's grace.
            file.set_modified(std::time::SystemTime::now())?;
            move_into_place(&moved, &dest, sync)
        })
        .await
        .map_err(not_found)?;
        ok_if_missing(fs::remove_file(meta_path(&src)).await)
    }
}

/// The flock of [`FsBackend::claim`]: released when the last handle of the file closes (this
/// one, or a write still running for a dropped request).
struct FsClaim {
    file: Arc<std::fs::File>,
    path: PathBuf,
    claimed: Arc<Mutex<HashMap<PathBuf, Weak<std::fs::File>>>>,
}

#[async_trait]
impl Claim for FsClaim {
    async fn release(self: Box<Self>) {}
}

impl Drop for FsClaim {
    fn drop(&mut self) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if claimed
            .get(&self.path)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.file)))
        {
            claimed.remove(&self.path);
        }
    }
}

/// Runs `op`, which creates `dest`, after creating its parent directory, again if the directory
/// vanished in between (garbage collection removes emptied blob directories).
fn with_parent<T>(dest: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut tries = 0;
    loop {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 4 => tries += 1,
            other => return other,
        }
    }
}

/// A download: blocks read by one blocking-pool hop each, the next one read while the previous
/// is on the wire, into buffers that written blocks give back (`crate::block`). Nothing waits on
/// a thread for the client: a client that stops reading holds two blocks of memory and no
/// thread.
fn read_blocks(file: Arc<std::fs::File>, start: u64, end: u64) -> ByteStream {
    let read = move |pos: u64| {
        let file = file.clone();
        let len = (end - pos).min(IO_BLOCK as u64) as usize;
        tokio::task::spawn_blocking(move || {
            let mut block = Block::with_capacity(len);
            block.read_at(&file, pos)?;
            Ok::<_, io::Error>(block.freeze())
        })
    };
    let first = (start < end).then(|| read(start));
    futures_util::stream::unfold((first, start), move |(pending, pos)| {
        let read = read.clone();
        async move {
            let block = match pending?.await {
                Ok(Ok(block)) if block.is_empty() => return None,
                Ok(Ok(block)) => block,
                Ok(Err(e)) => return Some((Err(e), (None, end))),
                Err(e) => return Some((Err(io::Error::other(e)), (None, end))),
            };
            let next = pos + block.len() as u64;
            let ahead = (next < end && block.len() == IO_BLOCK).then(|| read(next));
            Some((Ok(block), (ahead, next)))
        }
    })
    .boxed()
}

/// `O_DIRECT` for upload data. The bytes of a push have to reach the disk before it is
/// acknowledged (`--fsync`), and copying them into the page cache first cost more CPU than the
/// write itself, then made the final `fdatasync` write the whole blob back at once. A direct
/// write takes each block from the upload's own buffer ([`crate::block::Block`]) to the disk,
/// beside the hash of the next one. Only what is aligned goes this way: a block starting at an
/// offset or address that is not, and the tail of the last one, go through the page cache.
#[derive(Debug, Default)]
struct Direct {
    /// Set once the filesystem refused an `O_DIRECT` open or write (ramfs, some FUSE and network
    /// filesystems): from then on everything goes through the page cache.
    refused: AtomicBool,
    written: AtomicU64,
}

impl Direct {
    fn open(self: Arc<Self>, path: &Path) -> Option<DirectFile> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path);
        match opened {
            Ok(file) => Some(DirectFile { file, direct: self }),
            Err(e) => {
                if is_refusal(&e) {
                    self.refuse(&e);
                } else {
                    tracing::debug!(error = %e, "no O_DIRECT for this append");
                }
                None
            }
        }
    }

    fn refuse(&self, e: &io::Error) {
        if !self.refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "the data directory's filesystem refuses O_DIRECT: uploads go through the page \
                 cache from now on (--direct-io false says so up front)"
            );
        }
    }
}

fn is_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

/// An upload's data file opened a second time, with `O_DIRECT`.
struct DirectFile {
    file: std::fs::File,
    direct: Arc<Direct>,
}

impl DirectFile {
    /// Writes the longest aligned start of `block` at `pos`, where the file ends, if `pos` and
    /// the block's address are aligned; returns how many bytes that was (the file now ends
    /// there).
    fn write_aligned(&self, block: &[u8], pos: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let aligned = block.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        let usable = is_aligned(block.as_ptr().addr())
            && pos.is_multiple_of(DIRECT_ALIGN as u64)
            && !self.direct.refused.load(Ordering::Relaxed);
        let mut done = 0;
        // A short write leaves the rest unaligned: it goes through the page cache.
        while usable && done < aligned && is_aligned(done) {
            match self.file.write_at(&block[done..aligned], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_refusal(&e) => {
                    self.direct.refuse(&e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.direct
            .written
            .fetch_add(done as u64, Ordering::Relaxed);
        Ok(done)
    }
}

/// Appends in blocks of IO_BLOCK, each written by one blocking-pool hop while the request task
/// goes on receiving and hashing the next: a client that trickles holds a buffer, not a thread.
struct FsAppender {
    /// Opened for appending: every write through it lands where the file ends.
    file: Arc<std::fs::File>,
    direct: Option<Arc<DirectFile>>,
    /// The block being written.
    writing: Option<tokio::task::JoinHandle<io::Result<()>>>,
    buffer: bytes::BytesMut,
    /// Where the next block starts: what was handed to a write so far (the buffer follows).
    written: u64,
    meta_path: PathBuf,
    sync: bool,
}

impl FsAppender {
    /// Waits until the block being written (if any) is on disk.
    async fn settled(&mut self) -> Result<(), BackendError> {
        if let Some(writing) = self.writing.take() {
            writing.await.map_err(io::Error::other)??;
        }
        Ok(())
    }

    /// Starts writing what is buffered.
    async fn flush(&mut self) -> Result<(), BackendError> {
        let block = self.buffer.split().freeze();
        self.write_block(block).await
    }

    /// Starts writing `block` once the block before it is written.
    async fn write_block(&mut self, block: Bytes) -> Result<(), BackendError> {
        self.settled().await?;
        let (file, direct, pos) = (self.file.clone(), self.direct.clone(), self.written);
        self.written += block.len() as u64;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let direct_len = match direct {
                Some(direct) => direct.write_aligned(&block, pos)?,
                None => 0,
            };
            (&*file).write_all(&block[direct_len..])
        }));
        Ok(())
    }
}

#[async_trait]
impl Appender for FsAppender {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError> {
        if self.buffer.is_empty() && (chunk.len() >= IO_BLOCK || is_aligned(chunk.as_ptr().addr()))
        {
            // A block the store handed over (whole, or an upload's last): written without a copy.
            return self.write_block(chunk).await;
        }
        self.buffer.extend_from_slice(&chunk);
        if self.buffer.len() >= IO_BLOCK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, meta: Bytes) -> Result<u64, BackendError> {
        if !self.buffer.is_empty() {
            self.flush().await?;
        }
        self.settled().await?;
        let len = self.written;
        if self.sync {
            let file = self.file.clone();
            blocking(move || file.sync_data()).await?;
        }
        let (path, sync) = (self.meta_path.clone(), self.sync);
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        blocking(move || write_then_rename(&tmp, &path, &encode_meta(len, &meta), sync)).await?;
        Ok(len)
    }
}

/// The sidecar holding an append-only object's metadata: `<data>.quayside-meta`.
fn meta_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".quayside-meta");
    PathBuf::from(name)
}

fn encode_meta(len: u64, meta: &[u8]) -> Vec<u8> {
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(meta);
    out
}

/// The committed length of an append-only file and the metadata published with it: what the
/// sidecar names. Bytes past it were never acknowledged. Without a readable sidecar (or one that
/// names more than the file holds) the whole file counts, with no metadata.
fn committed(data: &Path, file_len: u64) -> (u64, Option<Bytes>) {
    let decoded = std::fs::read(meta_path(data)).ok().and_then(|m| {
        let (prefix, meta) = m.split_at_checked(8)?;
        let len = u64::from_le_bytes(prefix.try_into().ok()?);
        Some((len, Bytes::copy_from_slice(meta)))
    });
    match decoded {
        Some((len, meta)) if len <= file_len => (len, Some(meta)),
        _ => (file_len, None),
    }
}

/// Writes `data` to `tmp` and renames it over `dest`: readers see the old file or the new one.
fn write_then_rename(tmp: &Path, dest: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let mut file = with_parent(tmp, || std::fs::File::create(tmp))?;
    file.write_all(data)?;
    if sync {
        file.sync_data()?;
    }
    move_into_place(tmp, dest, sync)
}

/// Renames `src` to `dest`, creating `dest`'s directory if needed. With `sync`, the directory
/// is synced too: until it is, a power loss can undo the rename even though the data was
/// synced, and the blob, link or upload length acknowledged to a client would be gone. (On
/// ext4 and XFS that one sync also makes durable the directories just created above it: they
/// are in the same journal transaction.)
fn move_into_place(src: &Path, dest: &Path, sync: bool) -> io::Result<()> {
    with_parent(dest, || std::fs::rename(src, dest))?;
    match dest.parent() {
        Some(dir) if sync => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

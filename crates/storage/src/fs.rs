//! The local-filesystem backend: the registry's default (`./quayside-data`).
//!
//! Written directly on `tokio::fs` rather than `object_store::local::LocalFileSystem`: uploads are
//! appended to one file and committed with `rename(2)` — atomic and free of copies — which that crate
//! cannot express (it has no append and no multipart resume), and blobs are read in 1 MiB blocks
//! (its streams read 8 KiB at a time, measured ~6x slower here).

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::io::{Read, Seek, Write};
use tokio::fs;

use crate::backend::{Appended, Appender, Backend, BackendError, ByteStream, Claim, used_marker};
use crate::layout;

const IO_BLOCK: usize = 1 << 20;
/// Blocks read ahead of the network per download.
const READ_AHEAD: usize = 2;
/// Chunks queued for the disk per upload.
const WRITE_BEHIND: usize = 16;

#[derive(Clone, Debug)]
pub struct FsBackend {
    root: PathBuf,
    /// fsync content before it becomes visible, so a committed blob survives power loss too.
    sync: bool,
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>, sync: bool) -> FsBackend {
        FsBackend {
            root: root.into(),
            sync,
        }
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
        let locked = blocking(move || {
            let file = std::fs::OpenOptions::new().read(true).open(&path)?;
            match file.try_lock() {
                Ok(()) => Ok(Some(file)),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            }
        })
        .await
        .map_err(not_found)?;
        match locked {
            Some(file) => Ok(Box::new(FsClaim(file))),
            None => Err(BackendError::Busy),
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, BackendError> {
        let path = self.path(key);
        let mut file = blocking(move || std::fs::File::open(path))
            .await
            .map_err(not_found)?;
        let (start, len) = match range {
            Some(r) => (r.start, r.end - r.start),
            None => (0, u64::MAX),
        };
        // A thread reads ahead while the previous block is on the wire; the bounded channel keeps
        // at most READ_AHEAD blocks per download in memory, and a departed client (receiver
        // dropped) stops the thread.
        let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(start)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut reader = file.take(len);
            loop {
                let mut block = vec![0u8; IO_BLOCK];
                let item = match read_full(&mut reader, &mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        Ok(Bytes::from(block))
                    }
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    return;
                }
            }
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
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
        let file = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(offset == 0)
                .append(true)
                .open(&opened)?;
            let (committed, _) = committed(&opened, file.metadata()?.len());
            if committed != offset {
                return Ok(Err(committed));
            }
            // Bytes past the committed length are from an append that failed or was abandoned
            // (its client got no 202): drop them so the retry lands where the client expects.
            file.set_len(committed)?;
            Ok(Ok(file))
        })
        .await
        .map_err(not_found)?
        .map_err(|current| BackendError::OffsetMismatch { current })?;
        Ok(Box::new(FsAppender::start(
            file,
            offset,
            self.sync,
            meta_path(&path),
        )))
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
        let (src, dest) = (self.path(src), self.path(dest));
        blocking(move || with_parent(&dest, || std::fs::rename(&src, &dest)))
            .await
            .map_err(not_found)
    }

    async fn abort(&self, key: &str) -> Result<(), BackendError> {
        let path = self.path(key);
        ok_if_missing(std::fs::remove_file(meta_path(&path)))?;
        ok_if_missing(fs::remove_file(path).await)
    }

    async fn commit(&self, src: &str, dest: &str) -> Result<(), BackendError> {
        let (src, dest) = (self.path(src), self.path(dest));
        let moved = src.clone();
        blocking(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&moved)?;
            let (committed, _) = committed(&moved, file.metadata()?.len());
            file.set_len(committed)?;
            // The blob appears as new: an upload's last write may be older than gc's grace.
            file.set_modified(std::time::SystemTime::now())?;
            with_parent(&dest, || std::fs::rename(&moved, &dest))
        })
        .await
        .map_err(not_found)?;
        ok_if_missing(fs::remove_file(meta_path(&src)).await)
    }
}

/// The flock of [`FsBackend::claim`]: closing the file releases it.
struct FsClaim(#[allow(dead_code)] std::fs::File);

#[async_trait]
impl Claim for FsClaim {
    async fn release(self: Box<Self>) {}
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

/// Appends on a thread of its own, so the request task hashes the next chunk while this one is
/// written; the bounded channel is the backpressure that keeps memory flat.
struct FsAppender {
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    writer: tokio::task::JoinHandle<io::Result<u64>>,
    meta_path: PathBuf,
    sync: bool,
}

impl FsAppender {
    fn start(file: std::fs::File, len: u64, sync: bool, meta_path: PathBuf) -> FsAppender {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(WRITE_BEHIND);
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::with_capacity(IO_BLOCK, file);
            let mut len = len;
            while let Some(chunk) = rx.blocking_recv() {
                out.write_all(&chunk)?;
                len += chunk.len() as u64;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            if sync {
                file.sync_data()?;
            }
            Ok(len)
        });
        FsAppender {
            tx: Some(tx),
            writer,
            meta_path,
            sync,
        }
    }

    async fn join(&mut self) -> Result<u64, BackendError> {
        self.tx = None;
        let joined = (&mut self.writer).await.map_err(io::Error::other)?;
        Ok(joined?)
    }
}

#[async_trait]
impl Appender for FsAppender {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackendError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped early: it failed, and joining it says why.
        match self.join().await {
            Err(e) => Err(e),
            Ok(_) => Err(BackendError::Io(io::Error::other("upload writer stopped"))),
        }
    }

    async fn finish(mut self: Box<Self>, meta: Bytes) -> Result<u64, BackendError> {
        let len = self.join().await?;
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
    with_parent(dest, || std::fs::rename(tmp, dest))
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

//! File bodies sent with `sendfile(2)` on plain HTTP/1 connections: the file's bytes go from the
//! page cache to the socket without passing through user space, so a download costs no buffer
//! and one kernel copy instead of two.
//!
//! hyper owns the framing and takes bodies only as bytes, so a [`FileBody`] yields *placeholder*
//! chunks instead: slices of one allocation that is never written, each standing for a piece of
//! the file, which the body queues on its connection's [`Files`] as it yields it. The
//! connection's [`Stream`], the last stop before the socket, sends the file bytes a placeholder
//! stands for when hyper writes it. hyper writes an HTTP/1 connection's responses one after
//! another, each body's chunks in order and, with vectored writes (forced on in
//! [`crate::serve`]), as the very slices the body gave it. Each queued piece has its own stretch
//! of the placeholder (one of [`SLOTS`], in turn), and the stream matches a slice to a piece by
//! its address and the piece's progress, not by order alone: a piece hyper cut short (a body
//! longer than its `Content-Length`) is dropped when the next one is written instead of lending
//! its rest to it. Placeholder bytes that match no queued piece, or a file that ends early, fail
//! the write and close the connection: the placeholder's own bytes never reach a client.
//!
//! `Files` is a request extension only on HTTP/1 requests of connections [`crate::serve`]
//! accepted; without it a handler streams its file another way.
//!
//! The file is read by the kernel inside `sendfile`, on the runtime worker. So that a cold file
//! rarely makes a worker wait for the disk, the body asks the kernel (on the blocking pool) to
//! read each next piece ahead (`POSIX_FADV_WILLNEED`) while the current one is on the wire.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest piece one placeholder chunk stands for.
const PIECE: usize = 2 << 20;
/// Stretches of the placeholder a connection's pieces take in turn; far more than hyper ever
/// holds unwritten (it asks a body for more only below ~400 KiB buffered).
const SLOTS: usize = 16;

/// Never written, so its pages are never touched: it costs address space, not memory. A heap
/// allocation, so no other data can share its addresses.
static PLACEHOLDER: LazyLock<&'static [u8]> = LazyLock::new(|| vec![0u8; PIECE * SLOTS].leak());

/// Allocates the placeholder before the allocator's thresholds have grown, so it is mapped fresh
/// (zero pages, untouched) rather than carved from a heap it would have to clear.
pub(crate) fn init() {
    LazyLock::force(&PLACEHOLDER);
}

/// Set once `sendfile` refused this process's files (storage whose filesystem cannot splice).
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Where in the placeholder `bytes` start, if they are placeholder bytes.
fn placeholder_at(bytes: &[u8]) -> Option<usize> {
    let at = (bytes.as_ptr() as usize).checked_sub(PLACEHOLDER.as_ptr() as usize)?;
    (!bytes.is_empty() && at < PLACEHOLDER.len()).then_some(at)
}

/// File pieces a connection's placeholder bytes stand for, in the order they go out.
#[derive(Clone, Default)]
pub struct Files(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    pieces: VecDeque<Piece>,
    next_slot: usize,
}

struct Piece {
    file: Arc<File>,
    /// Where in the placeholder this piece's next unsent byte stands.
    at: usize,
    offset: u64,
    left: u64,
}

impl Queue {
    /// Queues `len` bytes of `file` from `offset`; the placeholder bytes that stand for them.
    fn push(&mut self, file: Arc<File>, offset: u64, len: usize) -> &'static [u8] {
        let at = self.next_slot * PIECE;
        self.next_slot = (self.next_slot + 1) % SLOTS;
        self.pieces.push_back(Piece {
            file,
            at,
            offset,
            left: len as u64,
        });
        &PLACEHOLDER[at..at + len]
    }

    /// The piece whose next byte the placeholder byte at `at` stands for. Pieces queued before
    /// it were cut short by hyper and will not be written any more.
    fn piece_at(&mut self, at: usize) -> Option<&mut Piece> {
        let index = self.pieces.iter().position(|p| p.at == at)?;
        self.pieces.drain(..index);
        self.pieces.front_mut()
    }
}

impl Files {
    /// Whether file bodies can be sent: `false` once `sendfile` refused a file of this process.
    pub fn available(&self) -> bool {
        !REFUSED.load(Ordering::Relaxed)
    }

    /// A body sending `range` of `file` on this connection. It must be a response's whole body,
    /// with that many bytes as its `Content-Length`, and not the answer to a HEAD.
    pub fn body(&self, file: Arc<File>, range: Range<u64>) -> FileBody {
        let mut body = FileBody {
            files: self.clone(),
            file,
            pos: range.start,
            end: range.end.max(range.start),
            advising: None,
        };
        body.advise(body.pos);
        body
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See the module docs.
pub struct FileBody {
    files: Files,
    file: Arc<File>,
    pos: u64,
    end: u64,
    advising: Option<tokio::task::JoinHandle<()>>,
}

impl FileBody {
    /// Asks the kernel to read the piece at `pos` into the page cache, unless it is still
    /// reading the one asked before.
    fn advise(&mut self, pos: u64) {
        if pos >= self.end || self.advising.as_ref().is_some_and(|a| !a.is_finished()) {
            return;
        }
        let (file, len) = (self.file.clone(), NonZeroU64::new(self.end - pos));
        let len = len.map(|l| l.min(NonZeroU64::new(PIECE as u64).unwrap_or(l)));
        self.advising = Some(tokio::task::spawn_blocking(move || {
            // Only a hint: a kernel that ignores it sends the same bytes, only later.
            let _ = rustix::fs::fadvise(&*file, pos, len, rustix::fs::Advice::WillNeed);
        }));
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let len = (this.end - this.pos).min(PIECE as u64) as usize;
        let placeholder = this.files.queue().push(this.file.clone(), this.pos, len);
        this.pos += len as u64;
        this.advise(this.pos);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(placeholder)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.pos)
    }
}

/// A connection's TCP stream that sends queued file pieces in place of placeholder bytes.
pub(crate) struct Stream {
    tcp: TcpStream,
    files: Files,
}

impl Stream {
    pub(crate) fn new(tcp: TcpStream, files: Files) -> Stream {
        Stream { tcp, files }
    }

    /// Sends file bytes for the placeholder slice starting at `at`, up to `max` of them.
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        at: usize,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let mut queue = self.files.queue();
        let Some(piece) = queue.piece_at(at) else {
            return Poll::Ready(Err(io::Error::other(
                "placeholder bytes with no file piece behind them",
            )));
        };
        let count = usize::try_from(piece.left).unwrap_or(usize::MAX).min(max);
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut offset = piece.offset;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &*piece.file, Some(&mut offset), count)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before the bytes its response promised",
                    )));
                }
                Ok(n) => {
                    piece.offset += n as u64;
                    piece.left -= n as u64;
                    piece.at += n;
                    if piece.left == 0 {
                        queue.pieces.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    if is_refusal(&e) && !REFUSED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "sendfile(2) does not work on this storage: \
                            blob downloads are read into buffers from now on (this one fails and \
                            its client retries); --sendfile false skips the attempt");
                    }
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

/// An error by which `sendfile` says it cannot send from this kind of file at all.
fn is_refusal(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let refusals = [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP];
    refusals
        .iter()
        .any(|r| e.raw_os_error() == Some(r.raw_os_error()))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match placeholder_at(buf) {
            Some(at) => this.poll_send_file(cx, at, buf.len()),
            None => Pin::new(&mut this.tcp).poll_write(cx, buf),
        }
    }

    /// Writes the slices before the first placeholder slice, or, when that one comes first, the
    /// file bytes it stands for.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty());
        if let Some((at, len)) = first.and_then(|b| Some((placeholder_at(b)?, b.len()))) {
            return this.poll_send_file(cx, at, len);
        }
        let lead = bufs
            .iter()
            .position(|b| placeholder_at(b).is_some())
            .unwrap_or(bufs.len());
        Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..lead])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

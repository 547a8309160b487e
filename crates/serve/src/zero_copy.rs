//! Response bodies the kernel moves itself on plain HTTP/1 connections: a file's bytes with
//! `sendfile(2)` (page cache to socket), another socket's bytes with `splice(2)` through a pipe
//! (socket to socket). Neither passes through user space, so a download costs no buffer and one
//! kernel copy fewer per byte (two fewer for a relay).
//!
//! hyper owns the framing and takes bodies only as bytes, so a [`ZeroCopyBody`] yields
//! *placeholder* chunks instead: slices of one allocation that is never written, each standing
//! for a piece of the source, which the body queues on its connection's [`ZeroCopy`] as it yields
//! it. The connection's [`Stream`], the last stop before the socket, sends the bytes a
//! placeholder stands for when hyper writes it. hyper writes an HTTP/1 connection's responses one
//! after another, each body's chunks in order and, with vectored writes (forced on in
//! [`crate::serve`]), as the very slices the body gave it. Each queued piece has its own stretch
//! of the placeholder (one of [`SLOTS`], in turn), and the stream matches a slice to a piece by
//! its address and the piece's progress, not by order alone: a piece hyper cut short (a body
//! longer than its `Content-Length`) is dropped when the next one is written instead of lending
//! its rest to it. Placeholder bytes that match no queued piece, or a source that ends early,
//! fail the write and close the connection: the placeholder's own bytes never reach a client.
//!
//! `ZeroCopy` is a request extension only on HTTP/1 requests of connections [`crate::serve`]
//! accepted; without it a handler streams its bytes another way.
//!
//! A file is read by the kernel inside `sendfile`, on the runtime worker. So that a cold file
//! rarely makes a worker wait for the disk, the body asks the kernel (on the blocking pool) to
//! keep [`READ_AHEAD`] bytes past the current piece read ahead (`POSIX_FADV_WILLNEED`).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use rustix::pipe::SpliceFlags;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The largest piece one placeholder chunk stands for.
const PIECE: usize = 2 << 20;
/// How far past the piece on the wire a file is asked to be read ahead. One piece ahead kept a
/// single read in flight, and a cold 256 MiB pull ran at 560–1,240 MiB/s; the disk answers
/// faster when it has several.
const READ_AHEAD: u64 = 16 << 20;
/// Stretches of the placeholder a connection's pieces take in turn; far more than hyper ever
/// holds unwritten (it asks a body for more only below ~400 KiB buffered).
const SLOTS: usize = 16;

/// The pipe a relay splices through: the largest an unprivileged process may ask for by
/// default (`/proc/sys/fs/pipe-max-size`). It holds references to received pages, not copies.
const PIPE_BYTES: usize = 1 << 20;

/// Never written, so its pages are never touched: it costs address space, not memory. A heap
/// allocation, so no other data can share its addresses.
static PLACEHOLDER: LazyLock<&'static [u8]> = LazyLock::new(|| vec![0u8; PIECE * SLOTS].leak());

/// Set once `sendfile` or `splice` refused to work here (a filesystem that cannot splice).
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Allocates the placeholder before the allocator's thresholds have grown, so it is mapped fresh
/// (zero pages, untouched) rather than carved from a heap it would have to clear.
pub(crate) fn init() {
    LazyLock::force(&PLACEHOLDER);
}

/// Where in the placeholder `bytes` start, if they are placeholder bytes.
fn placeholder_at(bytes: &[u8]) -> Option<usize> {
    let at = (bytes.as_ptr() as usize).checked_sub(PLACEHOLDER.as_ptr() as usize)?;
    (!bytes.is_empty() && at < PLACEHOLDER.len()).then_some(at)
}

/// The pieces a connection's placeholder bytes stand for, in the order they go out.
#[derive(Clone, Default)]
pub struct ZeroCopy(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    pieces: VecDeque<Piece>,
    next_slot: usize,
}

struct Piece {
    source: Source,
    /// Where in the placeholder this piece's next unsent byte stands.
    at: usize,
    left: u64,
}

#[derive(Clone)]
enum Source {
    File { file: Arc<File>, offset: u64 },
    Socket(Arc<Spliced>),
}

/// A socket whose bytes are relayed, and the pipe `splice` moves them through. A piece splices
/// no more into the pipe than it has left, so the pipe is empty whenever a piece ends.
struct Spliced {
    socket: TcpStream,
    pipe_out: OwnedFd,
    pipe_in: OwnedFd,
    in_pipe: Mutex<usize>,
}

impl Queue {
    /// Queues `len` bytes of `source`; the placeholder bytes that stand for them.
    fn push(&mut self, source: Source, len: usize) -> &'static [u8] {
        let at = self.next_slot * PIECE;
        self.next_slot = (self.next_slot + 1) % SLOTS;
        let left = len as u64;
        self.pieces.push_back(Piece { source, at, left });
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

impl ZeroCopy {
    /// Whether such bodies can be sent: `false` once the kernel refused one in this process.
    pub fn available(&self) -> bool {
        !REFUSED.load(Ordering::Relaxed)
    }

    /// A body sending `range` of `file`. Like every body here it must be a response's whole
    /// body, with its length as the `Content-Length`, and not the answer to a HEAD.
    pub fn file(&self, file: Arc<File>, range: Range<u64>) -> ZeroCopyBody {
        let mut body = ZeroCopyBody {
            queue: self.clone(),
            first: Bytes::new(),
            source: Source::File { file, offset: 0 },
            pos: range.start,
            end: range.end.max(range.start),
            advising: None,
            advised: range.start,
        };
        body.advise();
        body
    }

    /// A body relaying `len` bytes: `first` (already read), then the rest from `socket`.
    pub fn relay(&self, socket: TcpStream, first: Bytes, len: u64) -> io::Result<ZeroCopyBody> {
        use rustix::pipe::PipeFlags;
        let (pipe_out, pipe_in) =
            rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        // The default 64 KiB would take two splices per 64 KiB. Past the per-user pipe budget
        // the kernel refuses or gives less, and a smaller pipe only takes more calls.
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_BYTES);
        let spliced = Spliced {
            socket,
            pipe_out,
            pipe_in,
            in_pipe: Mutex::new(0),
        };
        let rest = len.saturating_sub(first.len() as u64);
        Ok(ZeroCopyBody {
            queue: self.clone(),
            first: first.slice(..first.len().min(len as usize)),
            source: Source::Socket(Arc::new(spliced)),
            pos: 0,
            end: rest,
            advising: None,
            advised: 0,
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See the module docs.
pub struct ZeroCopyBody {
    queue: ZeroCopy,
    /// Bytes sent as they are before the pieces.
    first: Bytes,
    source: Source,
    /// The next piece's start: a file offset, or the count relayed so far.
    pos: u64,
    end: u64,
    advising: Option<tokio::task::JoinHandle<()>>,
    /// Where the read-ahead asked for so far ends.
    advised: u64,
}

impl ZeroCopyBody {
    /// Asks the kernel to read the file into the page cache up to [`READ_AHEAD`] past `pos`,
    /// unless it is still taking the last request.
    fn advise(&mut self) {
        let Source::File { file, .. } = &self.source else {
            return;
        };
        let until = self.end.min(self.pos.saturating_add(READ_AHEAD));
        if until <= self.advised || self.advising.as_ref().is_some_and(|a| !a.is_finished()) {
            return;
        }
        let (file, pos, len) = (
            file.clone(),
            self.advised,
            NonZeroU64::new(until - self.advised),
        );
        self.advised = until;
        self.advising = Some(tokio::task::spawn_blocking(move || {
            // Only a hint: a kernel that ignores it sends the same bytes, only later.
            let _ = rustix::fs::fadvise(&*file, pos, len, rustix::fs::Advice::WillNeed);
        }));
    }

    fn piece_source(&self) -> Source {
        match &self.source {
            Source::File { file, .. } => Source::File {
                file: file.clone(),
                offset: self.pos,
            },
            socket @ Source::Socket(_) => socket.clone(),
        }
    }
}

impl http_body::Body for ZeroCopyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if !this.first.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.first)))));
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let len = (this.end - this.pos).min(PIECE as u64) as usize;
        let placeholder = this.queue.queue().push(this.piece_source(), len);
        this.pos += len as u64;
        this.advise();
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(placeholder)))))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_empty() && self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.first.len() as u64 + self.end - self.pos)
    }
}

/// A connection's TCP stream that sends queued pieces in place of placeholder bytes.
pub(crate) struct Stream {
    tcp: TcpStream,
    queue: ZeroCopy,
}

impl Stream {
    pub(crate) fn new(tcp: TcpStream, queue: ZeroCopy) -> Stream {
        Stream { tcp, queue }
    }

    /// Sends the bytes the placeholder slice starting at `at` stands for, up to `max` of them.
    fn poll_send_piece(
        &mut self,
        cx: &mut Context<'_>,
        at: usize,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let mut queue = self.queue.queue();
        let Some(piece) = queue.piece_at(at) else {
            return Poll::Ready(Err(io::Error::other(
                "placeholder bytes with no piece behind them",
            )));
        };
        let count = usize::try_from(piece.left).unwrap_or(usize::MAX).min(max);
        let sent = match &mut piece.source {
            Source::File { file, offset } => ready!(send_file(&self.tcp, cx, file, offset, count)),
            Source::Socket(spliced) => ready!(spliced.poll_relay(&self.tcp, cx, count)),
        };
        let sent = match sent {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the source ended before the bytes its response promised",
            )),
            Err(e) => {
                if is_refusal(&e) && !REFUSED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "sendfile(2)/splice(2) do not work here: \
                        downloads are read into buffers from now on (this one fails and its \
                        client retries); --sendfile false skips the attempt");
                }
                Err(e)
            }
            Ok(n) => Ok(n),
        }?;
        piece.at += sent;
        piece.left -= sent as u64;
        if piece.left == 0 {
            queue.pieces.pop_front();
        }
        Poll::Ready(Ok(sent))
    }
}

/// Up to `count` bytes of `file` from `offset` to `tcp`; `offset` moves past them.
fn send_file(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        let mut at = *offset;
        let sent = tcp.try_io(Interest::WRITABLE, || {
            rustix::fs::sendfile(tcp, file, Some(&mut at), count).map_err(io::Error::from)
        });
        match sent {
            Ok(n) => {
                *offset += n as u64;
                return Poll::Ready(Ok(n));
            }
            Err(e) if is_retry(&e) => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

impl Spliced {
    /// Moves up to `count` bytes from the relayed socket to `tcp`: into the pipe while it is
    /// empty, out of it otherwise. Each direction waits on its own socket's readiness.
    fn poll_relay(
        &self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        count: usize,
    ) -> Poll<io::Result<usize>> {
        let mut in_pipe = self.in_pipe.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *in_pipe > 0 {
                ready!(tcp.poll_write_ready(cx))?;
                let len = (*in_pipe).min(count);
                match tcp.try_io(Interest::WRITABLE, || splice(&self.pipe_out, tcp, len)) {
                    Ok(n) => {
                        *in_pipe -= n;
                        return Poll::Ready(Ok(n));
                    }
                    Err(e) if is_retry(&e) => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            ready!(self.socket.poll_read_ready(cx))?;
            let socket = &self.socket;
            match socket.try_io(Interest::READABLE, || splice(socket, &self.pipe_in, count)) {
                // The relayed socket ended: 0 says so to the caller.
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(n) => *in_pipe = n,
                Err(e) if is_retry(&e) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn splice(
    from: impl std::os::fd::AsFd,
    to: impl std::os::fd::AsFd,
    len: usize,
) -> io::Result<usize> {
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    rustix::pipe::splice(from, None, to, None, len, flags).map_err(io::Error::from)
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// An error by which the kernel says it cannot move this kind of source at all.
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
            Some(at) => this.poll_send_piece(cx, at, buf.len()),
            None => Pin::new(&mut this.tcp).poll_write(cx, buf),
        }
    }

    /// Writes the slices before the first placeholder slice, or, when that one comes first, the
    /// bytes it stands for.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty());
        if let Some((at, len)) = first.and_then(|b| Some((placeholder_at(b)?, b.len()))) {
            return this.poll_send_piece(cx, at, len);
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

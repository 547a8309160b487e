//! A connection's inactivity deadline, at the level of its bytes so that it holds for HTTP/1
//! and HTTP/2 alike: until the first byte arrives the connection has `idle_timeout`, afterwards
//! `keepalive_timeout`; every read or write that moves bytes pushes the deadline back, and it
//! does not expire while a request of the connection is being handled (a slow handler is not an
//! idle client). Past it, reads and writes fail with `TimedOut` and hyper closes the connection.
//!
//! Closing lingers: after its FIN, the connection goes on reading and discarding what the peer
//! still sends (a request body refused before it was read) until the peer closes, for at most
//! [`LINGER_TIME`] and [`LINGER_BYTES`]. Closed with those bytes unread, the kernel would reset
//! the connection, and a client still sending would get a broken pipe instead of the answer.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::Limits;

/// Longest a closing connection goes on reading what its peer still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes a closing connection reads (and discards) from its peer.
const LINGER_BYTES: usize = 64 << 20;

pub struct Deadline<T> {
    io: T,
    sleep: Pin<Box<Sleep>>,
    spoken: bool,
    idle: Duration,
    keepalive: Duration,
    in_flight: Arc<AtomicUsize>,
    /// Once closing: how many more bytes the peer may send before the connection is dropped.
    lingering: Option<usize>,
}

impl<T> Deadline<T> {
    pub fn new(io: T, limits: Limits, in_flight: Arc<AtomicUsize>) -> Deadline<T> {
        Deadline {
            io,
            sleep: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            spoken: false,
            idle: limits.idle_timeout,
            keepalive: limits.keepalive_timeout,
            in_flight,
            lingering: None,
        }
    }

    fn moved(&mut self) {
        let wait = if self.spoken {
            self.keepalive
        } else {
            self.idle
        };
        self.sleep.as_mut().reset(Instant::now() + wait);
    }

    /// Called when the IO is not ready: `Ready(err)` once the deadline has passed with no
    /// request in flight; otherwise the timer is armed to wake this task.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            if self.in_flight.load(Ordering::Relaxed) == 0 {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection inactive past its deadline",
                ));
            }
            self.moved();
        }
        Poll::Pending
    }
}

impl<T> Deadline<T> {
    /// What a write came to: bytes moved push the deadline back; not ready checks it.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.expired(cx).map(Err),
            other => other,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.spoken = true;
                    this.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.expired(cx).map(Err),
            other => other,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Sends the FIN, then lingers (see the module docs).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.lingering.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.lingering = Some(LINGER_BYTES);
            this.sleep.as_mut().reset(Instant::now() + LINGER_TIME);
        }
        this.poll_linger(cx)
    }
}

impl<T: AsyncRead + Unpin> Deadline<T> {
    /// Ready when the peer has closed, or failed, or sent its allowance, or the time is up.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 16 * 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let left = self
                        .lingering
                        .unwrap_or(0)
                        .saturating_sub(buf.filled().len());
                    if left == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    self.lingering = Some(left);
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return self.sleep.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

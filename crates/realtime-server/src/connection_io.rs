//! The socket of one connection as hyper (and, after an upgrade, the WebSocket
//! session) sees it: it tells the connection's phase when a new request begins,
//! writes a JSON response in place of hyper's own bodiless parse-error responses,
//! and holds the connection's slot until the socket is dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http_error;
use crate::phase::ConnectionPhase;
use crate::slots::Slot;

pub(crate) struct ConnectionIo {
    tcp: TcpStream,
    /// `None` once the app's `101` has gone out: from then on the socket belongs
    /// to a WebSocket session and this layer only passes bytes through (and the
    /// phase, no longer needed, is not kept for the life of the session).
    phase: Option<Arc<ConnectionPhase>>,
    /// A JSON error response standing in for hyper's, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    _slot: Slot,
}

impl ConnectionIo {
    pub(crate) fn new(tcp: TcpStream, phase: Arc<ConnectionPhase>, slot: Slot) -> Self {
        ConnectionIo {
            tcp,
            phase: Some(phase),
            replacement: None,
            _slot: slot,
        }
    }

    /// Looks at the start of a write at a response boundary: the app's response
    /// passes; hyper's own parse-error response is swapped for the JSON one.
    /// Returns whether `head` was swallowed.
    fn intercept(&mut self, head: &[u8]) -> bool {
        if !head.starts_with(b"HTTP/1.") {
            return false;
        }
        let Some(phase) = &self.phase else {
            return false;
        };
        if phase.take_response_ready() {
            if head.starts_with(b"HTTP/1.1 101 ") {
                self.phase = None;
            }
            return false;
        }
        match http_error::replace_parse_error(head) {
            Some(json) => {
                self.replacement = Some((json, 0));
                true
            }
            None => false,
        }
    }

    /// Writes what is left of the replacement response.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ConnectionIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if let Some(phase) = &this.phase
            && buf.filled().len() > before
        {
            phase.bytes_read();
        }
        read
    }
}

impl AsyncWrite for ConnectionIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.phase.is_some() {
            ready!(this.poll_replacement(cx))?;
            if this.intercept(buf) {
                let _ = this.poll_replacement(cx)?;
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.phase.is_some() {
            ready!(this.poll_replacement(cx))?;
            let head = bufs.iter().find(|b| !b.is_empty());
            if head.is_some_and(|head| this.intercept(head)) {
                let _ = this.poll_replacement(cx)?;
                return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
            }
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

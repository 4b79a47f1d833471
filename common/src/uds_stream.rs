//! `UdsStream`: a Unix-socket connection that asks epoll for write
//! readiness only while a write is actually blocked.
//!
//! Why: tokio registers every socket for readable *and* writable events,
//! edge-triggered. A Unix socket signals "writable" to its peer's waiters
//! each time the receiver consumes a message (`unix_write_space` has no
//! "was anyone blocked" check, unlike TCP), so every message between two
//! daemons also woke the *sender's* idle thread, for nothing: one extra
//! thread wake-up (an inter-processor interrupt when the sender sleeps on
//! another vCPU) per hop, paid by the receiver inside its `recv`. A put
//! makes four such hops: one member's three daemons went from 13.5 to 9.2
//! context switches per put.
//!
//! Here the socket is registered for reads only. A write that finds the
//! socket buffer full registers a duplicate of the descriptor for write
//! readiness, waits on it, and drops that registration once a write goes
//! through again.

use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tonic::transport::server::Connected;

/// See the module comment.
pub struct UdsStream {
    /// The socket, registered for readability only.
    io: AsyncFd<StdUnixStream>,
    /// A duplicate descriptor registered for writability, present only
    /// while a write waits for room.
    write_waiter: Option<AsyncFd<OwnedFd>>,
}

impl UdsStream {
    /// Take over a tokio stream (already non-blocking).
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Self> {
        let std = stream.into_std()?;
        std.set_nonblocking(true)?;
        Ok(Self {
            // SAFETY: the std stream owns its descriptor, and it is neither
            // closed nor replaced while the AsyncFd holds it.
            io: unsafe { AsyncFd::register_with_interest(std, Interest::READABLE)? },
            write_waiter: None,
        })
    }

    /// Try `op` on the socket; on `WouldBlock`, wait for write readiness on
    /// the duplicate descriptor (registering it if needed) and retry.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&StdUnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match op(self.io.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    // Room again (or a real error): stop listening for it.
                    self.write_waiter = None;
                    return Poll::Ready(done);
                }
            }
            let waiter = match &mut self.write_waiter {
                Some(waiter) => waiter,
                slot @ None => {
                    let dup = self.io.get_ref().as_fd().try_clone_to_owned()?;
                    // SAFETY: as in `new`; the duplicate is an owned
                    // descriptor that the AsyncFd deregisters before closing.
                    slot.insert(unsafe {
                        AsyncFd::register_with_interest(dup, Interest::WRITABLE)?
                    })
                }
            };
            // Clear the readiness and retry: the retry, not a possibly
            // older edge, decides whether there is room.
            ready!(waiter.poll_write_ready(cx))?.clear_ready();
        }
    }
}

impl AsyncRead for UdsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.io.poll_read_ready(cx))?;
            // Read straight into the spare, uninitialised part of the
            // caller's buffer: zeroing it first (what a safe `read` needs)
            // cost a memset of hyper's whole read buffer on every read.
            // SAFETY: only bytes the kernel wrote are marked initialised.
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            match guard.try_io(|io| recv_into(io.get_ref(), unfilled)) {
                Ok(Ok(n)) => {
                    // A stream socket's recv stops short only when it has
                    // emptied the queue: forget the readiness now instead
                    // of learning it from one more recv that fails with
                    // EAGAIN (what tokio does for TCP). An edge that
                    // arrived meanwhile is kept: tokio clears only the
                    // readiness this guard saw.
                    if n > 0 && n < room {
                        guard.clear_ready();
                    }
                    // SAFETY: `recv` filled the first `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// recv(2) into possibly uninitialised memory.
fn recv_into(socket: &StdUnixStream, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the kernel writes at most `buf.len()` bytes at `buf`, which
    // is valid for writes of that many bytes; uninitialised bytes are never
    // read.
    let n = unsafe { nix::libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncWrite for UdsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut io| io.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut io| io.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

impl Connected for UdsStream {
    /// No daemon reads a Unix-socket peer's address or credentials after
    /// accepting it (`uds::incoming` checks the uid before wrapping).
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

#[cfg(test)]
mod tests {
    use super::UdsStream;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (UdsStream, UdsStream) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        (
            UdsStream::new(a).expect("wrap a"),
            UdsStream::new(b).expect("wrap b"),
        )
    }

    /// A write larger than the socket buffer waits for the reader (the
    /// write-readiness path) and then completes, every byte in order.
    #[tokio::test]
    async fn blocked_write_resumes_when_the_peer_reads() {
        let (mut writer, mut reader) = pair();
        let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let send = tokio::spawn(async move {
            writer.write_all(&data).await.expect("write");
            writer.shutdown().await.expect("shutdown");
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!send.is_finished(), "4 MiB fit in the socket buffer");
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.expect("read");
        send.await.expect("writer task");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes changed in transit");
    }

    /// Both directions work at once, with no write-readiness registration
    /// left once writes go through again.
    #[tokio::test]
    async fn echo_round_trips() {
        let (mut a, mut b) = pair();
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let n = b.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                b.write_all(&buf[..n]).await.expect("echo");
            }
        });
        for i in 0..100u32 {
            let msg = i.to_be_bytes();
            a.write_all(&msg).await.expect("send");
            let mut back = [0u8; 4];
            a.read_exact(&mut back).await.expect("receive");
            assert_eq!(back, msg);
            assert!(a.write_waiter.is_none());
        }
        a.shutdown().await.expect("shutdown");
        echo.await.expect("echo task");
    }
}

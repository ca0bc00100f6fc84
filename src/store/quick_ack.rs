//! TCP connections to the S3 server that acknowledge received data at once.
//!
//! A server that writes a response's headers and its body in two `send`s without `TCP_NODELAY`
//! (Garage does) holds the body back under Nagle's algorithm until the headers are acknowledged,
//! and Linux delays that acknowledgement by up to 40 ms on a request/response connection. Every
//! small GET then takes 40-44 ms instead of about one: `cat` of a 4 KiB file, a 4 KiB random
//! read, `tar -c` of a source tree (one small GET per file). [`QuickAckConnector`] wraps
//! hyper's TCP connector so that each of its connections sets `TCP_QUICKACK` after every read
//! that returned data, which sends any acknowledgement the kernel is holding back. That costs one
//! `setsockopt` per read; against servers that set `TCP_NODELAY` it only means acknowledgements
//! leave a little more often (no measurable change in a 1 GiB read here).

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// hyper's TCP connector whose connections acknowledge at once (see the module comment).
#[derive(Clone)]
pub(super) struct QuickAckConnector(pub HttpConnector);

/// A connection made by [`QuickAckConnector`].
pub(super) struct QuickAckStream(TokioIo<TcpStream>);

impl tower_service::Service<http::Uri> for QuickAckConnector {
    type Response = QuickAckStream;
    type Error = <HttpConnector as tower_service::Service<http::Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAckStream, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(QuickAckStream) })
    }
}

impl QuickAckStream {
    /// Sends any delayed acknowledgement now and leaves delayed-ACK ("pingpong") mode. Failure
    /// only means the kernel keeps its default behaviour, so it is ignored.
    fn acknowledge_now(&self) {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a descriptor this stream owns, with a pointer to a live c_int
        // and its exact size.
        unsafe {
            libc::setsockopt(
                self.0.inner().as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

impl Read for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Ready(Ok) is data or end of stream; acknowledging at the end costs nothing either.
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.acknowledge_now();
        }
        polled
    }
}

impl Write for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Connection for QuickAckStream {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use tower_service::Service;

    /// A server answering each 4-byte request with a 4-byte response, like a request/response
    /// protocol; returns its address.
    fn ping_server() -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                std::thread::spawn(move || {
                    let mut req = [0u8; 4];
                    while conn.read_exact(&mut req).is_ok() {
                        if conn.write_all(b"pong").is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Whether the kernel delays this socket's acknowledgements ("pingpong" mode, which
    /// `getsockopt(TCP_QUICKACK)` reports as 0).
    fn delays_acks(fd: std::os::fd::RawFd) -> bool {
        let mut val: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a live c_int with its size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&mut val as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(
            rc,
            0,
            "getsockopt(TCP_QUICKACK): {}",
            std::io::Error::last_os_error()
        );
        val == 0
    }

    /// Five request/response rounds, ending with a response read.
    async fn talk<S: Read + Write + Unpin>(stream: &mut S) {
        for _ in 0..5 {
            let sent = futures::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, b"ping")).await;
            assert_eq!(sent.unwrap(), 4);
            let mut got = 0;
            while got < 4 {
                let mut storage = [0u8; 4];
                let mut buf = hyper::rt::ReadBuf::new(&mut storage[got..]);
                futures::future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, buf.unfilled()))
                    .await
                    .unwrap();
                assert!(!buf.filled().is_empty(), "server closed the connection");
                got += buf.filled().len();
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_leave_delayed_ack_mode_after_each_read() {
        let uri: http::Uri = format!("http://{}/", ping_server()).parse().unwrap();
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);

        // The control: a plain connection in the same exchange ends up delaying its
        // acknowledgements, which is what stalls a server that uses Nagle's algorithm.
        let mut plain = tcp.clone().call(uri.clone()).await.unwrap();
        talk(&mut plain).await;
        assert!(
            delays_acks(plain.inner().as_raw_fd()),
            "the kernel did not enter delayed-ACK mode on a plain connection; this test cannot tell"
        );

        let mut quick = QuickAckConnector(tcp).call(uri).await.unwrap();
        talk(&mut quick).await;
        assert!(
            !delays_acks(quick.0.inner().as_raw_fd()),
            "a QuickAckStream is in delayed-ACK mode after reading a response"
        );
    }
}

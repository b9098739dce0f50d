//! A write timeout for connections: hyper has a deadline for reading a request head but none
//! for writing the answer, so a client that asks for `/metrics` and then stops reading (a
//! "slow read" attack) would hold its connection slot for as long as it likes once the
//! answer outgrows the socket buffers. Here a write that makes no progress for the deadline
//! fails, and hyper closes the connection.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Sleep, sleep},
};

/// Wraps a connection; reads pass through, writes fail once stalled for `deadline`.
pub struct WriteDeadline<T> {
    inner: T,
    deadline: Duration,
    /// Armed when a write first cannot proceed, disarmed by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub const fn new(inner: T, deadline: Duration) -> Self {
        Self {
            inner,
            deadline,
            stalled: None,
        }
    }

    /// Passes a ready result through (progress: the deadline starts over); on pending, fails
    /// once the write has been stalled for the whole deadline.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let deadline = self.deadline;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(sleep(deadline)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {deadline:?}"),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const DEADLINE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn a_client_that_stops_reading_fails_the_write() {
        // A pipe holding 64 bytes, and a peer that never reads.
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut connection = WriteDeadline::new(ours, DEADLINE);
        let started = Instant::now();
        let error = connection
            .write_all(&[0; 4096])
            .await
            .expect_err("the write must time out");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= DEADLINE);
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_served() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut connection = WriteDeadline::new(ours, DEADLINE);
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut chunk = [0; 64];
            loop {
                // Each pause is shorter than the deadline; all of them together are longer.
                tokio::time::sleep(DEADLINE / 4).await;
                match theirs.read(&mut chunk).await {
                    Ok(0) | Err(_) => return received,
                    Ok(read) => received.extend_from_slice(&chunk[..read]),
                }
            }
        });
        connection.write_all(&[7; 1024]).await.expect("write");
        connection.shutdown().await.expect("shutdown");
        drop(connection);
        let received = reader.await.expect("reader");
        assert_eq!(received, vec![7; 1024]);
    }
}

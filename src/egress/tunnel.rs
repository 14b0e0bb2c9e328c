//! One tunnel: the TCP connection to an allowed destination, then bytes relayed both ways
//! with `tokio::io::copy_bidirectional` until either side closes or nothing moves for the
//! idle limit. Bytes are counted, never looked at.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::allow::Target;
use super::handshake::Refusal;

/// Connects to `target` (every address its name resolves to, in turn) within `timeout`.
pub async fn open(target: &Target, timeout: Duration) -> Result<TcpStream, Refusal> {
    let connect = TcpStream::connect((target.bare_host(), target.port()));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot connect to {target}: {e}"),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no connection to {target} within {} s",
                timeout.as_secs_f64()
            ),
        )),
    }
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished (or one closed and the other was shut down).
    Closed,
    /// Nothing moved either way for the idle limit.
    Idle,
    Error(std::io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed"),
            End::Idle => f.write_str("idle"),
            End::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// What a tunnel carried.
#[derive(Debug)]
pub struct Summary {
    /// Client to destination, the early bytes included.
    pub sent: u64,
    /// Destination to client.
    pub received: u64,
    pub end: End,
}

/// Relays between `client` and `upstream` (after writing `early` to `upstream`) until the
/// exchange ends or is idle for `idle`.
pub async fn relay<C, U>(client: C, upstream: U, early: &[u8], idle: Duration) -> Summary
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let mut client = Metered::new(client, activity.clone());
    let mut upstream = Metered::new(upstream, activity.clone());
    let end = match upstream.write_all(early).await {
        Err(e) => End::Error(e),
        Ok(()) => {
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
                    Ok(_) => End::Closed,
                    Err(e) => End::Error(e),
                },
                () = activity.idle_for(idle) => End::Idle,
            }
        }
    };
    Summary {
        sent: client.read + early.len() as u64,
        received: upstream.read,
        end,
    }
}

/// When bytes last moved in either direction.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last read of either side.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A stream that counts what is read from it and records the activity.
struct Metered<S> {
    inner: S,
    read: u64,
    activity: Arc<Activity>,
}

impl<S> Metered<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            read: 0,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read += n;
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

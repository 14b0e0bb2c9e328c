//! Connection admission and per-connection deadlines.
//!
//! The adversary is anyone who can open TCP connections to the gateway: on the appliance that
//! is any local process and, through the SSH tunnel, the owner, all from 127.0.0.1. Such a
//! client must not be able to hold the connection table (slowloris, pipelined requests whose
//! answers it never reads) or keep the owner's next request from being answered. So:
//! - every connection has deadlines: request headers within `HEADER_TIMEOUT` (hyper), each
//!   stalled write within `WRITE_TIMEOUT` (a client that stops reading is cut off), and a
//!   total lifetime of `LIFETIME` (then it is closed gracefully after the current answer);
//! - one client key (see `client`) holds at most `MAX_PER_CLIENT` connections, the table at
//!   most `MAX_CONNECTIONS`;
//! - a new connection that finds its key or the table full *evicts* the connection of that
//!   key (or, for a full table, of the key holding the most) that is not in the middle of a
//!   request handler and started a request least recently. A hostile client's idle,
//!   trickling or never-reading connections (no request started for a while) are therefore
//!   displaced by the owner's next connection instead of blocking it, busy keep-alive
//!   clients go last, and an unauthenticated client cannot stay inside a handler (it is
//!   answered at once).
//! - only if nothing is evictable (every connection is running a handler, which takes a valid
//!   token for anything slow) is the newcomer answered `503` with `Retry-After` straight on
//!   the socket, without reading its request.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::client::ClientKey;

/// Open connections at most.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open connections of one client key at most.
pub const MAX_PER_CLIENT: usize = 256;
/// Time a client has to send a request's headers (and the idle limit between requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a write may stay blocked because the client does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection lives; the CLI and the API need one request per connection.
pub const LIFETIME: Duration = Duration::from_secs(120);
/// After `LIFETIME`, time left to finish the answer in progress.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The deadlines in force. Tests shorten them through `CLAWFORT_TEST_WRITE_TIMEOUT_MS` and
/// `CLAWFORT_TEST_LIFETIME_MS`; a value can only lower a deadline, never raise it.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub write: Duration,
    pub lifetime: Duration,
}

impl Deadlines {
    pub fn from_env() -> Self {
        let lowered = |var: &str, default: Duration| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(default, |ms| default.min(Duration::from_millis(ms.max(1))))
        };
        Self {
            write: lowered("CLAWFORT_TEST_WRITE_TIMEOUT_MS", WRITE_TIMEOUT),
            lifetime: lowered("CLAWFORT_TEST_LIFETIME_MS", LIFETIME),
        }
    }
}

struct Entry {
    key: ClientKey,
    activity: Arc<Activity>,
    evict: oneshot::Sender<()>,
}

/// What eviction looks at, updated by the connection's requests.
pub struct Activity {
    epoch: Instant,
    /// Requests of this connection inside the handler right now.
    busy: AtomicUsize,
    /// When the last request started (or the connection was accepted), in ms since `epoch`.
    last_ms: AtomicU64,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// By id, which grows: iteration order is oldest first.
    conns: BTreeMap<u64, Entry>,
    per_key: HashMap<ClientKey, usize>,
}

impl State {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.conns.remove(&id)?;
        if let Some(n) = self.per_key.get_mut(&entry.key) {
            *n -= 1;
            if *n == 0 {
                self.per_key.remove(&entry.key);
            }
        }
        Some(entry)
    }

    /// The connection of `key` not inside a handler whose last request started longest ago
    /// (the oldest one among equals).
    fn least_active(&self, key: ClientKey) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, e)| e.key == key && e.activity.busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|(id, e)| (e.activity.last_ms.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.remove(id) {
            let _ = entry.evict.send(());
        }
    }
}

/// The table of open connections.
pub struct Table {
    epoch: Instant,
    state: Mutex<State>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            state: Mutex::default(),
        }
    }
}

/// A connection's place in the table; leaving it (drop) frees the slot.
pub struct Slot {
    table: Arc<Table>,
    id: u64,
    pub activity: Arc<Activity>,
}

/// Resolves when a newcomer evicted the connection.
pub type Evicted = oneshot::Receiver<()>;

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.lock().remove(self.id);
    }
}

/// The table is full of connections that are all running a handler.
#[derive(Debug)]
pub struct Full;

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection of `key`, evicting an idle one if its key or the table is full.
    pub fn admit(self: &Arc<Self>, key: ClientKey) -> Result<(Slot, Evicted), Full> {
        let mut state = self.lock();
        if state.per_key.get(&key).copied().unwrap_or(0) >= MAX_PER_CLIENT {
            let id = state.least_active(key).ok_or(Full)?;
            state.evict(id);
        } else if state.conns.len() >= MAX_CONNECTIONS {
            let mut keys: Vec<(usize, ClientKey)> =
                state.per_key.iter().map(|(k, n)| (*n, *k)).collect();
            keys.sort_unstable_by_key(|(n, _)| std::cmp::Reverse(*n));
            let id = keys
                .iter()
                .find_map(|(_, k)| state.least_active(*k))
                .ok_or(Full)?;
            state.evict(id);
        }
        let id = state.next_id;
        state.next_id += 1;
        let activity = Arc::new(Activity {
            epoch: self.epoch,
            busy: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        });
        activity.last_ms.store(activity.now_ms(), Ordering::Relaxed);
        let (evict, evicted) = oneshot::channel();
        state.conns.insert(
            id,
            Entry {
                key,
                activity: activity.clone(),
                evict,
            },
        );
        *state.per_key.entry(key).or_insert(0) += 1;
        let slot = Slot {
            table: self.clone(),
            id,
            activity,
        };
        Ok((slot, evicted))
    }
}

/// Marks its connection as inside a handler while it lives, and notes the request's start.
pub struct Busy(Arc<Activity>);

impl Busy {
    pub fn enter(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        activity.last_ms.store(activity.now_ms(), Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// The activity of a connection outside any table (the fuzz target's).
    pub fn untracked() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            busy: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }
}

/// The answer to a connection refused because the table is full.
pub const FULL_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\ncache-control: no-store\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 63\r\n\r\n\
{\"error\":\"too many open connections; retry in a second please\"}";

/// A stream whose writes fail with `TimedOut` once one stays blocked longer than `limit`.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes a write's outcome through, timing how long it has been pending.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its responses",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_response_length_is_right() {
        let text = std::str::from_utf8(FULL_RESPONSE).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
    }

    #[test]
    fn a_full_key_evicts_its_oldest_idle_connection() {
        let table = Arc::new(Table::default());
        let key = ClientKey::Loopback;
        let mut slots: Vec<(Slot, Evicted)> = (0..MAX_PER_CLIENT)
            .map(|_| table.admit(key).unwrap())
            .collect();
        let _busy = Busy::enter(&slots[0].0.activity);
        std::thread::sleep(Duration::from_millis(5));
        // The second oldest started a request since: the third is the least active.
        drop(Busy::enter(&slots[1].0.activity));
        let _newcomer = table.admit(key).unwrap();
        assert!(slots[0].1.try_recv().is_err(), "in a handler");
        assert!(slots[1].1.try_recv().is_err(), "recently active");
        assert!(slots[2].1.try_recv().is_ok());
        // Another key is untouched by a full loopback key.
        let other = ClientKey::of("10.0.0.1".parse().unwrap());
        assert!(table.admit(other).is_ok());
    }

    #[test]
    fn full_of_busy_connections_refuses() {
        let table = Arc::new(Table::default());
        let key = ClientKey::Loopback;
        let slots: Vec<(Slot, Evicted)> = (0..MAX_PER_CLIENT)
            .map(|_| table.admit(key).unwrap())
            .collect();
        let _busy: Vec<Busy> = slots.iter().map(|s| Busy::enter(&s.0.activity)).collect();
        assert!(table.admit(key).is_err());
    }
}

//! The gateway's side of the events: [`Events`], the handle its parts record events
//! through, and [`Pipeline::run`], the tasks that write them to the gateway's feed, follow
//! the host feed and hand both to the owner's messages ([`super::notify`]).
//!
//! [`Events::record`] never blocks and never fails the caller: the event goes through a
//! bounded queue to the writer task, which appends what has queued up in one write and one
//! `fdatasync` on a blocking thread (a burst costs one disk flush), logs each event, and
//! only then passes those that notify to the batcher, so a message never tells of an event
//! the feed could lose. A full queue (a writer stuck on a dead disk) drops the event with
//! an error in the log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::follow::{offset_path, Follower, OffsetFile};
use super::notify::{self, Item};
use super::{feed, gateway_feed, host_feed, Event, Record, Source};
use crate::channel::OwnerNotices;
use crate::paths::Paths;
use crate::redact::Redactor;

/// Events queued for the writer at most.
const QUEUE: usize = 1024;
/// Events written in one append at most.
const WRITE_BATCH: usize = 256;

/// Where the gateway's parts record security events. Cheap to clone; all clones feed one
/// writer ([`Pipeline::run`]); before it runs, events wait in the queue.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::Sender<Event>,
    rx: Arc<Mutex<Option<mpsc::Receiver<Event>>>>,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl Events {
    /// Queues `event` for the gateway's feed and, if it notifies, the owner.
    pub fn record(&self, event: Event) {
        if let Err(e) = self.tx.try_send(event) {
            tracing::error!(
                "a security event was dropped, the writer of the events feed is behind or \
                 stopped: {}",
                match e {
                    mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) =>
                        e.describe(),
                }
            );
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Event>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The gateway's event tasks and their timings.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub paths: Paths,
    pub redactor: Redactor,
    /// Root's feed to follow ([`host_feed`]).
    pub host_feed: PathBuf,
    /// How long a message for the owner gathers events ([`notify::WINDOW`]).
    pub window: Duration,
    /// How often the host feed is looked at.
    pub poll: Duration,
}

impl Pipeline {
    pub const POLL: Duration = Duration::from_secs(5);

    pub fn new(paths: Paths, redactor: Redactor) -> Self {
        Self {
            paths,
            redactor,
            host_feed: host_feed(),
            window: notify::WINDOW,
            poll: Self::POLL,
        }
    }

    /// Writes what `events` records until `shutdown` (then what is queued), and with
    /// `notices` (a channel reaches the owner) follows the host feed and sends the owner
    /// both, batched. Runs once per `events`; a second call returns at once.
    pub async fn run(
        self,
        events: &Events,
        notices: Option<OwnerNotices>,
        shutdown: CancellationToken,
    ) {
        let Some(mut rx) = events.take_receiver() else {
            tracing::error!("the security events pipeline was started twice; not again");
            return;
        };
        let owner = notices.map(|notices| {
            let (tx, items) = mpsc::channel(QUEUE);
            tokio::spawn(notify::run(
                items,
                notices,
                self.window,
                self.redactor.clone(),
            ));
            let follower = tokio::spawn(follow_host(
                self.paths.clone(),
                self.host_feed.clone(),
                tx.clone(),
                self.poll,
                shutdown.clone(),
            ));
            (tx, follower)
        });
        let feed = gateway_feed(&self.paths);
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => None,
                event = rx.recv() => event,
            };
            let mut batch: Vec<Event> = first.into_iter().collect();
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let records: Vec<Record> = batch
                .into_iter()
                .map(|e| Record::now(Source::Gateway, e))
                .collect();
            for record in &records {
                tracing::info!("security event: {}", record.event.describe());
            }
            let write = {
                let (feed, records) = (feed.clone(), records.clone());
                tokio::task::spawn_blocking(move || feed::append(&feed, &records, 0o600)).await
            };
            if let Err(e) = write.map_err(std::io::Error::other).and_then(|r| r) {
                tracing::error!(
                    "cannot write security events to {}: {e} (they are in this log only)",
                    feed.display()
                );
            }
            if let Some((tx, _)) = &owner {
                for record in records.into_iter().filter(|r| r.event.notifies()) {
                    let _ = tx.send(Item::new(record)).await;
                }
            }
        }
        if let Some((_, follower)) = owner {
            let _ = follower.await;
        }
    }
}

/// Polls the host feed every `poll` until `shutdown`, passing new events to `owner`; the
/// position after them is committed once the owner's message is delivered.
async fn follow_host(
    paths: Paths,
    feed: PathBuf,
    owner: mpsc::Sender<Item>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let offsets = OffsetFile(offset_path(&paths));
    let mut follower = {
        let offsets = offsets.clone();
        let feed = feed.clone();
        match tokio::task::spawn_blocking(move || Follower::new(feed, offsets.load())).await {
            Ok(follower) => follower,
            Err(e) => return tracing::error!("the host events follower did not start: {e}"),
        }
    };
    let mut warned = false;
    loop {
        let polled = tokio::task::spawn_blocking(move || {
            let polled = follower.poll();
            (follower, polled)
        })
        .await;
        let polled = match polled {
            Ok((back, polled)) => {
                follower = back;
                polled
            }
            Err(e) => return tracing::error!("the host events follower stopped: {e}"),
        };
        match polled {
            Ok((contents, position)) => {
                warned = false;
                if contents.damaged > 0 {
                    tracing::warn!(
                        "{} damaged line(s) skipped in the host feed {}",
                        contents.damaged,
                        feed.display()
                    );
                }
                let count = contents.records.len();
                for (n, record) in contents.records.into_iter().enumerate() {
                    tracing::info!("host security event: {}", record.event.describe());
                    let mut item = Item::new(record);
                    if let (true, Some(position)) = (n + 1 == count, position) {
                        let offsets = offsets.clone();
                        item.ack = Some(Box::new(move || {
                            if let Err(e) = offsets.commit(position) {
                                tracing::error!(
                                    "cannot record how far the host feed was read ({}): {e}; \
                                     a restart sends its events again",
                                    offsets.0.display()
                                );
                            }
                        }));
                    }
                    if owner.send(item).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) if !warned => {
                warned = true;
                tracing::warn!(
                    "cannot read the host feed {}: {e} (retrying every {poll:?})",
                    feed.display()
                );
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

//! Events into owner messages, batched and rate-limited: the first event opens a window
//! ([`WINDOW`]); everything arriving before it closes goes into the same message, which is
//! posted to the owner's notices ([`OwnerNotices`]) when it closes. The next window opens
//! with the next event, so there is at most one message a window, and a burst of 500 bans is
//! one message listing [`SHOWN`] and saying how many more.
//!
//! The text is built from the events' typed fields ([`super::Event::describe`]) and goes
//! through the gateway's [`Redactor`] all the same.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Record;
use crate::channel::{Notice, OwnerNotices};
use crate::redact::Redactor;

/// How long a message gathers events.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Events listed in one message; the rest are counted.
pub const SHOWN: usize = 10;
/// The longest line of a message, in characters.
const LINE_CAP: usize = 200;

/// Runs once the owner has the message holding an event.
pub type Ack = Box<dyn FnOnce() + Send>;

/// An event for the owner.
pub struct Item {
    pub record: Record,
    /// Run (on a blocking thread) once the message holding it was delivered; within a batch
    /// only the last one runs, so acks must be cumulative (the host feed's position is).
    pub ack: Option<Ack>,
}

impl Item {
    pub fn new(record: Record) -> Self {
        Self { record, ack: None }
    }
}

/// Gathers the items of `events` into messages for `notices`, one per `window` at most,
/// until every sender is gone.
pub async fn run(
    mut events: mpsc::Receiver<Item>,
    notices: OwnerNotices,
    window: Duration,
    redactor: Redactor,
) {
    while let Some(first) = events.recv().await {
        let mut batch = Batch::default();
        batch.add(first);
        let closes = Instant::now() + window;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(closes) => break,
                item = events.recv() => match item {
                    Some(item) => batch.add(item),
                    None => break,
                },
            }
        }
        notices.post(batch.notice(&redactor));
    }
}

/// The events of one window: the first [`SHOWN`] kept, the rest counted.
#[derive(Default)]
struct Batch {
    shown: Vec<Record>,
    more: usize,
    ack: Option<Ack>,
}

impl Batch {
    fn add(&mut self, item: Item) {
        if self.shown.len() < SHOWN {
            self.shown.push(item.record);
        } else {
            self.more += 1;
        }
        if item.ack.is_some() {
            self.ack = item.ack;
        }
    }

    fn notice(self, redactor: &Redactor) -> Notice {
        let count = self.shown.len() + self.more;
        let mut text = match count {
            1 => "Security event:".to_owned(),
            n => format!("{n} security events:"),
        };
        for record in &self.shown {
            let line: String = record.event.describe().chars().take(LINE_CAP).collect();
            text.push_str(&format!(
                "\n- {} {line}",
                record.ts.strftime("%H:%M:%S UTC")
            ));
        }
        if self.more > 0 {
            text.push_str(&format!(
                "\n… and {} more. `clawfort events` on the appliance lists them all.",
                self.more
            ));
        }
        Notice {
            text: redactor.redact(&text).into_owned(),
            delivered: self.ack,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::events::{Event, Source};

    fn ban(n: u32) -> Item {
        Item::new(Record::now(
            Source::Host,
            Event::Fail2banBan {
                jail: "sshd".into(),
                ip: std::net::IpAddr::from(std::net::Ipv4Addr::from(0xC000_0200 + n)),
            },
        ))
    }

    /// The batcher on a paused clock, its notices and its input.
    fn start() -> (
        mpsc::Sender<Item>,
        OwnerNotices,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(1024);
        let notices = OwnerNotices::default();
        let task = tokio::spawn(run(rx, notices.clone(), WINDOW, Redactor::default()));
        (tx, notices, task)
    }

    async fn next_within(notices: &OwnerNotices, wait: Duration) -> Option<Notice> {
        tokio::time::timeout(wait, notices.next()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_message_that_counts_the_rest() {
        let (tx, notices, _task) = start();
        for n in 0..500 {
            tx.send(ban(n)).await.unwrap();
        }
        let notice = next_within(&notices, WINDOW + Duration::from_secs(1))
            .await
            .expect("one message when the window closes");
        assert!(
            notice.text.starts_with("500 security events:"),
            "{}",
            notice.text
        );
        assert_eq!(notice.text.matches("fail2ban banned").count(), SHOWN);
        assert!(notice.text.contains("… and 490 more."), "{}", notice.text);
        assert!(
            next_within(&notices, WINDOW * 4).await.is_none(),
            "no second message for the same burst"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_one_message_a_window() {
        let (tx, notices, _task) = start();
        let started = Instant::now();
        tx.send(ban(1)).await.unwrap();
        assert!(next_within(&notices, WINDOW - Duration::from_secs(1))
            .await
            .is_none());
        // An event just before the window closes joins the first message.
        tx.send(ban(2)).await.unwrap();
        let first = next_within(&notices, Duration::from_secs(2)).await.unwrap();
        assert!(
            first.text.starts_with("2 security events:"),
            "{}",
            first.text
        );
        assert_eq!(started.elapsed(), WINDOW);
        // Events keep coming, one a second: one message a window, never more.
        let mut messages = Vec::new();
        for n in 0..90 {
            tx.send(ban(n)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            while let Some(notice) = next_within(&notices, Duration::ZERO).await {
                messages.push(notice.text);
            }
        }
        assert!(messages.len() <= 3, "{messages:#?}");
        assert!(messages.len() >= 2, "{messages:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn delivering_a_message_runs_the_ack_of_its_last_event() {
        let (tx, notices, _task) = start();
        let acked = Arc::new(AtomicUsize::new(0));
        for n in 1..=3 {
            let acked = Arc::clone(&acked);
            let mut item = ban(n);
            item.ack = Some(Box::new(move || acked.store(n as usize, Ordering::SeqCst)));
            tx.send(item).await.unwrap();
        }
        let notice = next_within(&notices, WINDOW * 2).await.unwrap();
        assert_eq!(acked.load(Ordering::SeqCst), 0, "not before delivery");
        (notice.delivered.expect("an ack"))();
        assert_eq!(acked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_event_is_one_line() {
        let (tx, notices, _task) = start();
        tx.send(Item::new(Record::now(
            Source::Gateway,
            Event::PairingRequest {
                channel: "telegram".into(),
                sender: "4242".into(),
            },
        )))
        .await
        .unwrap();
        let notice = next_within(&notices, WINDOW * 2).await.unwrap();
        assert!(
            notice.text.starts_with("Security event:\n- "),
            "{}",
            notice.text
        );
        assert!(notice
            .text
            .contains("pairing request from 4242 on telegram"));
        assert_eq!(notice.text.lines().count(), 2);
    }
}

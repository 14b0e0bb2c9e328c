//! The seam between a channel adapter (Telegram, ...) and the agent.
//!
//! An adapter turns what arrives on its network into [`Turn`]s that already passed the
//! policy (`messages::handle` said `accepted`), and hands them to an [`Agent`]. The agent
//! answers with a [`Reply`]; the adapter delivers it (splitting, typing indicators and
//! retries are the adapter's business). The owner's chat commands ([`OwnerCommand`]) are
//! parsed here so every channel understands the same ones.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Notify};

use crate::approvals::Answer;
use crate::sessions::SessionKey;

pub use tokio_util::sync::CancellationToken;

/// One accepted inbound message, ready for the agent.
#[derive(Debug, Clone)]
pub struct Turn {
    /// The session this message belongs to (from `messages::handle`).
    pub session_key: SessionKey,
    /// The channel name, e.g. `telegram`.
    pub channel: String,
    /// The sender's id on that channel (a Telegram user id).
    pub peer: String,
    /// The group chat the message was posted in; `None` for a direct message.
    pub group: Option<String>,
    /// The message text, already capped by the adapter.
    pub text: String,
    /// Whether the sender is one of the owner's accounts. Everything else is untrusted input.
    pub from_owner: bool,
    /// When the channel's own record of the message is on disk. The model call may start
    /// before; a tool call or a reply waits for it.
    pub recorded: Recorded,
}

/// Resolves once a channel's record of a message (Telegram's journal line) is durable.
///
/// A journal line is written at once and `fdatasync`ed on another thread while the turn
/// starts, so the sync overlaps the policy check and the model request instead of preceding
/// them. What must not happen twice waits for it: a tool call and any message sent. A kill
/// in the gap leaves the line in the page cache, so the restart sees the job as started and
/// runs nothing again; only a power cut in those fractions of a millisecond can forget the
/// line, and then Telegram sends the update again and one model call is repeated, never a
/// tool call or a reply.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The channel's count of synced writes, and the one this message needs.
    synced: Option<(watch::Receiver<u64>, u64)>,
}

impl Recorded {
    /// Already durable (or the channel keeps no record of its own).
    pub fn now() -> Self {
        Self::default()
    }

    /// Durable once `synced` reaches `write`.
    pub fn after(synced: watch::Receiver<u64>, write: u64) -> Self {
        Self {
            synced: Some((synced, write)),
        }
    }

    /// Waits for the record; `false` if the channel stopped before it was durable, and
    /// then nothing that depends on it may happen.
    pub async fn wait(&self) -> bool {
        match &self.synced {
            None => true,
            Some((synced, write)) => synced.clone().wait_for(|s| s >= write).await.is_ok(),
        }
    }
}

/// What the agent answers. An empty text sends nothing.
#[derive(Debug, Default)]
pub struct Reply {
    pub text: String,
    /// The agent's own record of the answer (transcript, usage) reaching the disk; the
    /// channel runs and awaits it after sending, before it counts the message as done.
    pub saved: Saved,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            saved: Saved::default(),
        }
    }
}

/// The `fdatasync` of the agent's record of a reply, started once the channel has sent the
/// reply ([`Saved::wait`]), so the disk work does not compete with the send for the CPU.
/// The line it syncs is written (in the page cache) before the reply exists, so a kill
/// cannot lose it; a power cut before the sync ends can, and then the channel has not
/// marked the message done either: its sender is asked to send it again (Telegram's
/// journal), never left with an answer its history forgets silently. Dropped without a
/// wait, it still syncs, on a blocking thread.
#[derive(Default)]
pub struct Saved(Option<SyncFn>);

type SyncFn = Box<dyn FnOnce() -> anyhow::Result<()> + Send>;

impl Saved {
    pub fn new(sync: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> Self {
        Self(Some(Box::new(sync)))
    }

    /// Runs the sync on a blocking thread and waits for it; its error, if any.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        match self.0.take() {
            None => Ok(()),
            Some(sync) => tokio::task::spawn_blocking(sync).await?,
        }
    }
}

impl Drop for Saved {
    fn drop(&mut self) {
        let Some(sync) = self.0.take() else { return };
        let run = move || {
            if let Err(e) = sync() {
                tracing::error!("the record of a reply did not reach the disk: {e:#}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(run)),
            Err(_) => run(),
        }
    }
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Saved(pending)"
        } else {
            "Saved(done)"
        })
    }
}

/// Where an owner command was typed, so the agent knows which session it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The session of the chat the command was sent in.
    pub session_key: SessionKey,
    pub channel: String,
    pub peer: String,
    pub group: Option<String>,
}

/// The owner's chat commands. Only the owner may use them; for anyone else the text is an
/// ordinary message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerCommand {
    /// `/stop`: abort every running turn, in any session, and any tool it started, at once.
    Stop,
    /// `/new`: start a fresh session for this chat.
    New,
    /// `/status`: what the agent is doing, model and spend.
    Status,
}

impl OwnerCommand {
    /// Parses `text` as a command: `/stop`, `/new`, `/status`, optionally addressed as
    /// `/stop@<bot_name>` (Telegram's form in groups; a command addressed to another bot is
    /// not ours). Arguments after the command are ignored; anything else is `None`.
    pub fn parse(text: &str, bot_name: Option<&str>) -> Option<Self> {
        let (name, _) = command_word(text, bot_name)?;
        match name.to_ascii_lowercase().as_str() {
            "stop" => Some(Self::Stop),
            "new" => Some(Self::New),
            "status" => Some(Self::Status),
            _ => None,
        }
    }
}

/// The command name of `text` (`/name` or `/name@<bot_name>`) and the words after it; `None`
/// for anything else, including a command addressed to another bot.
fn command_word<'t>(
    text: &'t str,
    bot_name: Option<&str>,
) -> Option<(&'t str, std::str::SplitWhitespace<'t>)> {
    let mut words = text.split_whitespace();
    let word = words.next()?.strip_prefix('/')?;
    let (name, target) = match word.split_once('@') {
        Some((name, target)) => (name, Some(target)),
        None => (word, None),
    };
    if let Some(target) = target {
        if !bot_name.is_some_and(|bot| bot.eq_ignore_ascii_case(target)) {
            return None;
        }
    }
    Some((name, words))
}

/// `/approve <id> [always]` and `/deny <id>`: an answer to an exec approval
/// ([`crate::approvals`]). Who may send it is the channel's decision (the approvers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalCommand {
    Answer {
        id: String,
        answer: Answer,
    },
    /// `/approve` or `/deny` without an id, or with words that make no answer.
    Usage,
}

impl ApprovalCommand {
    pub fn parse(text: &str, bot_name: Option<&str>) -> Option<Self> {
        let (name, mut words) = command_word(text, bot_name)?;
        let deny = match name.to_ascii_lowercase().as_str() {
            "approve" => false,
            "deny" => true,
            _ => return None,
        };
        let Some(id) = words.next() else {
            return Some(Self::Usage);
        };
        let answer = match (deny, words.next().map(str::to_ascii_lowercase).as_deref()) {
            (true, None) => Answer::Deny,
            (false, None) => Answer::Once,
            (false, Some("always")) => Answer::Always,
            _ => return Some(Self::Usage),
        };
        if words.next().is_some() {
            return Some(Self::Usage);
        }
        Some(Self::Answer {
            id: id.to_owned(),
            answer,
        })
    }
}

/// A message for the owner that nobody asked for: a budget warning, a rejected API key.
/// Sent on its own, never appended to an answer.
pub struct Notice {
    pub text: String,
    /// Run (on a blocking thread) once a channel delivered the notice to the owner, e.g. to
    /// record that a warning need not be sent again.
    pub delivered: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
}

impl Notice {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            delivered: None,
        }
    }
}

/// Where the agent posts [`Notice`]s and the channel that reaches the owner takes them from.
/// Cheap to clone; all clones share one queue, which holds at most [`OwnerNotices::CAPACITY`]
/// notices (the oldest goes first when nobody takes them, e.g. without a channel).
#[derive(Debug, Clone, Default)]
pub struct OwnerNotices(Arc<NoticeQueue>);

#[derive(Debug, Default)]
struct NoticeQueue {
    queue: Mutex<VecDeque<Notice>>,
    ready: Notify,
}

impl OwnerNotices {
    pub const CAPACITY: usize = 16;

    pub fn post(&self, notice: Notice) {
        let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= Self::CAPACITY {
            queue.pop_front();
        }
        queue.push_back(notice);
        drop(queue);
        self.0.ready.notify_one();
    }

    /// The next notice, waiting for one. One taker is expected (the owner's channel).
    pub async fn next(&self) -> Notice {
        loop {
            let next = self
                .0
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some(notice) = next {
                return notice;
            }
            // `notify_one` leaves a permit when nobody waits, so a post between the check
            // and this wait is not missed.
            self.0.ready.notified().await;
        }
    }
}

/// The agent side of a channel, implemented by the agent loop.
///
/// Calls may run concurrently for different chats; an implementation serialises turns of
/// one session itself if it needs to.
pub trait Agent: Send + Sync + 'static {
    /// Runs one turn. `cancel` fires when the owner sends `/stop` or the channel shuts
    /// down; the turn should then end promptly (its result is discarded).
    fn handle_turn(
        &self,
        turn: Turn,
        cancel: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Reply>> + Send;

    /// Executes an owner command. For [`OwnerCommand::Stop`] the adapter has already
    /// cancelled the running turn's token; the agent stops whatever else it runs.
    fn handle_command(
        &self,
        command: OwnerCommand,
        context: CommandContext,
    ) -> impl Future<Output = anyhow::Result<Reply>> + Send;
}

#[cfg(test)]
mod tests {
    use super::OwnerCommand::{self, *};

    #[test]
    fn parses_the_owner_commands() {
        assert_eq!(OwnerCommand::parse("/stop", None), Some(Stop));
        assert_eq!(OwnerCommand::parse("  /NEW please", None), Some(New));
        assert_eq!(
            OwnerCommand::parse("/status@Claw_bot", Some("claw_bot")),
            Some(Status)
        );
        assert_eq!(
            OwnerCommand::parse("/status@other_bot", Some("claw_bot")),
            None
        );
        assert_eq!(OwnerCommand::parse("/status@claw_bot", None), None);
        assert_eq!(OwnerCommand::parse("stop", None), None);
        assert_eq!(OwnerCommand::parse("/stopper", None), None);
        assert_eq!(OwnerCommand::parse("please /stop", None), None);
        assert_eq!(OwnerCommand::parse("", None), None);
    }

    #[test]
    fn parses_approval_answers() {
        use super::{Answer, ApprovalCommand as A};
        let answer = |id: &str, answer| A::Answer {
            id: id.into(),
            answer,
        };
        assert_eq!(
            A::parse("/approve k3x9", None),
            Some(answer("k3x9", Answer::Once))
        );
        assert_eq!(
            A::parse("/approve@claw_bot k3x9 ALWAYS", Some("claw_bot")),
            Some(answer("k3x9", Answer::Always))
        );
        assert_eq!(
            A::parse("/deny k3x9", None),
            Some(answer("k3x9", Answer::Deny))
        );
        assert_eq!(A::parse("/deny k3x9 always", None), Some(A::Usage));
        assert_eq!(A::parse("/approve k3x9 now please", None), Some(A::Usage));
        assert_eq!(A::parse("/approve", None), Some(A::Usage));
        assert_eq!(A::parse("/approve@other_bot k3x9", Some("claw_bot")), None);
        assert_eq!(A::parse("approve k3x9", None), None);
        assert_eq!(A::parse("/stop", None), None);
    }

    #[tokio::test]
    async fn notices_arrive_in_order_and_the_queue_is_bounded() {
        let notices = super::OwnerNotices::default();
        let taker = notices.clone();
        let first = tokio::spawn(async move { taker.next().await.text });
        tokio::task::yield_now().await;
        notices.post(super::Notice::new("one"));
        assert_eq!(first.await.unwrap(), "one");
        for n in 0..super::OwnerNotices::CAPACITY + 2 {
            notices.post(super::Notice::new(n.to_string()));
        }
        assert_eq!(
            notices.next().await.text,
            "2",
            "the two oldest were dropped"
        );
    }
}

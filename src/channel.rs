//! The seam between a channel adapter (Telegram, ...) and the agent.
//!
//! An adapter turns what arrives on its network into [`Turn`]s that already passed the
//! policy (`messages::handle` said `accepted`), and hands them to an [`Agent`]. The agent
//! answers with a [`Reply`]; the adapter delivers it (splitting, typing indicators and
//! retries are the adapter's business). The owner's chat commands ([`OwnerCommand`]) are
//! parsed here so every channel understands the same ones.

use std::future::Future;

use crate::sessions::SessionKey;

pub use tokio_util::sync::CancellationToken;

/// One accepted inbound message, ready for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// What the agent answers. An empty text sends nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self { text: text.into() }
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
    /// `/stop`: abort the running turn and any tool it started, at once.
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
        let word = text.split_whitespace().next()?;
        let word = word.strip_prefix('/')?;
        let (name, target) = match word.split_once('@') {
            Some((name, target)) => (name, Some(target)),
            None => (word, None),
        };
        if let Some(target) = target {
            if !bot_name.is_some_and(|bot| bot.eq_ignore_ascii_case(target)) {
                return None;
            }
        }
        match name.to_ascii_lowercase().as_str() {
            "stop" => Some(Self::Stop),
            "new" => Some(Self::New),
            "status" => Some(Self::Status),
            _ => None,
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
}

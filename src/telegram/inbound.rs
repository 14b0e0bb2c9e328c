//! From a Telegram update to what the channel does with it, before any side effect.
//!
//! Only config decides here (no files, no network), so the decision can be made the moment
//! an update arrives: groups must be listed in `groups` (or `"*"`), their senders pass
//! `groupPolicy`, and with `requireMention` (the default) the bot must be addressed: an
//! `@botname` mention entity, a text mention of the bot, a `/command@botname`, or a reply
//! to one of the bot's messages. Direct messages always go on to the pairing policy.

use super::api::{Message, Update, User};
use super::state::{Job, JobKind};
use super::{GroupPolicy, GroupSettings, TelegramSettings};
use crate::channel::{ApprovalCommand, OwnerCommand};
use crate::redact::Redactor;

/// What to do with one update.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Nothing: the reason is logged at debug level.
    Ignore(&'static str),
    /// An owner command, executed at once (it must be able to stop the running turn).
    Command {
        command: OwnerCommand,
        chat_id: i64,
        peer: String,
        group: Option<String>,
    },
    /// `/approve` or `/deny`, from anyone (the channel refuses a non-approver and logs it).
    Approval {
        command: ApprovalCommand,
        chat_id: i64,
        peer: String,
    },
    /// Work for the journal.
    Job(Job),
}

/// Classifies `update` for the bot `me`. `channel_allow_from` is the channel's `allowFrom`
/// (the fallback sender list for groups).
pub fn classify(
    update: &Update,
    settings: &TelegramSettings,
    channel_allow_from: &[String],
    me: &User,
    redactor: &Redactor,
) -> Inbound {
    let Some(message) = &update.message else {
        return Inbound::Ignore("not a message update");
    };
    let Some(from) = message.from.as_ref().filter(|u| !u.is_bot) else {
        return Inbound::Ignore("no human sender");
    };
    let peer = from.id.to_string();
    let owner = settings.owner_ids.contains(&peer);
    let group = match message.chat.kind.as_str() {
        "private" => None,
        "group" | "supergroup" => {
            let group_id = message.chat.id.to_string();
            let Some(config) = settings
                .groups
                .get(&group_id)
                .or_else(|| settings.groups.get("*"))
            else {
                return Inbound::Ignore("group not listed in channels.telegram.groups");
            };
            if !owner && !sender_allowed(settings, config, channel_allow_from, &peer) {
                return Inbound::Ignore("group sender not allowed by groupPolicy");
            }
            let require_mention = config.require_mention.unwrap_or(settings.require_mention);
            if require_mention && !addresses_bot(message, me) {
                return Inbound::Ignore("group message without a mention of the bot");
            }
            Some(group_id)
        }
        _ => return Inbound::Ignore("channel post"),
    };
    let job = |kind| Job {
        update_id: update.update_id,
        chat_id: message.chat.id,
        message_id: message.message_id,
        peer: peer.clone(),
        group: group.clone(),
        kind,
        started: false,
    };
    let Some(text) = &message.text else {
        return match group {
            None => Inbound::Job(job(JobKind::NotText)),
            Some(_) => Inbound::Ignore("group message without text"),
        };
    };
    if settings.approvals.is_some() {
        if let Some(command) = ApprovalCommand::parse(text, me.username.as_deref()) {
            return Inbound::Approval {
                command,
                chat_id: message.chat.id,
                peer,
            };
        }
    }
    if owner {
        if let Some(command) = OwnerCommand::parse(text, me.username.as_deref()) {
            return Inbound::Command {
                command,
                chat_id: message.chat.id,
                peer,
                group,
            };
        }
    }
    // Redacted before it is journaled (the journal is a file too) and before the cut, so
    // a secret across the cut cannot leave a recognisable half.
    let text = redactor.redact(text);
    let (text, truncated) = cap(&text, settings.max_inbound_bytes);
    Inbound::Job(job(JobKind::Text {
        text: text.to_string(),
        truncated,
    }))
}

/// `groupPolicy` for a group sender: the group's own policy and list first, then the
/// channel's `groupPolicy` and `groupAllowFrom` (which falls back to `allowFrom`).
fn sender_allowed(
    settings: &TelegramSettings,
    group: &GroupSettings,
    channel_allow_from: &[String],
    peer: &str,
) -> bool {
    match group.group_policy.unwrap_or(settings.group_policy) {
        GroupPolicy::Open => true,
        GroupPolicy::Disabled => false,
        GroupPolicy::Allowlist => {
            let list =
                group
                    .allow_from
                    .as_deref()
                    .unwrap_or(if settings.group_allow_from.is_empty() {
                        channel_allow_from
                    } else {
                        &settings.group_allow_from
                    });
            list.iter().any(|id| id == peer || id == "*")
        }
    }
}

/// Whether a group message is addressed to the bot.
fn addresses_bot(message: &Message, me: &User) -> bool {
    if message
        .reply_to_message
        .as_ref()
        .and_then(|m| m.from.as_ref())
        .is_some_and(|u| u.id == me.id)
    {
        return true;
    }
    let (Some(text), Some(name)) = (&message.text, &me.username) else {
        return false;
    };
    let units: Vec<u16> = text.encode_utf16().collect();
    let handle = format!("@{name}");
    message.entities.iter().any(|entity| {
        let Some(slice) = units.get(entity.offset..entity.offset.saturating_add(entity.length))
        else {
            return false;
        };
        let part = String::from_utf16_lossy(slice);
        match entity.kind.as_str() {
            "mention" => part.eq_ignore_ascii_case(&handle),
            "text_mention" => entity.user.as_ref().is_some_and(|u| u.id == me.id),
            "bot_command" => part
                .rsplit_once('@')
                .is_some_and(|(_, target)| target.eq_ignore_ascii_case(name)),
            _ => false,
        }
    })
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn cap(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::telegram::api::{Chat, MessageEntity};

    fn me() -> User {
        User {
            id: 99,
            is_bot: true,
            username: Some("claw_bot".into()),
        }
    }

    fn group_message(text: &str, entities: Vec<MessageEntity>) -> Update {
        Update {
            update_id: 1,
            message: Some(Message {
                message_id: 5,
                from: Some(User {
                    id: 7,
                    is_bot: false,
                    username: None,
                }),
                chat: Chat {
                    id: -100,
                    kind: "supergroup".into(),
                },
                text: Some(text.into()),
                entities,
                reply_to_message: None,
            }),
        }
    }

    fn entity(kind: &str, offset: usize, length: usize) -> MessageEntity {
        MessageEntity {
            kind: kind.into(),
            offset,
            length,
            user: None,
        }
    }

    fn settings() -> TelegramSettings {
        let mut s = TelegramSettings::new(Secret::new("1:x"));
        s.groups.insert("-100".into(), GroupSettings::default());
        s.group_policy = GroupPolicy::Open;
        s
    }

    #[test]
    fn mention_offsets_count_utf16_units() {
        // The emoji takes two UTF-16 units, so the mention starts at unit 3.
        let update = group_message("😀 @Claw_Bot hi", vec![entity("mention", 3, 9)]);
        assert!(matches!(
            classify(&update, &settings(), &[], &me(), &Redactor::default()),
            Inbound::Job(_)
        ));
        let wrong = group_message("😀 @Claw_Bot hi", vec![entity("mention", 2, 9)]);
        assert_eq!(
            classify(&wrong, &settings(), &[], &me(), &Redactor::default()),
            Inbound::Ignore("group message without a mention of the bot")
        );
        let other = group_message("@other_bot hi", vec![entity("mention", 0, 10)]);
        assert!(matches!(
            classify(&other, &settings(), &[], &me(), &Redactor::default()),
            Inbound::Ignore(_)
        ));
        let command = group_message("/help@claw_bot", vec![entity("bot_command", 0, 14)]);
        assert!(matches!(
            classify(&command, &settings(), &[], &me(), &Redactor::default()),
            Inbound::Job(_)
        ));
        let bad_range = group_message("hi", vec![entity("mention", 1, usize::MAX)]);
        assert!(matches!(
            classify(&bad_range, &settings(), &[], &me(), &Redactor::default()),
            Inbound::Ignore(_)
        ));
    }

    #[test]
    fn group_policy_allowlist_falls_back_to_allow_from() {
        let mut s = settings();
        s.group_policy = GroupPolicy::Allowlist;
        let update = group_message("@claw_bot hi", vec![entity("mention", 0, 9)]);
        assert!(matches!(
            classify(&update, &s, &[], &me(), &Redactor::default()),
            Inbound::Ignore(_)
        ));
        assert!(matches!(
            classify(&update, &s, &["7".into()], &me(), &Redactor::default()),
            Inbound::Job(_)
        ));
        s.group_allow_from = vec!["8".into()];
        assert!(matches!(
            classify(&update, &s, &["7".into()], &me(), &Redactor::default()),
            Inbound::Ignore(_)
        ));
    }

    #[test]
    fn cap_respects_char_boundaries() {
        assert_eq!(cap("héllo", 2), ("h", true));
        assert_eq!(cap("abc", 3), ("abc", false));
    }
}

//! The message handler: what happens to an inbound message on a channel.
//!
//! Used by the generic webhook channel (`POST /api/messages`) and, later, by the channel
//! adapters. The decision follows the channel's `dmPolicy`:
//!
//! - `disabled`: `ignored`.
//! - `open`: `accepted`.
//! - approved sender (pairing store or `channels.<ch>.allowFrom`): `accepted`. As in
//!   OpenClaw, `"*"` in `allowFrom` approves every sender (the audit flags it).
//! - `allowlist`, not approved: `denied`.
//! - `pairing`, not approved: `pairing_required` with the sender's code (a new one, or the
//!   one it already has); no code once the channel has three pending. With
//!   `pairing.autoApprove` the sender is approved on the spot instead (the audit warns).
//!
//! A message in a group is judged by the group, not the sender: the group itself must be
//! approved. Accepted messages are appended to their session's transcript, which redacts
//! every secret before the line is written (`sessions::Transcripts`; the gateway gives it
//! its one redactor). Messages held for pairing are not stored.

use serde::{Deserialize, Serialize};

use crate::config::{Config, DmPolicy};
use crate::pairing::{is_valid_channel_name, PeerKind, RequestOutcome, Store, StoreError};
use crate::sessions::{
    self, Durability, SessionKey, TranscriptEntry, Transcripts, DEFAULT_ACCOUNT, RESERVED_CHANNELS,
};

/// Longest sender or group id accepted.
pub const MAX_ID_LEN: usize = 256;

/// The body of `POST /api/messages`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundMessage {
    pub channel: String,
    #[serde(default)]
    pub account_id: Option<String>,
    pub peer: String,
    pub text: String,
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Accepted,
    PairingRequired,
    Denied,
    Ignored,
}

/// The answer to an inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
    /// Whether `pairing_code` was issued by this message (a channel replies with a code
    /// once, not to every message of a sender still waiting for approval).
    #[serde(skip)]
    pub new_code: bool,
}

impl Outcome {
    fn bare(status: Status) -> Self {
        Self {
            status,
            pairing_code: None,
            session_key: None,
            new_code: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The request was wrong (400): malformed JSON or a bad field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot append to the session transcript {key}: {source}")]
    Transcript { key: String, source: std::io::Error },
}

/// Parses and validates a message body.
pub fn parse(body: &[u8]) -> Result<InboundMessage, MessageError> {
    let msg: InboundMessage = serde_json::from_slice(body)
        .map_err(|e| MessageError::Invalid(format!("malformed message JSON: {e}")))?;
    if !is_valid_channel_name(&msg.channel) || RESERVED_CHANNELS.contains(&msg.channel.as_str()) {
        return Err(MessageError::Invalid(
            "`channel` must be 1 to 64 letters, digits, `-` or `_` (not `direct` or `group`)"
                .into(),
        ));
    }
    if let Some(account) = &msg.account_id {
        if !is_valid_channel_name(account) {
            return Err(MessageError::Invalid(
                "`accountId` must be 1 to 64 letters, digits, `-` or `_`".into(),
            ));
        }
    }
    check_id("peer", &msg.peer)?;
    if let Some(group) = &msg.group {
        check_id("group", group)?;
    }
    Ok(msg)
}

fn check_id(field: &str, id: &str) -> Result<(), MessageError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(MessageError::Invalid(format!(
            "`{field}` must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// Applies the channel policy to `msg` and records it if accepted, on disk before this
/// returns or with the session's next synced line (`durability`).
pub fn handle(
    config: &Config,
    store: &Store,
    transcripts: &Transcripts,
    msg: &InboundMessage,
    now: u64,
    durability: Durability,
) -> Result<Outcome, MessageError> {
    let channel = config.channel(&msg.channel);
    if !channel.enabled || channel.dm_policy == DmPolicy::Disabled {
        return Ok(Outcome::bare(Status::Ignored));
    }
    let (kind, id) = match &msg.group {
        Some(group) => (PeerKind::Group, group.as_str()),
        None => (PeerKind::Direct, msg.peer.as_str()),
    };
    let approved = channel.dm_policy == DmPolicy::Open
        || (kind == PeerKind::Direct && channel.allow_from.iter().any(|p| p == "*" || p == id))
        || store.allow_list(&msg.channel)?.contains(kind, id);
    if approved {
        return accept(config, transcripts, msg, now, durability);
    }
    match channel.dm_policy {
        DmPolicy::Allowlist => Ok(Outcome::bare(Status::Denied)),
        _ if config.auto_approve => {
            store.allow(&msg.channel, kind, id)?;
            tracing::warn!(
                "pairing.autoApprove approved {kind} {id} on channel {}",
                msg.channel
            );
            accept(config, transcripts, msg, now, durability)
        }
        _ => match store.request(&msg.channel, kind, id, msg.account_id.as_deref(), now)? {
            RequestOutcome::Created(code) => {
                tracing::info!(
                    "pairing request from {kind} {id} on channel {}: code {code}",
                    msg.channel
                );
                Ok(Outcome {
                    new_code: true,
                    ..pairing_required(Some(code))
                })
            }
            RequestOutcome::Pending(code) => Ok(pairing_required(Some(code))),
            RequestOutcome::Full => Ok(pairing_required(None)),
            RequestOutcome::Approved => accept(config, transcripts, msg, now, durability),
        },
    }
}

fn pairing_required(code: Option<String>) -> Outcome {
    Outcome {
        pairing_code: code,
        ..Outcome::bare(Status::PairingRequired)
    }
}

fn accept(
    config: &Config,
    transcripts: &Transcripts,
    msg: &InboundMessage,
    now: u64,
    durability: Durability,
) -> Result<Outcome, MessageError> {
    let account = msg.account_id.as_deref().unwrap_or(DEFAULT_ACCOUNT);
    let key = match &msg.group {
        Some(group) => sessions::group_key(&msg.channel, group),
        None => sessions::direct_key(config.dm_scope, &msg.channel, account, &msg.peer),
    };
    let entry = TranscriptEntry {
        session_key: key.as_str(),
        ts: u128::from(now) * 1000,
        channel: &msg.channel,
        account_id: account,
        peer: &msg.peer,
        group: msg.group.as_deref(),
        text: &msg.text,
    };
    transcripts
        .append_with(&key, &entry, durability)
        .map_err(|source| MessageError::Transcript {
            key: key.to_string(),
            source,
        })?;
    Ok(Outcome {
        session_key: Some(key),
        ..Outcome::bare(Status::Accepted)
    })
}

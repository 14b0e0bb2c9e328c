//! What a sender sees: pairing, conversations, long replies, odd input, groups, commands.

use clawfort::pairing::PeerKind;
use clawfort::telegram::{GroupPolicy, GroupSettings, MESSAGE_LIMIT, NOT_TEXT_REPLY};
use std::time::Duration;

use serde_json::json;

use crate::{Harness, FRIEND, OWNER};
use clawfort_fakes::telegram::{group_text, private_text, BOT_ID, BOT_NAME};

const STRANGER: i64 = 111;

#[tokio::test]
async fn unknown_sender_gets_one_pairing_reply_and_no_model_call() {
    let h = Harness::new(r#"{ dmPolicy: "pairing", allowFrom: ["222"] }"#).await;
    h.fake.push(private_text(STRANGER, "hello"));
    let task = h.start();
    let replies = h.replies(STRANGER, 1).await;

    let pending = h
        .policy
        .store
        .pending("telegram", clawfort::pairing::unix_now())
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, PeerKind::Direct);
    assert_eq!(pending[0].id, STRANGER.to_string());
    let code = &pending[0].code;
    assert!(
        replies[0].contains(&format!("Pairing code: {code}")),
        "{}",
        replies[0]
    );
    assert!(
        replies[0].contains(&format!("clawfort pairing approve telegram {code}")),
        "{}",
        replies[0]
    );
    assert!(
        replies[0].contains("Your Telegram user id: 111"),
        "{}",
        replies[0]
    );

    // A repeat does not spam: the friend's message after it is the barrier (jobs run in order).
    h.fake.push(private_text(STRANGER, "hello??"));
    h.fake.push(private_text(FRIEND, "hi"));
    h.replies(FRIEND, 1).await;
    assert_eq!(h.fake.sent_to(STRANGER).len(), 1);
    assert_eq!(h.agent.texts(), ["hi"], "no model call for the stranger");
    task.abort();
}

#[tokio::test]
async fn approved_sender_sees_typing_then_the_reply() {
    let h = Harness::new(r#"{ dmPolicy: "pairing", allowFrom: ["222"] }"#).await;
    *h.agent.delay.lock().unwrap() = std::time::Duration::from_millis(500);
    h.fake.push(private_text(FRIEND, "what time is it?"));
    let started = std::time::Instant::now();
    let task = h.start();
    assert_eq!(h.replies(FRIEND, 1).await, ["echo: what time is it?"]);

    let turn = h.agent.turns.lock().unwrap()[0].clone();
    assert_eq!(turn.channel, "telegram");
    assert_eq!(turn.peer, "222");
    assert_eq!(turn.group, None);
    assert!(!turn.from_owner);
    assert!(
        turn.session_key.as_str().contains("222"),
        "{}",
        turn.session_key
    );

    // "typing" once the turn has run `typing_delay` (200 ms), and refreshed while the
    // 500 ms turn ran (interval 50 ms).
    let typing = h.fake.calls("sendChatAction");
    let reply = &h.fake.calls("sendMessage")[0];
    assert!(typing.len() >= 3, "typing sent {} times", typing.len());
    assert!(
        typing[0].at >= started + h.settings.typing_delay,
        "typing sent {:?} after the start, before the 200 ms delay",
        typing[0].at - started
    );
    assert!(typing
        .iter()
        .all(|c| c.body == json!({"chat_id": FRIEND, "action": "typing"})));
    assert!(typing[0].at < reply.at);
    // The accepted message is in the session transcript.
    let transcript = h.policy.transcripts.read(&turn.session_key).unwrap();
    assert_eq!(transcript[0]["text"], "what time is it?");
    task.abort();
}

#[tokio::test]
async fn a_fast_answer_is_sent_without_typing() {
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    h.fake.push(private_text(FRIEND, "ping"));
    let task = h.start();
    assert_eq!(h.replies(FRIEND, 1).await, ["echo: ping"]);
    // Well past the delay: the finished turn never sends it late either.
    tokio::time::sleep(h.settings.typing_delay * 2).await;
    assert_eq!(h.fake.calls("sendChatAction").len(), 0);
    task.abort();
}

#[tokio::test]
async fn a_long_reply_is_split_at_4096_utf16_units_without_cutting_emoji() {
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    // 2500 emoji (5000 UTF-16 units) without spaces, then a paragraph after a newline.
    let reply = format!("{}\n{}", "😀".repeat(2500), "word ".repeat(1000));
    *h.agent.reply.lock().unwrap() = Some(reply.clone());
    h.fake.push(private_text(FRIEND, "long please"));
    let task = h.start();
    let chunks = h.replies(FRIEND, 4).await;
    assert_eq!(chunks.len(), 4);
    for chunk in &chunks {
        assert!(
            chunk.encode_utf16().count() <= MESSAGE_LIMIT,
            "chunk too long"
        );
    }
    assert!(
        chunks[0] == "😀".repeat(2048),
        "a hard split fills the chunk"
    );
    assert!(
        chunks[1] == "😀".repeat(452),
        "the newline is preferred as a break"
    );
    assert!(chunks[2].starts_with("word word") && chunks[2].ends_with("word"));
    let rebuilt: String = chunks
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let original: String = reply.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(rebuilt == original, "nothing lost");
    task.abort();
}

#[tokio::test]
async fn non_text_updates_get_a_short_answer_in_private_and_silence_elsewhere() {
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    h.fake.push(json!({"message": {
        "message_id": 3, "date": 0, "photo": [{"file_id": "x", "width": 1, "height": 1}],
        "from": {"id": FRIEND, "is_bot": false, "first_name": "F"},
        "chat": {"id": FRIEND, "type": "private"},
    }}));
    h.fake
        .push(json!({"edited_message": {"message_id": 3, "text": "edit"}}));
    h.fake
        .push(json!({"channel_post": {"message_id": 4, "text": "post",
        "chat": {"id": -5, "type": "channel"}}}));
    h.fake
        .push(json!({"callback_query": {"id": "q", "data": "x"}}));
    h.fake
        .push(json!({"message": {"message_id": "not a number", "chat": 5}}));
    h.fake.push(json!({"message": {
        "message_id": 5, "date": 0, "sticker": {"file_id": "s"},
        "from": {"id": FRIEND, "is_bot": false, "first_name": "F"},
        "chat": {"id": -100, "type": "supergroup"},
    }}));
    h.fake.push(private_text(FRIEND, "still there?"));
    let task = h.start();
    assert_eq!(
        h.replies(FRIEND, 2).await,
        [NOT_TEXT_REPLY, "echo: still there?"]
    );
    assert_eq!(h.fake.calls("sendMessage").len(), 2);
    assert_eq!(h.agent.texts(), ["still there?"]);
    task.abort();
}

#[tokio::test]
async fn a_one_megabyte_text_is_capped_and_the_sender_told() {
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    h.fake.push(private_text(FRIEND, &"é".repeat(512 * 1024)));
    let task = h.start();
    let replies = h.replies(FRIEND, 2).await;
    assert!(replies[0].contains("longer than 16 KiB"), "{}", replies[0]);
    let texts = h.agent.texts();
    assert_eq!(texts[0].len(), 16 * 1024, "capped at a character boundary");
    assert!(texts[0].chars().all(|c| c == 'é'));
    task.abort();
}

#[tokio::test]
async fn groups_need_the_allow_list_and_a_mention() {
    let mut h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    // `groups: { "-100": {} }, groupPolicy: "open"` (the config reader maps them later).
    h.settings
        .groups
        .insert("-100".into(), GroupSettings::default());
    h.settings.group_policy = GroupPolicy::Open;
    // The group itself is approved in the pairing store (`messages::handle` judges groups).
    h.policy
        .store
        .allow("telegram", PeerKind::Group, "-100")
        .unwrap();
    let mention = json!([{"type": "mention", "offset": 0, "length": 9}]);
    h.fake
        .push(group_text(-100, FRIEND, "no mention here", json!([])));
    h.fake.push(group_text(
        -200,
        FRIEND,
        "@claw_bot not listed",
        mention.clone(),
    ));
    h.fake
        .push(group_text(-100, FRIEND, "@other_bo hi", mention.clone()));
    let mut reply_to_bot = group_text(-100, FRIEND, "replying to you", json!([]));
    reply_to_bot["message"]["reply_to_message"] = json!({
        "message_id": 9, "date": 0, "text": "earlier",
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Claw", "username": BOT_NAME},
        "chat": {"id": -100, "type": "supergroup"},
    });
    h.fake.push(reply_to_bot);
    h.fake
        .push(group_text(-100, FRIEND, "@claw_bot ping", mention));
    let task = h.start();
    let replies = h.replies(-100, 2).await;
    assert_eq!(replies, ["echo: replying to you", "echo: @claw_bot ping"]);
    assert_eq!(h.agent.texts(), ["replying to you", "@claw_bot ping"]);
    let sent = h.fake.calls("sendMessage");
    assert_eq!(
        sent.len(),
        2,
        "nothing for -200 or the unaddressed messages"
    );
    assert_eq!(sent[1].body["reply_parameters"]["message_id"], 77);
    let turn = h.agent.turns.lock().unwrap()[1].clone();
    assert_eq!(turn.group.as_deref(), Some("-100"));
    task.abort();
}

#[tokio::test]
async fn the_owner_commands_go_to_the_agent_and_stop_cancels_the_turn() {
    let h = Harness::new(r#"{ allowFrom: ["222", "333"] }"#).await;
    h.fake.push(private_text(OWNER, "block"));
    let task = h.start();
    h.fake
        .wait_until("the blocking turn", |_| !h.agent.texts().is_empty())
        .await;
    h.fake.push(private_text(OWNER, "/stop"));
    h.fake.push(private_text(FRIEND, "/status"));
    assert_eq!(h.replies(OWNER, 1).await, ["Stop done"]);
    // The friend's /status is an ordinary message; the owner's next turn runs.
    assert_eq!(h.replies(FRIEND, 1).await, ["echo: /status"]);
    h.fake.push(private_text(OWNER, "/new"));
    h.fake.push(private_text(OWNER, "hello"));
    assert_eq!(
        h.replies(OWNER, 3).await,
        ["Stop done", "New done", "echo: hello"]
    );
    let commands = h.agent.commands.lock().unwrap().clone();
    let kinds: Vec<_> = commands.iter().map(|(c, _)| *c).collect();
    use clawfort::channel::OwnerCommand::*;
    assert_eq!(kinds, [Stop, New]);
    assert!(commands[0].1.session_key.as_str().contains("333"));
    let turns = h.agent.turns.lock().unwrap().clone();
    assert!(turns.iter().any(|t| t.text == "hello" && t.from_owner));
    task.abort();
}

#[tokio::test]
async fn different_chats_run_in_parallel_and_one_chat_in_order() {
    const OTHER: i64 = 444;
    let h = Harness::new(r#"{ allowFrom: ["222", "444"] }"#).await;
    *h.agent.delay.lock().unwrap() = Duration::from_millis(300);
    for (chat, text) in [(FRIEND, "a1"), (OTHER, "b1"), (FRIEND, "a2")] {
        h.fake.push(private_text(chat, text));
    }
    let task = h.start();
    let friend = h.replies(FRIEND, 2).await;
    let other = h.replies(OTHER, 1).await;
    task.abort();
    assert_eq!(
        friend,
        ["echo: a1", "echo: a2"],
        "one chat answered in order"
    );
    assert_eq!(other, ["echo: b1"]);
    let (now, most) = *h.agent.in_flight.lock().unwrap();
    assert_eq!(now, 0);
    assert_eq!(
        most, 2,
        "the two chats' turns ran at once, a chat's second one waited"
    );
    let texts = h.agent.texts();
    let pos = |t: &str| texts.iter().position(|x| x == t).unwrap();
    assert!(pos("a1") < pos("a2"), "{texts:?}");
}

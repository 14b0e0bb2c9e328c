//! Polling under trouble: crash and restart, a wrong token, a competing poller, rate
//! limits, and the token kept out of every log line and error.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clawfort::channel::CancellationToken;
use clawfort::secret::Secret;
use clawfort::telegram::{self, INTERRUPTED_REPLY};
use serde_json::json;

use crate::{run_to_end, Harness, FRIEND, TOKEN};
use clawfort_fakes::telegram::private_text;

#[tokio::test]
async fn an_abort_and_restart_neither_loses_nor_repeats_an_update() {
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    for text in ["m1", "block", "m3", "m4"] {
        h.fake.push(private_text(FRIEND, text));
    }
    let first = h.start();
    h.fake
        .wait_until("the turn that blocks", |_| {
            h.agent.texts().contains(&"block".to_string())
        })
        .await;
    // Telegram forgets m1..m4 once the next getUpdates confirms them; that poll waits for
    // the journal's sync, which may finish after the turn started. From then on only the
    // journal knows m3 and m4.
    h.fake
        .wait_until("the getUpdates confirming the batch", |f| {
            f.calls("getUpdates")
                .iter()
                .any(|c| c.body["offset"] == json!(104))
        })
        .await;
    // Crash: the poller is dropped mid-turn, with m3 and m4 taken but not handled.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(h.fake.sent_to(FRIEND), ["echo: m1"]);
    h.fake.push(private_text(FRIEND, "m5"));

    let second = h.start();
    let replies = h.replies(FRIEND, 5).await;
    assert_eq!(
        replies,
        [
            "echo: m1",
            INTERRUPTED_REPLY,
            "echo: m3",
            "echo: m4",
            "echo: m5"
        ]
    );
    // Another long-poll round: nothing comes back a second time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.fake.sent_to(FRIEND).len(), 5);
    assert_eq!(
        h.agent.texts(),
        ["m1", "block", "m3", "m4", "m5"],
        "every model call exactly once"
    );
    second.abort();

    // A third start folds the journal's log into its snapshot: no job left, the offset
    // kept, in the file OpenClaw reads.
    let polls = h.fake.calls("getUpdates").len();
    let third = h.start();
    h.fake
        .wait_until("the third run's first poll", |f| {
            f.calls("getUpdates").len() > polls
        })
        .await;
    third.abort();
    let file = h.dir.path().join("telegram/update-offset-default.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(state["lastUpdateId"], 104);
    assert_eq!(state["botId"], "4242");
    assert_eq!(state["pending"], json!([]));
}

#[tokio::test]
async fn a_wrong_token_stops_at_once_with_a_clear_error() {
    let mut h = Harness::new("{}").await;
    h.settings.bot_token = Secret::new("4242:not-the-right-one");
    let err = run_to_end(&h).await.unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("botToken"), "{err}");
    assert!(err.contains("polling stopped"), "{err}");
    assert_eq!(h.fake.calls("getMe").len(), 1, "no retry storm");
    assert!(h.fake.calls("getUpdates").is_empty());

    // Revoked while polling: also one request, then stop.
    let h = Harness::new("{}").await;
    h.fake.fail("getUpdates", 401, 100, None);
    let err = run_to_end(&h).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    assert_eq!(h.fake.calls("getUpdates").len(), 1, "no retry storm");
}

#[tokio::test]
async fn a_conflict_stops_with_a_message_naming_the_webhook() {
    let h = Harness::new("{}").await;
    h.fake.fail("getUpdates", 409, 100, None);
    let err = run_to_end(&h).await.unwrap_err().to_string();
    assert!(err.contains("409 Conflict"), "{err}");
    assert!(err.contains("another program is polling") && err.contains("deleteWebhook"));
    assert_eq!(h.fake.calls("getUpdates").len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_for_polling_and_sending() {
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    h.fake
        .fail("getUpdates", 429, 1, Some(json!({"retry_after": 1})));
    h.fake
        .fail("sendMessage", 429, 1, Some(json!({"retry_after": 1})));
    h.fake.push(private_text(FRIEND, "hi"));
    let task = h.start();
    assert_eq!(h.replies(FRIEND, 1).await, ["echo: hi"]);
    let polls = h.fake.calls("getUpdates");
    let gap = polls[1].at - polls[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "polled again after {gap:?}"
    );
    let sends = h.fake.calls("sendMessage");
    assert_eq!(sends.len(), 2, "one refused, one delivered");
    let gap = sends[1].at - sends[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "sent again after {gap:?}"
    );
    task.abort();
}

#[tokio::test]
async fn an_update_without_an_id_is_retried_with_backoff_not_in_a_tight_loop() {
    let h = Harness::new("{}").await;
    h.fake.push_raw(json!({"message": {"text": "no id"}}));
    let task = h.start();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    task.abort();
    // Immediately, after 1 s, after 2 s more: at most three polls in 2.5 s.
    let polls = h.fake.calls("getUpdates").len();
    assert!((1..=3).contains(&polls), "{polls} polls in 2.5 s");
}

/// A `MakeWriter` that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn the_token_appears_in_no_log_line_and_no_error() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // The test runtime is single-threaded: every task logs through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut errors = Vec::new();

    // Rejected token.
    let mut h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    h.settings.bot_token = Secret::new(format!("{TOKEN}x"));
    let err = run_to_end(&h).await.unwrap_err();
    errors.push(format!("{err} {err:?}"));

    // A conflict, a send refused with the token in Telegram's description, a 429.
    let h = Harness::new(r#"{ allowFrom: ["222"] }"#).await;
    h.fake.fail("sendMessage", 400, 1, None);
    h.fake
        .fail("getUpdates", 429, 1, Some(json!({"retry_after": 1})));
    h.fake.push(private_text(FRIEND, "one"));
    h.fake.push(private_text(FRIEND, "two"));
    let task = h.start();
    h.replies(FRIEND, 1).await;
    task.abort();
    h.fake.fail("getUpdates", 409, 100, None);
    let err = run_to_end(&h).await.unwrap_err();
    errors.push(format!("{err} {err:?}"));
    errors.push(format!("{:?}", h.settings));

    // Nobody listening: network errors, retried, with the URL stripped.
    let mut h = Harness::new("{}").await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    h.settings.api_root = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
    });
    let dir = h.dir.path().to_path_buf();
    telegram::run(
        h.settings.clone(),
        h.policy.clone(),
        &dir,
        h.agent.clone(),
        shutdown,
    )
    .await
    .unwrap();

    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "401",
        "409",
        "[redacted]",
        "cannot reach",
        "retrying in 1 s",
        "rate limited",
    ] {
        assert!(log.contains(expected), "log lacks {expected:?}:\n{log}");
    }
    let secret = TOKEN.split_once(':').unwrap().1;
    assert!(
        !log.contains(secret),
        "the token leaked into the log:\n{log}"
    );
    for error in errors {
        assert!(!error.contains(secret), "the token leaked: {error}");
    }
}

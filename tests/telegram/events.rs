//! Security events reach the owner through the channel: the events pipeline
//! (`clawfort::events::Pipeline`) beside the real channel, the owner's messages read from the
//! fake Bot API.

use std::time::Duration;

use clawfort::channel::{CancellationToken, OwnerNotices};
use clawfort::events::{feed, gateway_feed, Event, Events, Pipeline, Record, Source};
use clawfort::paths::Paths;
use clawfort::redact::Redactor;
use clawfort_fakes::telegram::private_text;
use tokio::task::JoinHandle;

use super::{Harness, OWNER};

const WINDOW: Duration = Duration::from_millis(400);

/// The pipeline for the harness's installation, following `host.jsonl` in its directory,
/// posting to `notices`.
fn pipeline(
    h: &Harness,
    events: &Events,
    notices: &OwnerNotices,
) -> (CancellationToken, JoinHandle<()>) {
    let mut pipeline = Pipeline::new(Paths::in_dir(h.dir.path()), Redactor::default());
    pipeline.host_feed = h.dir.path().join("host.jsonl");
    pipeline.window = WINDOW;
    pipeline.poll = Duration::from_millis(50);
    let stop = CancellationToken::new();
    let (events, notices, until) = (events.clone(), notices.clone(), stop.clone());
    let task = tokio::spawn(async move { pipeline.run(&events, Some(notices), until).await });
    (stop, task)
}

fn ban(n: u32) -> Record {
    Record::now(
        Source::Host,
        Event::Fail2banBan {
            jail: "sshd".into(),
            ip: std::net::Ipv4Addr::from(0xC000_0200 + n).into(),
        },
    )
}

/// The owner's messages once no other arrives for three windows.
async fn settled(h: &Harness) -> Vec<String> {
    tokio::time::sleep(WINDOW * 3).await;
    h.fake.sent_to(OWNER)
}

#[tokio::test]
async fn a_host_event_is_one_owner_message_and_a_burst_is_one_more() {
    let mut h = Harness::new(r#"{ allowFrom: ["333"] }"#).await;
    let notices = OwnerNotices::default();
    h.settings.owner_notices = notices.clone();
    let channel = h.start();
    let events = Events::default();
    let (stop, task) = pipeline(&h, &events, &notices);
    let host = h.dir.path().join("host.jsonl");

    feed::append(&host, &[ban(7)], 0o644).unwrap();
    let first = h.replies(OWNER, 1).await;
    assert_eq!(
        settled(&h).await.len(),
        1,
        "one event, one message: {first:?}"
    );
    assert!(
        first[0].starts_with("Security event:\n- ")
            && first[0].ends_with("fail2ban banned 192.0.2.7 (jail sshd)"),
        "{}",
        first[0]
    );

    let burst: Vec<Record> = (0..500).map(ban).collect();
    feed::append(&host, &burst, 0o644).unwrap();
    h.replies(OWNER, 2).await;
    let messages = settled(&h).await;
    assert_eq!(
        messages.len(),
        2,
        "a burst of 500 is one message: {messages:#?}"
    );
    assert!(
        messages[1].starts_with("500 security events:"),
        "{}",
        messages[1]
    );
    assert!(messages[1].contains("… and 490 more."), "{}", messages[1]);

    // A restart reads on from the position the delivered messages committed.
    stop.cancel();
    task.await.unwrap();
    let (stop, task) = pipeline(&h, &Events::default(), &notices);
    assert_eq!(
        settled(&h).await.len(),
        2,
        "nothing sent again after a restart"
    );
    feed::append(&host, &[ban(9)], 0o644).unwrap();
    let after = h.replies(OWNER, 3).await;
    assert!(after[2].ends_with("192.0.2.9 (jail sshd)"), "{}", after[2]);
    stop.cancel();
    task.await.unwrap();
    channel.abort();
}

#[tokio::test]
async fn a_pairing_request_is_in_the_feed_and_the_owner_is_told_without_its_code() {
    let mut h = Harness::new(r#"{ dmPolicy: "pairing", allowFrom: ["333"] }"#).await;
    let notices = OwnerNotices::default();
    let events = Events::default();
    h.settings.owner_notices = notices.clone();
    h.settings.events = events.clone();
    let channel = h.start();
    let (stop, task) = pipeline(&h, &events, &notices);

    h.fake.push(private_text(111, "hello"));
    let told = h.replies(OWNER, 1).await;
    assert!(
        told[0].contains("pairing request from 111 on telegram"),
        "{}",
        told[0]
    );
    let code = h
        .policy
        .store
        .pending("telegram", clawfort::pairing::unix_now())
        .unwrap()[0]
        .code
        .clone();
    assert!(!told[0].contains(&code), "the code stays out of the chat");
    let written = feed::read(&gateway_feed(&Paths::in_dir(h.dir.path()))).unwrap();
    assert_eq!(
        written.records.iter().map(|r| &r.event).collect::<Vec<_>>(),
        [&Event::PairingRequest {
            channel: "telegram".into(),
            sender: "111".into()
        }]
    );
    stop.cancel();
    task.await.unwrap();
    channel.abort();
}

#[tokio::test]
async fn what_has_a_message_of_its_own_is_in_the_feed_only() {
    let mut h = Harness::new(r#"{ allowFrom: ["333"] }"#).await;
    let notices = OwnerNotices::default();
    h.settings.owner_notices = notices.clone();
    let channel = h.start();
    let events = Events::default();
    let (stop, task) = pipeline(&h, &events, &notices);

    let session = "agent:main:main".to_owned();
    events.record(Event::ExecWaiting {
        command: "rm".into(),
        session: session.clone(),
    });
    events.record(Event::Budget {
        period: "daily".into(),
        spent_usd: 4.0,
        limit_usd: 5.0,
    });
    events.record(Event::ExecDenied {
        command: "rm".into(),
        session,
    });
    h.replies(OWNER, 1).await;
    let messages = settled(&h).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].starts_with("Security event:\n- ")
            && messages[0].ends_with("exec denied: `rm` (session agent:main:main)"),
        "the approval prompt and the budget warning are their own messages: {}",
        messages[0]
    );
    stop.cancel();
    task.await.unwrap();
    let kinds: Vec<&str> = feed::read(&gateway_feed(&Paths::in_dir(h.dir.path())))
        .unwrap()
        .records
        .iter()
        .map(|r| r.event.kind())
        .collect();
    assert_eq!(kinds, ["exec-waiting", "budget", "exec-denied"]);
    channel.abort();
}

//! Any `POST /api/messages` body must give a 400-class error or an outcome, never a panic
//! nor any other error, and the store must stay readable afterwards. Runs the real handler on a per-process
//! scratch state directory with the pairing policy (the one that writes the most state).
#![no_main]

use std::sync::OnceLock;

use clawfort::config::{Config, EnvSource};
use clawfort::messages;
use clawfort::pairing::{unix_now, Store};
use clawfort::sessions::Transcripts;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    config: Config,
    store: Store,
    transcripts: Transcripts,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("clawfort-fuzz-{}", std::process::id()));
        let config = Config::parse(
            r#"{ channels: { open: { dmPolicy: "open" }, team: { dmPolicy: "allowlist" } } }"#,
            &EnvSource::fixed([]),
        )
        .expect("the fixture config is valid");
        Fixture {
            config,
            store: Store::new(dir.join("credentials")),
            transcripts: Transcripts::new(dir.join("sessions")),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(msg) = messages::parse(data) else {
        return;
    };
    // A message `parse` accepted is handled: on a working state directory neither the
    // pairing store nor the transcript may refuse it.
    if let Err(e) = messages::handle(
        &f.config,
        &f.store,
        &f.transcripts,
        &msg,
        unix_now(),
        clawfort::sessions::Durability::Synced,
    ) {
        panic!("a valid message was not handled: {e}");
    }
    f.store
        .allow_list(&msg.channel)
        .expect("the allow-list stays readable");
});

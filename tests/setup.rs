//! `clawfort setup` and `clawfort stop-all`: the real binary against the fake Telegram Bot
//! API and the fake model servers of `clawfort_fakes` on loopback,
//! in temporary state directories (`harness` has what the tests share).

#[path = "setup/files.rs"]
mod files;
#[path = "setup/flows.rs"]
mod flows;
#[path = "setup/harness.rs"]
mod harness;
#[path = "setup/interactive.rs"]
mod interactive;
#[path = "setup/root.rs"]
mod root;
#[path = "setup/stop_all.rs"]
mod stop_all;
#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod support;

//! Gateway integration tests: every behaviour through the real `clawfort` binary serving on
//! an ephemeral loopback port (see `gateway/support.rs`).

#[path = "gateway/api.rs"]
mod api;
#[path = "gateway/cli.rs"]
mod cli;
#[path = "gateway/guards.rs"]
mod guards;
#[path = "gateway/hostile.rs"]
mod hostile;
#[path = "gateway/store.rs"]
mod store;
#[path = "gateway/support.rs"]
mod support;

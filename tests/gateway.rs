//! Gateway integration tests: every behaviour through the real `clawfort` binary serving on
//! an ephemeral loopback port (see `gateway/support.rs`).

#[path = "gateway/api.rs"]
mod api;
#[path = "gateway/audit_files.rs"]
mod audit_files;
#[path = "gateway/cli.rs"]
mod cli;
#[path = "gateway/compat.rs"]
mod compat;
#[path = "gateway/credentials.rs"]
mod credentials;
#[path = "gateway/guards.rs"]
mod guards;
#[path = "gateway/hostile.rs"]
mod hostile;
#[path = "gateway/installation.rs"]
mod installation;
#[path = "gateway/sessions.rs"]
mod sessions;
#[path = "gateway/store.rs"]
mod store;
#[path = "gateway/support.rs"]
mod support;

//! Agent-loop tests: the real loop, providers and ledger against the fake Anthropic server
//! of `clawfort_fakes::model` on 127.0.0.1.

#[path = "agent/approvals.rs"]
mod approvals;
#[path = "provider/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "agent/control.rs"]
mod control;
#[path = "agent/files.rs"]
mod files;
#[path = "agent/gateway.rs"]
mod gateway;
#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "agent/tools_log.rs"]
mod tools_log;
#[path = "agent/turns.rs"]
mod turns;
#[path = "shared/unprivileged.rs"]
mod unprivileged;
#[path = "agent/web_fetch.rs"]
mod web_fetch;

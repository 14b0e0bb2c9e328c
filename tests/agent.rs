//! Agent-loop tests: the real loop, providers and ledger against the fake Anthropic server
//! of `provider/fake.rs` on 127.0.0.1.

#[path = "agent/control.rs"]
mod control;
#[path = "provider/fake.rs"]
#[allow(dead_code)]
mod fake;
#[path = "agent/gateway.rs"]
mod gateway;
#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "telegram/fake.rs"]
#[allow(dead_code)]
mod telegram_fake;
#[path = "agent/turns.rs"]
mod turns;

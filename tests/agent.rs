//! Agent-loop tests: the real loop, providers and ledger against the fake Anthropic server
//! of `provider/fake.rs` on 127.0.0.1.

#[path = "provider/fake.rs"]
#[allow(dead_code)]
mod fake;
#[path = "agent/turns.rs"]
mod turns;

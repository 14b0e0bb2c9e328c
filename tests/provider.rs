//! Provider-layer integration tests: the real adapters, retries, fallback and ledger against
//! fake Anthropic and OpenAI servers on 127.0.0.1 that speak the public wire formats
//! (see `provider/fake.rs`).

#[path = "provider/anthropic.rs"]
mod anthropic;
#[path = "provider/budget.rs"]
mod budget;
#[path = "provider/chain.rs"]
mod chain;
#[path = "provider/fake.rs"]
mod fake;
#[path = "provider/openai.rs"]
mod openai;

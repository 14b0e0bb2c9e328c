//! Provider-layer integration tests: the real adapters, retries, fallback and ledger against
//! fake Anthropic and OpenAI servers on 127.0.0.1 that speak the public wire formats
//! (the `clawfort-fakes` crate, `fakes/`).

#[path = "provider/anthropic.rs"]
mod anthropic;
#[path = "provider/budget.rs"]
mod budget;
#[path = "provider/chain.rs"]
mod chain;
#[path = "provider/client.rs"]
mod client;
#[path = "provider/openai.rs"]
mod openai;

//! The egress proxy (`clawfort egress`): the real binary on a Unix socket in a temporary
//! directory, attacked with raw requests (`proxy.rs`), reading root's allow file
//! (`allow_file.rs`), and the gateway's HTTP client and the whole gateway tunnelling through
//! it to fake providers, a fake Bot API and a TLS server on 127.0.0.1 (`client.rs`), and
//! `web_fetch` through it (`web_fetch.rs`); and root writing that file (`sudo clawfort
//! egress sync`, `sudo clawfort setup`) and auditing it (`sync.rs`).

#[path = "egress/allow_file.rs"]
mod allow_file;
#[path = "egress/client.rs"]
mod client;
#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod gateway_support;
#[path = "egress/proxy.rs"]
mod proxy;
#[path = "egress/support.rs"]
mod support;
#[path = "egress/sync.rs"]
mod sync;
#[path = "egress/web_fetch.rs"]
mod web_fetch;

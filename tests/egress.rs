//! The egress proxy (`clawfort egress`): the real binary on a Unix socket in a temporary
//! directory, attacked with raw requests (`proxy.rs`), and the gateway's HTTP client and the
//! whole gateway tunnelling through it to fake providers, a fake Bot API and a TLS server
//! on 127.0.0.1 (`client.rs`).

use clawfort_fakes::model as fake;
use clawfort_fakes::telegram as telegram_fake;

#[path = "egress/client.rs"]
mod client;
#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod gateway_support;
#[path = "egress/proxy.rs"]
mod proxy;
#[path = "egress/support.rs"]
mod support;

//! Fake model and Telegram servers that speak the public wire formats, for clawfort's
//! integration tests, `cargo xtask bench` and the boot-and-probe suite.
//!
//! - [`model`]: one scripted HTTP server for both model APIs clawfort talks to (Anthropic
//!   Messages, `POST {baseUrl}/v1/messages`, and OpenAI chat completions,
//!   `POST {baseUrl}/chat/completions`); the test's script decides every answer, and
//!   [`model::canned`] is a ready script answering each API in its own format.
//! - [`telegram`]: the Bot API (`POST /bot<token>/<method>`): `getMe`, `getUpdates` with
//!   offsets and long polling, `sendMessage`, `sendChatAction`, queued failures.
//!
//! - [`files`]: a static file server, for the apt repositories the suite serves the
//!   appliance.
//!
//! Both record every request with the time it arrived, and both answer a small control API
//! under `/_fake/` (a prefix neither real API uses) so a process outside the test can push
//! Telegram updates and read what the servers received; see [`control`]. The
//! `clawfort-fakes` binary serves them on given addresses.

pub mod control;
pub mod files;
pub mod model;
pub mod record;
pub mod telegram;

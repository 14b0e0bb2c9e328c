//! clawfort: a fail-closed, OpenClaw-compatible AI-agent gateway.
//!
//! The binary (`src/main.rs`) is a thin shell around this library so that the integration
//! tests and the fuzz targets exercise exactly the code the gateway runs. See ARCHITECTURE.md
//! for the module map.

pub mod agent;
pub mod approvals;
pub mod audit;
pub mod auditlog;
pub mod backup;
pub mod channel;
pub mod cli;
pub mod columns;
pub mod config;
pub mod confine;
pub mod egress;
pub mod events;
pub mod gateway_client;
pub mod http;
pub mod http_client;
pub mod logging;
pub mod messages;
pub mod pairing;
pub mod paths;
pub mod provider;
pub mod redact;
pub mod sandbox;
pub mod secret;
pub mod sessions;
pub mod setup;
pub mod status;
pub mod target;
pub mod telegram;
pub mod token;
pub mod tools;
pub mod usage;

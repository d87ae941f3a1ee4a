//! ccu, the Contact Center Unico: an omnichannel contact-center backend for
//! a public administration.
//!
//! This crate is the server: configuration ([`config`]), the store
//! ([`store`], SQLite or PostgreSQL), the event bus ([`bus`], in-process or
//! Redis), authentication ([`auth`]), the HTTP API ([`api`]) and start-up
//! ([`app`]). The routing engine lives in `ccu-routing`, the channel
//! adapters in `ccu-channels`. See `docs/architecture.md` for the flow.

pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod email;
pub mod fanout;
pub mod hub;
pub mod ratelimit;
pub mod router;
pub mod sip;
pub mod store;
pub mod telemetry;
pub mod voice;
pub mod web;
pub mod writer;
pub mod ws;

/// Wall-clock time as Unix milliseconds, the store's time unit.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

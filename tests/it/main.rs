//! Integration tests: the real server on real sockets (port 0), a fresh
//! database per test. SQLite by default; PostgreSQL and Redis when
//! `CCU_TEST_DATABASE_URL` / `CCU_TEST_REDIS_URL` are set (CI runs the suite
//! both ways). Set `TEST_LOG=1` to see the server's logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod auth;
mod authz;
mod bus;
mod email;
mod helpers;
mod process;
mod routing;
mod sip;
mod store_suite;
mod voice;
mod ws;

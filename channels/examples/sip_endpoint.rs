#![allow(clippy::unwrap_used)]
//! A standalone SIP endpoint with one demo user, for sipp runs and
//! benchmarks (`tools/sip-bench.sh`) until the server wires the endpoint in.
//!
//! ```text
//! CCU_SIP_ADDR=127.0.0.1:5060 cargo run --release -p ccu-channels --example sip_endpoint
//! ```
//!
//! User `1001`, password `secret`, realm `ccu`, MD5 only (sipp's digest).
//! `CCU_SIP_RATE_LIMIT=off` disables the per-source limit (a benchmark sends
//! everything from one address); `CCU_SIP_MAX_TRANSACTIONS` raises the
//! transaction limit (a non-INVITE transaction over UDP lives 32 s, Timer
//! J, so a sustained 5,000/s needs 160,000). Prints `listening <addr>` once
//! bound.

use ccu_channels::sip::StatusCode;
use ccu_channels::sip::digest::Algorithm;
use ccu_channels::sip::endpoint::{SipConfig, SipEndpoint};
use ccu_channels::sip::registrar::{OperatorId, StaticCredentials, StoredCredential};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let addr = std::env::var("CCU_SIP_ADDR").unwrap_or_else(|_| "127.0.0.1:5060".into());
    let mut config = SipConfig::default();
    config.registrar.algorithms = vec![Algorithm::Md5];
    config.rate_limit.enabled = std::env::var("CCU_SIP_RATE_LIMIT").as_deref() != Ok("off");
    if let Ok(max) = std::env::var("CCU_SIP_MAX_TRANSACTIONS") {
        config.max_transactions = max.parse().unwrap();
    }
    let mut users = StaticCredentials::default();
    let realm = config.registrar.realm.clone();
    users.0.insert(
        "1001".into(),
        StoredCredential::from_password(OperatorId(1), "1001", &realm, "secret"),
    );
    let (udp, tcp) = SipEndpoint::bind(addr.parse().unwrap()).await.unwrap();
    let shutdown = CancellationToken::new();
    let (endpoint, mut requests) =
        SipEndpoint::start(config, udp, Some(tcp), users, shutdown.clone()).unwrap();
    println!("listening {}", endpoint.udp_addr());
    tokio::spawn(async move {
        while let Some(incoming) = requests.recv().await {
            let response = incoming.request.response(
                StatusCode::TEMPORARILY_UNAVAILABLE,
                incoming.handle.to_tag(),
            );
            let _ = incoming.handle.respond(response).await;
        }
    });
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
    println!("{:?}", endpoint.stats());
    endpoint.wait().await;
}

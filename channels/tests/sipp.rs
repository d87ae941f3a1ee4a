#![allow(clippy::unwrap_used)]
//! The SIP endpoint and registrar against sipp, a real SIP peer (Debian
//! package `sip-tester`). The scenarios live in `tests/sipp/` at the
//! repository root. These tests fail, rather than skip, when sipp is
//! missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use ccu_channels::sip::digest::Algorithm;
use ccu_channels::sip::endpoint::{SipConfig, SipEndpoint};
use ccu_channels::sip::rate::RateLimitConfig;
use ccu_channels::sip::registrar::{OperatorId, StaticCredentials, StoredCredential};
use tokio_util::sync::CancellationToken;

const REALM: &str = "ccu.test";

fn sipp_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("sipp"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "sipp not found on PATH: install the Debian package sip-tester \
                 (apt-get install -y sip-tester)"
            )
        })
}

fn scenario(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sipp")
        .join(name);
    assert!(path.is_file(), "missing scenario {}", path.display());
    path
}

struct Server {
    endpoint: SipEndpoint,
    shutdown: CancellationToken,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut SipConfig)) -> Server {
        let mut config = SipConfig::default();
        config.registrar.realm = REALM.into();
        config.registrar.max_auth_failures = 3;
        configure(&mut config);
        let (udp, tcp) = SipEndpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut users = StaticCredentials::default();
        users.0.insert(
            "1001".into(),
            StoredCredential::from_password(OperatorId(1), "1001", REALM, "right"),
        );
        let shutdown = CancellationToken::new();
        let (endpoint, mut requests) =
            SipEndpoint::start(config, udp, Some(tcp), users, shutdown.clone()).unwrap();
        // No calls yet: a TU that refuses whatever comes.
        tokio::spawn(async move {
            while let Some(incoming) = requests.recv().await {
                let response = incoming.request.response(
                    ccu_channels::sip::StatusCode::TEMPORARILY_UNAVAILABLE,
                    incoming.handle.to_tag(),
                );
                let _ = incoming.handle.respond(response).await;
            }
        });
        Server { endpoint, shutdown }
    }

    fn addr(&self, transport: &str) -> SocketAddr {
        if transport == "t1" {
            self.endpoint.tcp_addr().unwrap()
        } else {
            self.endpoint.udp_addr()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs sipp once (in a scratch directory, for its log files) and returns
/// its output; sipp exits 0 when every call succeeded.
async fn sipp(server: SocketAddr, name: &str, transport: &str, extra: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join(format!(
        "ccu-sipp-{}-{}-{}",
        std::process::id(),
        name.trim_end_matches(".xml"),
        server.port()
    ));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut command = tokio::process::Command::new(sipp_binary());
    command
        .current_dir(&scratch)
        .arg("-sf")
        .arg(scenario(name))
        .args(["-t", transport, "-i", "127.0.0.1", "-nostdin"])
        .args(["-timeout", "30s", "-timeout_error", "-trace_err"])
        .args(extra)
        .arg(server.to_string())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("sipp finished within 60 s")
        .expect("sipp started");
    let _ = std::fs::remove_dir_all(&scratch);
    output
}

fn describe(output: &Output) -> String {
    format!(
        "sipp exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_success(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{}", describe(output));
}

const USER: [&str; 6] = ["-s", "1001", "-au", "1001", "-ap", "right"];

async fn register_then_unregister(transport: &str, configure: impl FnOnce(&mut SipConfig)) {
    let server = Server::start(configure).await;
    let addr = server.addr(transport);
    assert_success(
        &sipp(
            addr,
            "register_auth.xml",
            transport,
            &[&USER[..], &["-m", "1"]].concat(),
        )
        .await,
    );
    let bindings = server.endpoint.bindings(OperatorId(1));
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    let expected = if transport == "t1" { "TCP" } else { "UDP" };
    assert_eq!(bindings[0].transport.as_str(), expected);
    assert!(
        bindings[0]
            .contact
            .uri
            .to_string()
            .starts_with("sip:1001@127.0.0.1:")
    );

    assert_success(
        &sipp(
            addr,
            "unregister.xml",
            transport,
            &[&USER[..], &["-m", "1"]].concat(),
        )
        .await,
    );
    assert!(server.endpoint.bindings(OperatorId(1)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registers_with_md5_digest_and_unregisters_over_udp() {
    // sipp 3.6 computes MD5 digests only, and answers the first challenge
    // it reads: offer MD5 alone. (SHA-256 is covered by sip_endpoint.rs.)
    register_then_unregister("u1", |c| c.registrar.algorithms = vec![Algorithm::Md5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registers_with_md5_digest_and_unregisters_over_tcp() {
    register_then_unregister("t1", |c| c.registrar.algorithms = vec![Algorithm::Md5]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_never_register_and_end_with_403() {
    let server = Server::start(|c| c.registrar.algorithms = vec![Algorithm::Md5]).await;
    let addr = server.addr("u1");
    let wrong = ["-s", "1001", "-au", "1001", "-ap", "wrong", "-m", "1"];
    assert_success(&sipp(addr, "register_wrong_password.xml", "u1", &wrong).await);
    let unknown = ["-s", "9999", "-au", "9999", "-ap", "right", "-m", "1"];
    assert_success(&sipp(addr, "register_wrong_password.xml", "u1", &unknown).await);
    assert!(server.endpoint.bindings(OperatorId(1)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_get_200_over_udp_and_tcp() {
    let server = Server::start(|_| {}).await;
    for transport in ["u1", "t1"] {
        let output = sipp(
            server.addr(transport),
            "options.xml",
            transport,
            &["-m", "10"],
        )
        .await;
        assert_success(&output);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_400_and_the_endpoint_keeps_answering() {
    let server = Server::start(|_| {}).await;
    let output = sipp(server.addr("u1"), "malformed.xml", "u1", &["-m", "3"]).await;
    assert_success(&output);
    assert_eq!(server.endpoint.stats().rejected, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_limited_and_others_are_still_served() {
    let server = Server::start(|c| {
        c.rate_limit = RateLimitConfig {
            requests_per_second: 20,
            burst: 20,
            refusals_per_second: 1,
            ..RateLimitConfig::default()
        };
    })
    .await;
    let addr = server.addr("u1");
    // 400 OPTIONS at 400/s from 127.0.0.1, each waiting at most 2 s for
    // its 200: most of them must fail.
    let flood = sipp(
        addr,
        "options.xml",
        "u1",
        &[
            "-m",
            "400",
            "-r",
            "400",
            "-l",
            "400",
            "-recv_timeout",
            "2000",
        ],
    )
    .await;
    assert_eq!(flood.status.code(), Some(1), "{}", describe(&flood));
    let stats = server.endpoint.stats();
    assert!(stats.rate_limited_dropped >= 300, "{stats:?}");
    assert!(stats.rate_limited_refused >= 1, "{stats:?}");
    // Meanwhile, another address is served normally.
    let other = sipp(addr, "options.xml", "u1", &["-m", "5", "-i", "127.0.0.2"]).await;
    assert_success(&other);
}

//! Calls to the unified number through the server, with sipp (Debian
//! `sip-tester`) as the trunk: the IVR answers, the caller chooses by RFC
//! 4733 DTMF (sip-tester's `dtmf_2833_1.pcap`), the call is queued as a
//! voice conversation, and a hang-up while queued is an abandon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const NUMBER: &str = "+390612345678";

fn sipp_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("sipp"))
                .find(|p| p.is_file())
        })
        .expect("sipp not found on PATH: apt-get install -y sip-tester")
}

async fn sipp(server: SocketAddr, scenario: &str, extra: &[&str]) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(sipp_binary())
            .current_dir(scratch.path())
            .arg("-sf")
            .arg(repo_path("tests/sipp").join(scenario))
            .args([
                "-t",
                "u1",
                "-nostdin",
                "-m",
                "1",
                "-i",
                "127.0.0.1",
                "-mi",
                "127.0.0.1",
            ])
            .args(["-timeout", "30s", "-timeout_error", "-trace_err"])
            .args(extra)
            .arg(server.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sipp finished within 60 s")
    .expect("sipp started")
}

/// A server taking calls to NUMBER from 127.0.0.1, media on system ports.
async fn calls_app() -> TestApp {
    spawn_app_with(&[
        ("sip.registrar.algorithms", json!(["MD5"])),
        (
            "sip.trunks",
            json!([{ "name": "carrier", "sources": ["127.0.0.1/32"], "numbers": [NUMBER] }]),
        ),
        ("sip.numbers", json!({ NUMBER: { "queue": "urp" } })),
        ("voice.rtp_ports", json!("0")),
        ("voice.media_address", json!("127.0.0.1")),
    ])
    .await
}

async fn conversation(app: &TestApp, id: i64) -> Option<Value> {
    let response = app
        .get(&format!("/api/v1/conversations/{id}"), &app.admin_token)
        .await;
    (response.status() == 200).then_some(response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_presses_1_is_queued_for_anagrafe_and_hanging_up_is_an_abandon() {
    let app = calls_app().await;
    let output = sipp(app.sip_addr, "call_dtmf_hangup.xml", &["-s", "0612345678"]).await;
    assert!(
        output.status.success(),
        "sipp exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The conversation was opened by the IVR's route and ended by the BYE.
    let mut last = None;
    for _ in 0..50 {
        last = conversation(&app, 1).await;
        if last.as_ref().is_some_and(|c| c["state"] == "abandoned") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let conversation = last.expect("a conversation");
    assert_eq!(conversation["channel"], "voice", "{conversation}");
    assert_eq!(
        conversation["queue_id"], "anagrafe",
        "the key 1 of the menu: {conversation}"
    );
    assert_eq!(conversation["state"], "abandoned", "{conversation}");
}

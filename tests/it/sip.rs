//! The voice channel in the real server: SIP accounts set by an admin
//! through the API (or `ccu user sip`), phones registering with sipp over
//! UDP and TCP, and calls from trunks admitted or refused. sipp (Debian
//! `sip-tester`) must be installed: these tests fail rather than skip.
//!
//! sipp 3.6 computes only MD5 digests and answers the first challenge it
//! reads, so these servers offer MD5 alone; SHA-256 registration is tested
//! with a Rust peer in `channels/tests/sip_endpoint.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const SIP_PASSWORD: &str = "password del telefono 1001";
const NUMBER: &str = "+390612345678";
const TRUNK_PASSWORD: &str = "segreto del gestore telefonico";

fn sipp_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("sipp"))
        .find(|candidate| candidate.is_file())
        .expect("sipp not found on PATH: apt-get install -y sip-tester")
}

/// Runs one sipp scenario of `tests/sipp/` once against `server`; sipp
/// exits 0 when every call went as the scenario says.
async fn sipp(server: SocketAddr, scenario: &str, transport: &str, extra: &[&str]) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(sipp_binary());
    command
        .current_dir(scratch.path())
        .arg("-sf")
        .arg(repo_path("tests/sipp").join(scenario))
        .args(["-t", transport, "-nostdin", "-m", "1"])
        .args(["-timeout", "30s", "-timeout_error", "-trace_err"])
        .args(extra)
        .arg(server.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if !extra.contains(&"-i") {
        command.args(["-i", "127.0.0.1"]);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("sipp finished within 60 s")
        .expect("sipp started")
}

/// A server whose registrar offers MD5 only (for sipp) and locks a
/// username out of an address after 3 failures.
async fn voice_app(extra: &[(&str, Value)]) -> TestApp {
    let mut overrides = vec![
        ("sip.registrar.algorithms", json!(["MD5"])),
        ("sip.registrar.max_auth_failures", json!(3)),
        // Admission only (480 without [ivr]): answered calls are in tests/it/voice.rs.
        ("ivr", Value::Null),
        (
            "sip.numbers",
            json!({ NUMBER: { "queue": "urp", "ivr": null } }),
        ),
    ];
    overrides.extend(extra.iter().cloned());
    spawn_app_with(&overrides).await
}

impl TestApp {
    async fn set_sip(&self, user: i64, username: &str, password: &str) -> reqwest::Response {
        self.client
            .put(self.url(&format!("/api/v1/users/{user}/sip")))
            .bearer_auth(&self.admin_token)
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    async fn sip_view(&self, user: i64) -> Value {
        let response = self
            .get(&format!("/api/v1/users/{user}/sip"), &self.admin_token)
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

fn register_as(user: &str, password: &str) -> Vec<String> {
    ["-s", user, "-au", user, "-ap", password]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registers_over_udp_and_tcp_with_the_account_an_admin_set_and_unregisters() {
    let app = voice_app(&[]).await;
    let (id, _) = app.user("op.voce", "operator", "comune").await;
    let response = app.set_sip(id, "1001", SIP_PASSWORD).await;
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(SIP_PASSWORD) && !text.contains("ha1"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["username"], "1001");
    assert_eq!(body["realm"], "comune.monteverde.it");
    assert_eq!(body["registrations"], json!([]));

    let phone = register_as("1001", SIP_PASSWORD);
    let udp = sipp(app.sip_addr, "register_auth.xml", "u1", &args(&phone)).await;
    assert_sipp_ok(&udp, "REGISTER over UDP");
    let view = app.sip_view(id).await;
    let registrations = view["registrations"].as_array().unwrap();
    assert_eq!(registrations.len(), 1, "{view}");
    assert_eq!(registrations[0]["transport"], "UDP");
    assert!(
        registrations[0]["contact"]
            .as_str()
            .unwrap()
            .starts_with("<sip:1001@127.0.0.1:"),
        "{view}"
    );
    let expires_in = registrations[0]["expires_in"].as_u64().unwrap();
    assert!((295..=300).contains(&expires_in), "{view}");

    // The same phone over TCP is a second binding (its Contact says
    // transport=tcp); both are listed.
    let tcp = sipp(app.sip_addr, "register_auth.xml", "t1", &args(&phone)).await;
    assert_sipp_ok(&tcp, "REGISTER over TCP");
    let view = app.sip_view(id).await;
    let transports: Vec<&str> = view["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["UDP", "TCP"], "{view}");

    // Contact: * with Expires: 0 removes every binding.
    let gone = sipp(app.sip_addr, "unregister.xml", "t1", &args(&phone)).await;
    assert_sipp_ok(&gone, "unregister over TCP");
    assert_eq!(app.sip_view(id).await["registrations"], json!([]));
}

/// A free UDP port on `ip` (for sipp's -p, so that one device can later
/// unregister its own Contact).
fn free_udp_port(ip: &str) -> String {
    let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
    socket.local_addr().unwrap().port().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_with_two_phones_has_both_listed_and_one_can_leave() {
    let app = voice_app(&[]).await;
    let (id, _) = app.user("op.duetelefoni", "operator", "comune").await;
    assert_eq!(app.set_sip(id, "1002", SIP_PASSWORD).await.status(), 200);
    let phone = register_as("1002", SIP_PASSWORD);
    let desk = [
        "-i".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        free_udp_port("127.0.0.1"),
    ];
    let soft = [
        "-i".to_owned(),
        "127.0.0.2".to_owned(),
        "-p".to_owned(),
        free_udp_port("127.0.0.2"),
    ];
    for device in [&desk, &soft] {
        let output = sipp(
            app.sip_addr,
            "register_auth.xml",
            "u1",
            &args(&[phone.clone(), device.to_vec()].concat()),
        )
        .await;
        assert_sipp_ok(&output, &format!("REGISTER from {}", device[1]));
    }
    let view = app.sip_view(id).await;
    let sources: Vec<String> = view["registrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sources,
        [
            format!("127.0.0.1:{}", desk[3]),
            format!("127.0.0.2:{}", soft[3])
        ],
        "{view}"
    );

    // The soft phone unregisters its own Contact; the desk phone stays.
    let output = sipp(
        app.sip_addr,
        "unregister_contact.xml",
        "u1",
        &args(&[phone.clone(), soft.to_vec()].concat()),
    )
    .await;
    assert_sipp_ok(&output, "unregister one contact");
    let view = app.sip_view(id).await;
    let left = view["registrations"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{view}");
    assert_eq!(left[0]["source"], format!("127.0.0.1:{}", desk[3]));

    // New credentials forget the registered devices: they must register again.
    assert_eq!(
        app.set_sip(id, "1002", "un'altra password lunga")
            .await
            .status(),
        200
    );
    assert_eq!(app.sip_view(id).await["registrations"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_unknown_user_and_a_removed_account_never_register() {
    let app = voice_app(&[]).await;
    let (id, _) = app.user("op.sbagliato", "operator", "comune").await;
    assert_eq!(app.set_sip(id, "1003", SIP_PASSWORD).await.status(), 200);
    // 401, 401, 401, then 403 at the third failure; never 200.
    let wrong = sipp(
        app.sip_addr,
        "register_wrong_password.xml",
        "u1",
        &args(&register_as("1003", "non è questa")),
    )
    .await;
    assert_sipp_ok(&wrong, "wrong password");
    let unknown = sipp(
        app.sip_addr,
        "register_wrong_password.xml",
        "t1",
        &args(&register_as("9999", SIP_PASSWORD)),
    )
    .await;
    assert_sipp_ok(&unknown, "unknown user over TCP");
    assert_eq!(app.sip_view(id).await["registrations"], json!([]));

    // Removed: the right password no longer works (from another address,
    // which the lock-out above does not cover).
    let removed = app
        .client
        .delete(app.url(&format!("/api/v1/users/{id}/sip")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let after = sipp(
        app.sip_addr,
        "register_wrong_password.xml",
        "u1",
        &args(
            &[
                register_as("1003", SIP_PASSWORD),
                vec!["-i".into(), "127.0.0.2".into()],
            ]
            .concat(),
        ),
    )
    .await;
    assert_sipp_ok(&after, "removed account");
    assert_eq!(app.sip_view(id).await["username"], Value::Null);

    // A deactivated user's phone is forgotten and cannot register again.
    let (other, _) = app.user("op.uscito", "operator", "comune").await;
    assert_eq!(app.set_sip(other, "1004", SIP_PASSWORD).await.status(), 200);
    let registered = sipp(
        app.sip_addr,
        "register_auth.xml",
        "u1",
        &args(
            &[
                register_as("1004", SIP_PASSWORD),
                vec!["-i".into(), "127.0.0.3".into()],
            ]
            .concat(),
        ),
    )
    .await;
    assert_sipp_ok(&registered, "before deactivation");
    assert_eq!(
        app.sip_view(other).await["registrations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let deactivated = app
        .client
        .delete(app.url(&format!("/api/v1/users/{other}")))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deactivated.status(), 204);
    let output = sipp(
        app.sip_addr,
        "register_wrong_password.xml",
        "u1",
        &args(
            &[
                register_as("1004", SIP_PASSWORD),
                vec!["-i".into(), "127.0.0.3".into()],
            ]
            .concat(),
        ),
    )
    .await;
    assert_sipp_ok(&output, "deactivated user");
    assert_eq!(app.sip_view(other).await["registrations"], json!([]));
}

#[tokio::test]
async fn sip_accounts_are_validated_unique_scoped_audited_and_removable() {
    let app = voice_app(&[]).await;
    let (id, _) = app.user("op.conti", "operator", "comune").await;
    let (other, _) = app.user("op.altro", "operator", "comune").await;
    let field = |body: Value| body["field"].as_str().unwrap_or_default().to_owned();
    for (username, password, bad) in [
        ("Mario Rossi", SIP_PASSWORD, "username"),
        ("1", SIP_PASSWORD, "username"),
        ("1001@comune", SIP_PASSWORD, "username"),
        ("1001", "corta", "password"),
    ] {
        let response = app.set_sip(id, username, password).await;
        assert_eq!(response.status(), 422, "{username} / {password}");
        assert_eq!(field(response.json().await.unwrap()), bad);
    }
    let missing = app
        .client
        .put(app.url(&format!("/api/v1/users/{id}/sip")))
        .bearer_auth(&app.admin_token)
        .json(&json!({ "username": "1001" }))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);

    assert_eq!(app.set_sip(id, "1001", SIP_PASSWORD).await.status(), 200);
    // The SIP username is unique across users.
    assert_eq!(app.set_sip(other, "1001", SIP_PASSWORD).await.status(), 409);
    // Setting it again for the same user replaces it.
    assert_eq!(app.set_sip(id, "1010", SIP_PASSWORD).await.status(), 200);
    assert_eq!(app.sip_view(id).await["username"], "1010");
    assert_eq!(app.set_sip(other, "1001", SIP_PASSWORD).await.status(), 200);

    // Only HA1 values are stored, never the password.
    let account = app.store().sip_account(id).await.unwrap().unwrap();
    assert_eq!(account.sip_username, "1010");
    let credential = app
        .store()
        .sip_credential("1010", "comune.monteverde.it")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.operator.0, id);
    assert_eq!(
        credential.ha1(ccu_channels::sip::digest::Algorithm::Md5),
        Some(
            ccu_channels::sip::registrar::ha1_for(
                "1010",
                "comune.monteverde.it",
                SIP_PASSWORD,
                ccu_channels::sip::digest::Algorithm::Md5
            )
            .as_str()
        )
    );
    // A credential made for another realm is not used.
    assert!(
        app.store()
            .sip_credential("1010", "altro.realm")
            .await
            .unwrap()
            .is_none()
    );

    // A company admin manages only the company's users.
    let (_, company_admin) = app.user("admin.acque.sip", "admin", "acque").await;
    let foreign = app
        .client
        .put(app.url(&format!("/api/v1/users/{id}/sip")))
        .bearer_auth(&company_admin)
        .json(&json!({ "username": "6666", "password": SIP_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    assert_eq!(
        app.get(&format!("/api/v1/users/{id}/sip"), &company_admin)
            .await
            .status(),
        404
    );

    let delete = |user: i64| {
        app.client
            .delete(app.url(&format!("/api/v1/users/{user}/sip")))
            .bearer_auth(&app.admin_token)
            .send()
    };
    assert_eq!(delete(id).await.unwrap().status(), 204);
    assert_eq!(delete(id).await.unwrap().status(), 404);
    let audit = app.store().recent_audit(10).await.unwrap();
    let actions: Vec<(&str, Option<&str>)> = audit
        .iter()
        .map(|(action, target, _)| (action.as_str(), target.as_deref()))
        .collect();
    assert_eq!(actions[0], ("sip_account_removed", Some("op.conti")));
    assert!(
        actions.contains(&("sip_account_set", Some("op.altro"))),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_answered_and_the_endpoint_shows_in_readyz_and_metrics() {
    let app = voice_app(&[]).await;
    for transport in ["u1", "t1"] {
        let output = sipp(app.sip_addr, "options.xml", transport, &[]).await;
        assert_sipp_ok(&output, transport);
    }
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["sip_ok"], true, "{ready}");
    let metrics = app.metrics().await;
    let requests = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ccu_sip_requests_received_total "))
        .unwrap_or_else(|| panic!("no SIP counter in\n{metrics}"));
    assert!(requests.trim().parse::<f64>().unwrap() >= 2.0, "{requests}");
    assert!(metrics.contains("ccu_sip_registered_devices"), "{metrics}");
}

fn trunks() -> Value {
    json!([
        { "name": "carrier", "sources": ["127.0.0.1/32"], "numbers": [NUMBER] },
        { "name": "backup", "sources": ["127.0.0.3"], "username": "monteverde",
          "password": TRUNK_PASSWORD, "numbers": [NUMBER] },
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_call_to_the_unified_number_is_taken_and_anything_else_refused() {
    let app = voice_app(&[
        ("sip.trunks", trunks()),
        (
            "sip.numbers",
            json!({ NUMBER: { "queue": "urp" }, "+390612345600": { "queue": "acqua_rifiuti" } }),
        ),
    ])
    .await;
    let sip = app.sip_addr;
    // From the carrier's address to the number as dialled nationally, over UDP and TCP.
    for transport in ["u1", "t1"] {
        let output = sipp(sip, "invite_480.xml", transport, &["-s", "0612345678"]).await;
        assert_sipp_ok(&output, &format!("trunk call over {transport}"));
    }
    // An address that is no trunk's: 403, whatever the number.
    let output = sipp(
        sip,
        "invite_403.xml",
        "u1",
        &["-s", NUMBER, "-i", "127.0.0.2"],
    )
    .await;
    assert_sipp_ok(&output, "unknown source");
    // A number that is not ours: 404; one this trunk may not deliver: 403.
    let output = sipp(sip, "invite_404.xml", "u1", &["-s", "+390699999999"]).await;
    assert_sipp_ok(&output, "unknown number");
    let output = sipp(sip, "invite_403.xml", "u1", &["-s", "+390612345600"]).await;
    assert_sipp_ok(&output, "another trunk's number");
    // The backup trunk must authenticate (407), and then is taken...
    // sipp signs its digest for `sip:<remote address>` unless told the
    // Request-URI; ccu checks that the digest is for the Request-URI.
    let auth_uri = format!("{NUMBER}@{sip}");
    let backup = [
        "-s",
        NUMBER,
        "-i",
        "127.0.0.3",
        "-au",
        "monteverde",
        "-auth_uri",
        &auth_uri,
    ];
    let output = sipp(
        sip,
        "invite_digest_480.xml",
        "u1",
        &[&backup[..], &["-ap", TRUNK_PASSWORD]].concat(),
    )
    .await;
    assert_sipp_ok(&output, "trunk with digest");
    // ...but not with the wrong password.
    let output = sipp(
        sip,
        "invite_digest_403.xml",
        "u1",
        &[&backup[..], &["-ap", "non è questa"]].concat(),
    )
    .await;
    assert_sipp_ok(&output, "trunk with the wrong digest");

    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |status: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ccu_sip_invites_total{{status=\"{status}\"}} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Counters are process-wide (other tests' servers add to them).
    assert!(
        count("480") >= 3.0 && count("403") >= 3.0 && count("404") >= 1.0 && count("407") >= 2.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_for_dialogs_ccu_does_not_have_get_481() {
    let app = voice_app(&[("sip.trunks", trunks())]).await;
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = peer.local_addr().unwrap().port();
    for (method, to_tag) in [
        ("BYE", ";tag=gone"),
        ("INVITE", ";tag=gone"),
        ("INFO", ";tag=gone"),
    ] {
        let text = format!(
            "{method} sip:{NUMBER}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{method}1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:carrier@127.0.0.1>;tag=c1\r\nTo: <sip:{NUMBER}@127.0.0.1>{to_tag}\r\n\
             Call-ID: stale-{method}\r\nCSeq: 2 {method}\r\nContact: <sip:carrier@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        );
        peer.send_to(text.as_bytes(), app.sip_addr).await.unwrap();
        let mut buf = vec![0_u8; 8192];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..len]).into_owned();
        assert!(answer.starts_with("SIP/2.0 481 "), "{method}: {answer}");
    }
}

#[test]
fn the_binary_binds_sip_and_ccu_user_sip_gives_a_phone_its_account() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ccu.db").display());
    let ccu = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ccu"))
            .arg("--config")
            .arg(repo_path("config/default.toml"))
            .args(args)
            .env("CCU_DATA_DIR", dir.path())
            .env("CCU_DATABASE_URL", &url)
            .env_remove("CCU_REDIS_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let added = ccu(
        &[
            "user",
            "add",
            "--username",
            "op.cli",
            "--role",
            "operator",
            "--password-stdin",
        ],
        "password di accesso lunga\n",
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let no_password = ccu(
        &[
            "user",
            "sip",
            "--username",
            "op.cli",
            "--sip-username",
            "2001",
        ],
        "",
    );
    assert!(!no_password.status.success());
    let bad = ccu(
        &[
            "user",
            "sip",
            "--username",
            "op.cli",
            "--sip-username",
            "Bad Name",
            "--password-stdin",
        ],
        "password del telefono cli\n",
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("username"));
    let set = ccu(
        &[
            "user",
            "sip",
            "--username",
            "op.cli",
            "--sip-username",
            "2001",
            "--password-stdin",
        ],
        "password del telefono cli\n",
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(String::from_utf8_lossy(&set.stdout).contains("2001"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Every [sip] key can be set from the environment.
        let server = crate::process::start_with(
            dir.path(),
            &url,
            &[("CCU_SIP__REGISTRAR__ALGORITHMS", "[\"MD5\"]".to_owned())],
        );
        assert_ne!(server.sip.port(), 0);
        let output = sipp(
            server.sip,
            "register_auth.xml",
            "u1",
            &args(&register_as("2001", "password del telefono cli")),
        )
        .await;
        assert_sipp_ok(&output, "REGISTER against the binary");
        let output = sipp(server.sip, "options.xml", "t1", &[]).await;
        assert_sipp_ok(&output, "OPTIONS over TCP against the binary");
    });
    let removed = ccu(&["user", "sip", "--username", "op.cli", "--remove"], "");
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let again = ccu(&["user", "sip", "--username", "op.cli", "--remove"], "");
    assert!(!again.status.success());
}

//! The `ccu` binary as an administrator runs it: start, crash (SIGKILL),
//! restart, SIGTERM with a request in flight, invalid config, `ccu user add`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The `ccu` binary started by a test; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub smtp: SocketAddr,
    pub sip: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path, database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccu"));
    cmd.arg("--config")
        .arg(repo_path("config/default.toml"))
        .env("CCU_HTTP_ADDR", "127.0.0.1:0")
        .env("CCU_SMTP_ADDR", "127.0.0.1:0")
        .env("CCU_SIP_ADDR", "127.0.0.1:0")
        .env("CCU_DATA_DIR", dir)
        .env("CCU_DATABASE_URL", database_url)
        .env("CCU_LOG_FORMAT", "json")
        .env_remove("CCU_REDIS_URL")
        .env("RUST_LOG", "info");
    if let Some(redis) = redis_url() {
        cmd.env("CCU_REDIS_URL", redis)
            .env("CCU_REDIS_PREFIX", format!("ccu-test-{}", random_suffix()));
    }
    cmd
}

/// Starts the binary and waits for its JSON "ready" log line, which names
/// the bound addresses.
fn start(dir: &Path, database_url: &str) -> Server {
    start_with(dir, database_url, &[])
}

/// As [`start`], with extra environment variables.
pub fn start_with(dir: &Path, database_url: &str, env: &[(&str, String)]) -> Server {
    let mut cmd = command(dir, database_url);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent
                && let Ok(log) = serde_json::from_str::<Value>(&line)
                && log["message"] == "ccu is ready"
            {
                let field = |name: &str| log[name].as_str().unwrap_or_default().to_owned();
                let _ = tx.send((field("http_addr"), field("smtp_addr"), field("sip_addr")));
                sent = true;
            }
        }
    });
    let (addr, smtp, sip) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs that it is ready, with its addresses");
    Server {
        child,
        addr: addr.parse().unwrap(),
        smtp: smtp.parse().unwrap(),
        sip: sip.parse().unwrap(),
    }
}

async fn login(
    client: &reqwest::Client,
    addr: SocketAddr,
    username: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("http://{addr}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn data_written_before_a_sigkill_is_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), &url);
    let password = std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap();
    let body: Value = login(&client, server.addr, "admin", password.trim())
        .await
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let created = client
        .post(format!("http://{}/api/v1/users", server.addr))
        .bearer_auth(&token)
        .json(&json!({"username": "superstite", "display_name": "Superstite", "password": "sopravvive al crash",
                      "role": "operator", "skills": {"anagrafe": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    // SIGKILL: no shutdown code runs.
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let server = start(dir.path(), &url);
    let response = login(&client, server.addr, "superstite", "sopravvive al crash").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["skills"]["anagrafe"], 7);
    // The session from before the crash is still valid, and the admin
    // password was not regenerated.
    let me = client
        .get(format!("http://{}/api/v1/me", server.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("initial-admin-password")).unwrap(),
        password
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let mut server = start(dir.path(), &url);
    // A request whose body is still arriving when the signal comes.
    let body = br#"{"username": "nessuno", "password": "una password qualsiasi"}"#;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: ccu\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let addr = server.addr;
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still running: it waits for our request.
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server must wait for in-flight requests"
    );
    stream.write_all(&body[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    // Then it exits on its own, successfully.
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        std::mem::forget(server);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    // And nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn an_invalid_config_refuses_to_start_and_names_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ccu.db").display());
    let cases = [
        (
            "CCU_QUEUES__ANAGRAFE__PRIORITY",
            "alta",
            "queues.anagrafe.priority",
        ),
        (
            "CCU_QUEUES__TRIBUTI__SCHEDULE",
            "mai",
            "queues.tributi.schedule",
        ),
        ("CCU_HTTP_ADDR", "not an address", "http_addr"),
        (
            "CCU_AUTH__SESSION_TTL_SECONDS",
            "0",
            "auth.session_ttl_seconds",
        ),
        ("CCU_TIME_ZONE", "Europe/Atlantide", "time_zone"),
    ];
    for (var, value, key) in cases {
        let output = command(dir.path(), &url).env(var, value).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{var}={value}: {stderr}");
        assert!(stderr.contains("invalid configuration"), "{stderr}");
    }
    // Nothing was created: the server refused before touching the store.
    assert!(!dir.path().join("ccu.db").exists());
}

#[test]
fn ccu_user_add_reads_the_password_from_stdin_and_ccu_migrate_works() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ccu.db").display());
    let migrate = command(dir.path(), &url).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let add_like = |args: &[&str], password: &str| {
        let mut child = command(dir.path(), &url)
            .arg("user")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let add = |args: &[&str], password: &str| add_like(&[&["add"][..], args].concat(), password);
    let ok = add(
        &[
            "--username",
            "f.bianchi",
            "--role",
            "operator",
            "--skills",
            "anagrafe:8,tributi:5",
            "--password-stdin",
        ],
        "password da riga di comando\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("f.bianchi"));
    let bad_skill = add(
        &[
            "--username",
            "g.verdi",
            "--role",
            "operator",
            "--skills",
            "magia:8",
            "--password-stdin",
        ],
        "password da riga di comando\n",
    );
    assert!(!bad_skill.status.success());
    assert!(String::from_utf8_lossy(&bad_skill.stderr).contains("skills.magia"));
    let short = add(
        &[
            "--username",
            "h.neri",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "corta\n",
    );
    assert!(!short.status.success());
    let no_stdin_flag = add(
        &["--username", "i.gialli", "--role", "admin"],
        "password da riga di comando\n",
    );
    assert!(!no_stdin_flag.status.success());

    // The user can log in to a server started on that database.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = start(dir.path(), &url);
        let response = login(
            &reqwest::Client::new(),
            server.addr,
            "f.bianchi",
            "password da riga di comando",
        )
        .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["user"]["skills"]["tributi"], 5);
        // A user existed, so no admin was generated.
        assert!(!dir.path().join("initial-admin-password").exists());
        // The database is readable by its owner only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ccu.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        // A forgotten password is reset from the command line, ending sessions.
        let passwd = add_like(
            &["passwd", "--username", "f.bianchi", "--password-stdin"],
            "una nuova password lunga\n",
        );
        assert!(
            passwd.status.success(),
            "{}",
            String::from_utf8_lossy(&passwd.stderr)
        );
        let old = login(
            &reqwest::Client::new(),
            server.addr,
            "f.bianchi",
            "password da riga di comando",
        )
        .await;
        assert_eq!(old.status(), 401);
        let new = login(
            &reqwest::Client::new(),
            server.addr,
            "f.bianchi",
            "una nuova password lunga",
        )
        .await;
        assert_eq!(new.status(), 200);
    });
}

fn ccu_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_ccu"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn ccu_erlang_and_ccu_simulate_agree_on_the_published_example() {
    // 100 calls per 30 minutes, AHT 180 s, 20 s target, 14 operators.
    let base = [
        "--arrivals-per-hour",
        "200",
        "--aht-seconds",
        "180",
        "--target-seconds",
        "20",
    ];
    let closed = ccu_json(&[&["erlang"][..], &base, &["--operators", "14"]].concat());
    assert!(
        (closed["service_level"].as_f64().unwrap() - 0.8884).abs() < 5e-4,
        "{closed}"
    );
    assert!(
        (closed["p_wait"].as_f64().unwrap() - 0.1741).abs() < 5e-4,
        "{closed}"
    );
    let staffing = ccu_json(&[&["erlang"][..], &base, &["--service-level", "0.8"]].concat());
    assert_eq!(
        staffing["operators"], 14,
        "13 operators give less than 80 %"
    );

    let sim = ccu_json(
        &[
            &["simulate"][..],
            &base,
            &["--operators", "14", "--hours", "40", "--seed", "11"],
        ]
        .concat(),
    );
    let report = &sim["report"];
    let sl = report["service_level"].as_f64().unwrap();
    let err = report["service_level_std_error"].as_f64().unwrap();
    assert!(
        (sl - 0.8884).abs() < 4.0 * err + 0.005,
        "simulated {sl} ± {err}"
    );
    // A queue of the configuration lends its strategy and target.
    let by_queue = ccu_json(&[
        "--config",
        repo_path("config/default.toml").to_str().unwrap(),
        "simulate",
        "--queue",
        "anagrafe",
        "--hours",
        "2",
    ]);
    assert_eq!(by_queue["params"]["strategy"], "best-skill");
    assert_eq!(by_queue["params"]["target_seconds"], 30.0);
    let bad = Command::new(env!("CARGO_BIN_EXE_ccu"))
        .args(["simulate", "--operators", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

//! The browser test: the real `ccu` binary on a fresh database, an operator
//! and a supervisor created with `ccu user add`, then `tests/e2e/run.mjs`
//! drives headless Chromium through the chat widget, the operator console,
//! the supervisor dashboard and the web form (see that file for the steps).
//!
//! Needs `npm ci` in `tests/e2e` and Debian's `chromium` at
//! `/usr/bin/chromium` (or `CCU_CHROMIUM`); it fails, saying so, when either
//! is missing. Screenshots go to `tests/e2e/output/`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const OPERATOR: (&str, &str, &str) = (
    "l.bianchi",
    "Laura Bianchi",
    "una password lunga per il browser",
);
const SUPERVISOR: (&str, &str, &str) = (
    "s.esposito",
    "Sara Esposito",
    "un'altra password lunga per il browser",
);

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccu"));
    cmd.arg("--config")
        .arg(repo_path("config/default.toml"))
        .env("CCU_HTTP_ADDR", "127.0.0.1:0")
        .env("CCU_SMTP_ADDR", "127.0.0.1:0")
        .env("CCU_SIP_ADDR", "127.0.0.1:0")
        .env("CCU_SIP_ADDR", "127.0.0.1:0")
        .env("CCU_DATA_DIR", dir)
        .env(
            "CCU_DATABASE_URL",
            format!("sqlite://{}", dir.join("ccu.db").display()),
        )
        .env("CCU_LOG_FORMAT", "json")
        // The URP answers whatever the day and hour of the test run.
        .env("CCU_QUEUES__URP__SCHEDULE", "h24")
        .env("CCU_QUEUES__URP__HOLIDAYS", "false")
        .env_remove("CCU_REDIS_URL")
        .env("RUST_LOG", "info");
    cmd
}

fn add_user(
    dir: &Path,
    (username, display_name, password): (&str, &str, &str),
    role: &str,
    skills: Option<&str>,
) {
    let mut cmd = command(dir);
    cmd.args([
        "user",
        "add",
        "--username",
        username,
        "--display-name",
        display_name,
        "--role",
        role,
    ]);
    if let Some(skills) = skills {
        cmd.args(["--skills", skills]);
    }
    let mut child = cmd
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "ccu user add {username}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the server and waits for its JSON "ready" line naming the address.
fn start(dir: &Path) -> (Server, String) {
    let mut child = command(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let show_logs = std::env::var_os("TEST_LOG").is_some();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if show_logs {
                eprintln!("{line}");
            }
            if !sent
                && let Ok(log) = serde_json::from_str::<Value>(&line)
                && log["message"] == "ccu is ready"
            {
                let _ = tx.send(log["http_addr"].as_str().unwrap_or_default().to_owned());
                sent = true;
            }
        }
    });
    let server = Server(child);
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs that it is ready");
    (server, addr)
}

#[test]
fn a_citizen_an_operator_and_a_supervisor_work_a_chat_in_a_real_browser() {
    let e2e = repo_path("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "tests/e2e/node_modules is missing: run `npm ci` in tests/e2e (playwright-core from npm)"
    );
    let chromium = std::env::var("CCU_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (`apt-get install -y chromium`) or set CCU_CHROMIUM"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: install Node.js (Debian's nodejs) to run tests/e2e/run.mjs"
    );

    let dir = tempfile::tempdir().unwrap();
    let migrate = command(dir.path()).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    add_user(dir.path(), OPERATOR, "operator", Some("informazioni:5"));
    add_user(dir.path(), SUPERVISOR, "supervisor", None);
    let (_server, addr) = start(dir.path());

    let status = Command::new("node")
        .arg("run.mjs")
        .current_dir(&e2e)
        .env("CCU_BASE_URL", format!("http://{addr}"))
        .env("CCU_OPERATOR_USER", OPERATOR.0)
        .env("CCU_OPERATOR_NAME", OPERATOR.1)
        .env("CCU_OPERATOR_PASSWORD", OPERATOR.2)
        .env("CCU_SUPERVISOR_USER", SUPERVISOR.0)
        .env("CCU_SUPERVISOR_PASSWORD", SUPERVISOR.2)
        .env("CCU_CHROMIUM", &chromium)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the browser test failed (its output above names the step; screenshots in tests/e2e/output)"
    );
}

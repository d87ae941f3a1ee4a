use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Once;

use ccu::app::{AppState, Application};
use ccu::config::{DEFAULT_CONFIG_PATH, Settings};
use ccu::store::{Conversation, NewConversation, Store};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// sipp exited 0: every call went as its scenario says.
#[track_caller]
pub fn assert_sipp_ok(output: &std::process::Output, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}: sipp exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            ccu::telemetry::init(ccu::config::LogFormat::Text);
        }
    });
}

/// A fresh database for one test: a SQLite file in `dir`, or a new schema
/// in the PostgreSQL database named by `CCU_TEST_DATABASE_URL`.
pub async fn fresh_database_url(dir: &Path) -> String {
    match std::env::var("CCU_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let schema = format!("t_{}", random_suffix());
            let admin = sqlx::PgPool::connect(&base)
                .await
                .expect("CCU_TEST_DATABASE_URL must be reachable");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&admin)
                .await
                .expect("create a schema for the test");
            admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options[search_path]={schema}")
        }
        _ => format!("sqlite://{}", dir.join("ccu.db").display()),
    }
}

pub fn redis_url() -> Option<String> {
    std::env::var("CCU_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Settings for a test: the demo config with a private data dir, port 0,
/// the test database, and Redis with a private channel prefix when given.
pub async fn test_settings(dir: &Path, overrides: &[(&str, Value)]) -> Settings {
    let mut figment = Figment::new()
        .merge(Toml::file(repo_path(DEFAULT_CONFIG_PATH)))
        .merge(Serialized::global("http_addr", "127.0.0.1:0"))
        .merge(Serialized::global("smtp_addr", "127.0.0.1:0"))
        .merge(Serialized::global("sip_addr", "127.0.0.1:0"))
        .merge(Serialized::global("data_dir", dir.display().to_string()))
        .merge(Serialized::global(
            "database_url",
            fresh_database_url(dir).await,
        ));
    if let Some(redis) = redis_url() {
        figment = figment
            .merge(Serialized::global("redis_url", redis))
            .merge(Serialized::global(
                "redis_prefix",
                format!("ccu-test-{}", random_suffix()),
            ));
    }
    for (key, value) in overrides {
        figment = figment.merge(Serialized::global(key, value));
    }
    Settings::from_figment(figment).expect("test settings must be valid")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub smtp_addr: SocketAddr,
    /// SIP, UDP and TCP on this one port.
    pub sip_addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    pub dir: TempDir,
    pub admin_token: String,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, Value)]) -> TestApp {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), overrides).await;
    let mut app = start(dir, settings, String::new()).await;
    let password = std::fs::read_to_string(app.dir.path().join("initial-admin-password")).unwrap();
    app.admin_token = app.login("admin", password.trim()).await;
    app
}

async fn start(dir: TempDir, settings: Settings, admin_token: String) -> TestApp {
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone())
        .await
        .expect("the app starts");
    let addr = app.http_addr();
    let smtp_addr = app.smtp_addr();
    let sip_addr = app.sip_addr();
    let state = app.state().clone();
    let server = tokio::spawn(app.run());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        addr,
        smtp_addr,
        sip_addr,
        state,
        client,
        dir,
        admin_token,
        shutdown,
        server: Some(server),
    }
}

impl TestApp {
    /// Stops the server (gracefully) and starts a new one on the same data.
    pub async fn restart(mut self) -> TestApp {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        let settings = self.state.settings.clone();
        let token = std::mem::take(&mut self.admin_token);
        // Keep the directory: move it out of the old app.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        start(dir, settings, token).await
    }

    /// `GET /metrics` (served to loopback peers), as text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    pub async fn login_response(&self, username: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let response = self.login_response(username, password).await;
        assert_eq!(response.status(), 200, "login of {username}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a user through the API (as the bootstrap admin) and returns
    /// its id and a session token for it.
    pub async fn user(&self, username: &str, role: &str, organization: &str) -> (i64, String) {
        let password = "una password lunga e sicura";
        let response = self
            .post(
                "/api/v1/users",
                &self.admin_token,
                &json!({
                    "username": username,
                    "display_name": username,
                    "password": password,
                    "role": role,
                    "organization_id": organization,
                    "skills": { "informazioni": 5 },
                    "languages": ["it", "en"],
                }),
            )
            .await;
        assert_eq!(
            response.status(),
            201,
            "creating {username}: {}",
            response.text().await.unwrap()
        );
        let user: Value = response.json().await.unwrap();
        (
            user["id"].as_i64().unwrap(),
            self.login(username, password).await,
        )
    }

    pub async fn conversation(&self, queue: &str) -> Conversation {
        create_conversation(self.store(), &self.state.settings, queue).await
    }
}

pub async fn create_conversation(store: &Store, settings: &Settings, queue: &str) -> Conversation {
    let organization = settings.queues[queue].organization.clone();
    store
        .create_conversation(
            &NewConversation {
                reference_prefix: "URP".into(),
                organization_id: organization,
                queue_id: queue.into(),
                channel: ccu::config::Channel::Chat,
                contact_id: None,
                language: "it".into(),
                subject: Some(format!("test in {queue}")),
            },
            ccu::now_ms(),
            2026,
        )
        .await
        .unwrap()
}

/// Polls `check` until it returns `Some`, for at most 20 s.
pub async fn poll_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

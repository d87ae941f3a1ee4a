//! What the load benches share: a real `ccu serve` on loopback with a fresh
//! data directory, its admin, operators made through the API, WebSocket
//! consoles, latency samples and the server's RSS and CPU.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The server under test; killed (and its data directory removed) on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub sip_addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Where the server keeps its data and which store and bus it uses.
pub struct ServerSetup<'a> {
    pub binary: &'a std::path::Path,
    /// `bench` names the data directory.
    pub bench: &'a str,
    pub database_url: Option<&'a str>,
    pub redis_url: Option<&'a str>,
    /// Settings of this load test (`CCU_...` variables).
    pub env: Vec<(String, String)>,
}

/// Starts `ccu serve` on port 0 for HTTP, SMTP and SIP and waits until it
/// says it is ready (its JSON log on stdout), or exits the bench.
pub fn start_server(setup: &ServerSetup<'_>) -> Server {
    let data_dir = std::env::temp_dir().join(format!("ccu-{}-{}", setup.bench, std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let database_url = setup
        .database_url
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}/ccu.db", data_dir.display()));
    let mut cmd = Command::new(setup.binary);
    cmd.arg("serve")
        .env("CCU_HTTP_ADDR", "127.0.0.1:0")
        .env("CCU_SMTP_ADDR", "127.0.0.1:0")
        .env("CCU_SIP_ADDR", "127.0.0.1:0")
        .env("CCU_DATA_DIR", &data_dir)
        .env("CCU_DATABASE_URL", database_url)
        .env("CCU_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,ccu=info")
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(redis) = setup.redis_url {
        cmd.env("CCU_REDIS_URL", redis).env(
            "CCU_REDIS_PREFIX",
            format!("ccu-{}-{}", setup.bench, std::process::id()),
        );
    }
    let mut child = cmd.spawn().unwrap_or_else(|err| {
        eprintln!("cannot start {}: {err}", setup.binary.display());
        std::process::exit(1)
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent
                && let Ok(log) = serde_json::from_str::<Value>(&line)
                && log["message"] == "ccu is ready"
            {
                let address = |key: &str| log[key].as_str().unwrap_or_default().to_owned();
                let _ = tx.send((address("http_addr"), address("sip_addr")));
                sent = true;
            }
        }
    });
    let (http, sip) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server says it is ready");
    Server {
        child,
        addr: http.parse().expect("an HTTP address"),
        sip_addr: sip.parse().expect("a SIP address"),
        data_dir,
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of a process so far (user + system), from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A loopback source address per 1,000 sockets, so no address runs out of
/// ephemeral ports.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    n: usize,
    bearer: Option<&str>,
) -> Result<Socket, String> {
    let octet = u8::try_from(2 + n / 1000).unwrap_or(250);
    let local: SocketAddr = SocketAddr::from(([127, 0, 0, octet], 0));
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(local).map_err(|e| e.to_string())?;
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().map_err(|_| "header")?,
        );
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

pub async fn next_json(ws: &mut Socket) -> Option<Value> {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

pub async fn wait_for(ws: &mut Socket, kind: &str, limit: Duration) -> Result<Value, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, next_json(ws)).await {
            Ok(Some(v)) if v["type"] == kind => return Ok(v),
            Ok(Some(v)) if v["type"] == "error" => return Err(format!("error frame: {v}")),
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("socket closed before {kind}")),
            Err(_) => return Err(format!("no {kind} within {limit:?}")),
        }
    }
}

/// Latencies in microseconds.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    /// The `q` quantile in milliseconds (sorts the samples).
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        let v = &mut self.0;
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i] as f64 / 1000.0
    }

    pub fn report(&mut self, name: &str) {
        if self.0.is_empty() {
            println!("{name:<28} no samples");
            return;
        }
        println!(
            "{name:<28} n={:<8} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  p99.9={:>7.2} ms  max={:>8.2} ms",
            self.0.len(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            self.quantile_ms(1.0)
        );
    }
}

/// POSTs `body`, retrying while the server says busy (the password pool
/// under a burst of argon2 work answers 503, the login limiter 429).
pub async fn http_json(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Result<Value, String> {
    http_send(client, reqwest::Method::POST, url, token, body).await
}

pub async fn http_send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Result<Value, String> {
    for attempt in 0..20 {
        let mut request = client.request(method.clone(), &url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.as_u16() == 503 || status.as_u16() == 429 {
            tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            continue;
        }
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{url}: {status} {value}"));
        }
        return Ok(value);
    }
    Err(format!("{url}: still busy after 20 attempts"))
}

/// The admin's bearer token (the password the first start wrote).
pub async fn admin_token(client: &reqwest::Client, server: &Server) -> String {
    let password = std::fs::read_to_string(server.data_dir.join("initial-admin-password"))
        .expect("the initial admin password")
        .trim()
        .to_owned();
    let admin = http_json(
        client,
        format!("http://{}/api/v1/auth/login", server.addr),
        None,
        json!({"username": "admin", "password": password}),
    )
    .await
    .expect("admin login");
    admin["token"].as_str().expect("a token").to_owned()
}

/// The samples of the Prometheus text at `/metrics` whose name (with its
/// labels) starts with `prefix`, summed.
pub async fn metric(client: &reqwest::Client, server: &Server, prefix: &str) -> f64 {
    let text = match client
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return f64::NAN,
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .filter(|l| {
            // The name itself must end where the prefix does (or at its labels).
            let rest = &l[prefix.len()..];
            rest.starts_with(' ') || rest.starts_with('{') || prefix.ends_with('{')
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// `model name` of the first CPU and the number of CPUs.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    format!(
        "{} cpu, {model}",
        std::thread::available_parallelism().map_or(0, usize::from)
    )
}

//! Chat load: N citizen chat sockets and M operator consoles against a real
//! `ccu serve` on loopback, citizen messages at a set rate; reports delivery
//! latency percentiles (citizen sends → operator's console receives), the
//! acknowledgement latency (citizen sends → `ack`, i.e. the message is
//! committed), messages/s and the server's RSS.
//!
//! ```text
//! cargo bench --bench chat_load -- --chats 10000 --consoles 500 --rate 2000 --seconds 30
//! ```
//!
//! It starts the release `ccu` that cargo builds with the bench (override
//! with `--server PATH`) on a fresh data
//! directory and SQLite file (or `--database-url postgres://...`), with the
//! demo configuration and these overrides, which a load test needs and a
//! real deployment does not: the per-address limits of the public chat are
//! raised (every citizen here comes from loopback), the URP queue is open
//! around the clock (so the run does not depend on the hour), and the
//! connection cap is raised above N + M. Each operator is created through
//! the admin API with a chat capacity of ⌈N / M⌉, so every chat is in an
//! operator's hands before the measurement starts.
//!
//! The tool and the server share the machine's cores; on a two-core machine
//! the figures are a lower bound of what the server alone can do.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{
    Samples, Server, ServerSetup, Socket, connect, http_json, next_json, rss_kib, wait_for,
};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
struct Options {
    chats: usize,
    consoles: usize,
    rate: u64,
    seconds: u64,
    server: PathBuf,
    database_url: Option<String>,
    redis_url: Option<String>,
    reply_every: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: chat_load [--chats N] [--consoles M] [--rate MSGS_PER_S] [--seconds S] \
         [--server PATH] [--database-url URL] [--redis-url URL] [--reply-every K]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        chats: 1000,
        consoles: 50,
        rate: 500,
        seconds: 20,
        // Cargo builds the package's binary for its benches.
        server: PathBuf::from(env!("CARGO_BIN_EXE_ccu")),
        database_url: None,
        redis_url: None,
        reply_every: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            // What `cargo bench` adds.
            "--bench" => {}
            "--chats" => o.chats = value().parse().unwrap_or_else(|_| usage()),
            "--consoles" => o.consoles = value().parse().unwrap_or_else(|_| usage()),
            "--rate" => o.rate = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => o.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--server" => o.server = PathBuf::from(value()),
            "--database-url" => o.database_url = Some(value()),
            "--redis-url" => o.redis_url = Some(value()),
            "--reply-every" => o.reply_every = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if o.chats == 0 || o.consoles == 0 || o.rate == 0 {
        usage()
    }
    o
}

fn start_server(o: &Options) -> Server {
    let env = [
        (
            "CCU_HTTP__MAX_CONNECTIONS",
            (o.chats + o.consoles + 1000).to_string(),
        ),
        ("CCU_PUBLIC__CHAT_STARTS_PER_ADDRESS", "100000000".into()),
        ("CCU_PUBLIC__CHAT_MESSAGES_PER_ADDRESS", "100000000".into()),
        ("CCU_AUTH__LOGIN_ATTEMPTS_PER_ADDRESS", "100000000".into()),
        ("CCU_QUEUES__URP__SCHEDULE", "h24".into()),
        ("CCU_QUEUES__URP__HOLIDAYS", "false".into()),
        ("CCU_QUEUES__URP__MAX_WAIT_SECONDS", "86400".into()),
    ];
    support::start_server(&ServerSetup {
        binary: &o.server,
        bench: "chat-load",
        database_url: o.database_url.as_deref(),
        redis_url: o.redis_url.as_deref(),
        env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    })
}

struct Shared {
    epoch: Instant,
    delivered: Mutex<Samples>,
    acked: Mutex<Samples>,
    replies: Mutex<Samples>,
    assigned: AtomicUsize,
    delivered_count: AtomicU64,
    acked_count: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// One operator console: goes available, accepts every offer, records the
/// delivery latency of each citizen line (its text carries the send time),
/// and answers one in `reply_every` of them.
async fn console(
    mut ws: Socket,
    shared: Arc<Shared>,
    reply_every: u64,
    stop: tokio_util::sync::CancellationToken,
) {
    let _ = ws
        .send(Message::text(
            json!({"type": "presence", "presence": "available"}).to_string(),
        ))
        .await;
    let mut seen = 0u64;
    let mut sent = 0u64;
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return,
            frame = next_json(&mut ws) => frame,
        };
        let Some(v) = frame else { return };
        match v["type"].as_str() {
            Some("offer") => {
                let offer = v["offer"].clone();
                let _ = ws
                    .send(Message::text(
                        json!({"type": "accept", "offer": offer}).to_string(),
                    ))
                    .await;
            }
            Some("assigned") => {
                shared.assigned.fetch_add(1, Ordering::Relaxed);
            }
            Some("message") if v["from"] == "citizen" => {
                let text = v["text"].as_str().unwrap_or_default();
                if let Some(sent_at) = text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let now = shared.micros();
                    shared
                        .delivered
                        .lock()
                        .await
                        .0
                        .push(now.saturating_sub(sent_at));
                    shared.delivered_count.fetch_add(1, Ordering::Relaxed);
                }
                seen += 1;
                if reply_every > 0 && seen.is_multiple_of(reply_every) {
                    sent += 1;
                    let reply = json!({
                        "type": "message",
                        "conversation_id": v["conversation_id"],
                        "client_id": format!("r{sent}"),
                        "text": format!("risposta {}", shared.micros()),
                    });
                    let _ = ws.send(Message::text(reply.to_string())).await;
                }
            }
            Some("error") => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// One citizen: sends when told to (the pacer gives each chat its turns),
/// records ack latencies and the latency of operator replies.
async fn citizen(
    mut ws: Socket,
    shared: Arc<Shared>,
    mut turns: tokio::sync::mpsc::Receiver<u64>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut pending: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            turn = turns.recv() => {
                let Some(seq) = turn else { return };
                let client_id = format!("c{seq}");
                let now = shared.micros();
                pending.insert(client_id.clone(), now);
                let frame = json!({"type": "message", "client_id": client_id, "text": format!("carico {now} {seq}")});
                if ws.send(Message::text(frame.to_string())).await.is_err() {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            frame = next_json(&mut ws) => {
                let Some(v) = frame else { return };
                match v["type"].as_str() {
                    Some("ack") => {
                        if let Some(sent_at) = v["client_id"].as_str().and_then(|c| pending.remove(c)) {
                            let now = shared.micros();
                            shared.acked.lock().await.0.push(now.saturating_sub(sent_at));
                            shared.acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some("message") if v["from"] == "operator" => {
                        if let Some(sent_at) = v["text"].as_str().and_then(|t| t.split_whitespace().nth(1)).and_then(|t| t.parse::<u64>().ok()) {
                            let now = shared.micros();
                            shared.replies.lock().await.0.push(now.saturating_sub(sent_at));
                        }
                    }
                    Some("error") => { shared.errors.fetch_add(1, Ordering::Relaxed); }
                    _ => {}
                }
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    let server = start_server(&o);
    let pid = server.child.id();
    let addr = server.addr;
    println!(
        "chat load: {} chats, {} consoles, {} messages/s for {} s against {} (pid {pid}), {} cores",
        o.chats,
        o.consoles,
        o.rate,
        o.seconds,
        addr,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("server RSS at start: {} MiB", rss_kib(pid) / 1024);
    let client = reqwest::Client::new();
    let admin_token = support::admin_token(&client, &server).await;

    // Operators, a few at a time (each costs an argon2 hash, then a login).
    let setup = Instant::now();
    let capacity = o.chats.div_ceil(o.consoles);
    let op_password = "carico-di-prova-lungo-abbastanza";
    let mut tokens = Vec::with_capacity(o.consoles);
    let mut made = futures_util::stream::iter(0..o.consoles)
        .map(|i| {
            let client = client.clone();
            let admin_token = admin_token.clone();
            async move {
                let username = format!("op{i:04}");
                http_json(
                    &client,
                    format!("http://{addr}/api/v1/users"),
                    Some(&admin_token),
                    json!({
                        "username": username, "display_name": format!("Operatore {i}"),
                        "password": op_password, "role": "operator",
                        "skills": {"informazioni": 5}, "languages": ["it"],
                        "capacity": {"chat": capacity},
                    }),
                )
                .await
                .expect("operator created");
                let login = http_json(
                    &client,
                    format!("http://{addr}/api/v1/auth/login"),
                    None,
                    json!({"username": username, "password": op_password}),
                )
                .await
                .expect("operator login");
                login["token"].as_str().expect("a token").to_owned()
            }
        })
        .buffer_unordered(4);
    while let Some(token) = made.next().await {
        tokens.push(token);
    }
    println!(
        "{} operators created and logged in in {:.1} s",
        tokens.len(),
        setup.elapsed().as_secs_f64()
    );

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        delivered: Mutex::default(),
        acked: Mutex::default(),
        replies: Mutex::default(),
        assigned: AtomicUsize::new(0),
        delivered_count: AtomicU64::new(0),
        acked_count: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    let consoles_start = Instant::now();
    for (i, token) in tokens.iter().enumerate() {
        let mut ws = connect(addr, "/ws/operator", i, Some(token))
            .await
            .expect("console connects");
        wait_for(&mut ws, "hello", Duration::from_secs(30))
            .await
            .expect("hello");
        tasks.push(tokio::spawn(console(
            ws,
            shared.clone(),
            o.reply_every,
            stop.clone(),
        )));
    }
    println!(
        "{} consoles connected in {:.1} s; RSS {} MiB",
        tokens.len(),
        consoles_start.elapsed().as_secs_f64(),
        rss_kib(pid) / 1024
    );

    // Citizens: open and start, a few hundred at a time.
    let chats_start = Instant::now();
    let started = futures_util::stream::iter(0..o.chats)
        .map(|i| async move {
            let mut ws = connect(addr, "/ws/chat", 1000 + i, None).await?;
            ws.send(Message::text(
                json!({"type": "start", "topic": "urp", "language": "it"}).to_string(),
            ))
            .await
            .map_err(|e| e.to_string())?;
            wait_for(&mut ws, "started", Duration::from_secs(120)).await?;
            Ok::<Socket, String>(ws)
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    let mut citizens = Vec::with_capacity(o.chats);
    for result in started {
        match result {
            Ok(ws) => citizens.push(ws),
            Err(err) => {
                eprintln!("a chat did not start: {err}");
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    println!(
        "{} chats started in {:.1} s; RSS {} MiB",
        citizens.len(),
        chats_start.elapsed().as_secs_f64(),
        rss_kib(pid) / 1024
    );
    let mut turns = Vec::with_capacity(citizens.len());
    for ws in citizens {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        turns.push(tx);
        tasks.push(tokio::spawn(citizen(ws, shared.clone(), rx, stop.clone())));
    }
    // Every chat in an operator's hands before measuring.
    let assign_deadline = Instant::now() + Duration::from_secs(600);
    while shared.assigned.load(Ordering::Relaxed) < turns.len() && Instant::now() < assign_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{} of {} chats assigned after {:.1} s; RSS {} MiB",
        shared.assigned.load(Ordering::Relaxed),
        turns.len(),
        chats_start.elapsed().as_secs_f64(),
        rss_kib(pid) / 1024
    );

    // The measurement: messages at `rate`, round robin over the chats.
    let total = o.rate * o.seconds;
    let interval = Duration::from_secs_f64(1.0 / o.rate as f64);
    let run_start = Instant::now();
    let mut peak_rss = 0;
    let mut ticker = tokio::time::interval(interval.max(Duration::from_micros(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let per_tick = (o.rate as f64 * ticker.period().as_secs_f64()).max(1.0);
    let mut credit = 0.0;
    let mut seq = 0u64;
    let mut last_rss = Instant::now();
    while seq < total {
        ticker.tick().await;
        credit += per_tick;
        while credit >= 1.0 && seq < total {
            credit -= 1.0;
            let chat = usize::try_from(seq).unwrap_or(0) % turns.len();
            if turns[chat].try_send(seq).is_err() {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            seq += 1;
        }
        if last_rss.elapsed() > Duration::from_millis(500) {
            peak_rss = peak_rss.max(rss_kib(pid));
            last_rss = Instant::now();
        }
    }
    let send_secs = run_start.elapsed().as_secs_f64();
    // Let the last messages arrive.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while shared.delivered_count.load(Ordering::Relaxed) < total && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peak_rss = peak_rss.max(rss_kib(pid));
    let elapsed = run_start.elapsed().as_secs_f64();
    stop.cancel();
    let delivered = shared.delivered_count.load(Ordering::Relaxed);
    let acked = shared.acked_count.load(Ordering::Relaxed);
    println!(
        "sent {total} in {send_secs:.1} s ({:.0}/s offered); acked {acked}; delivered {delivered} \
         ({:.0}/s over {elapsed:.1} s); lost {}; errors {}",
        total as f64 / send_secs,
        delivered as f64 / elapsed,
        total.saturating_sub(delivered),
        shared.errors.load(Ordering::Relaxed)
    );
    shared
        .delivered
        .lock()
        .await
        .report("citizen→operator delivery");
    shared.acked.lock().await.report("citizen ack (stored)");
    shared
        .replies
        .lock()
        .await
        .report("operator→citizen delivery");
    println!(
        "server RSS: peak {} MiB during the run, {} MiB now",
        peak_rss / 1024,
        rss_kib(pid) / 1024
    );
    for task in tasks {
        task.abort();
    }
    drop(server);
}

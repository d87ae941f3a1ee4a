//! Call load with sipp (Debian package sip-tester) against a real
//! `ccu serve` on loopback: the voice benchmarks of issue 5.
//!
//! ```text
//! cargo bench --bench call_load -- --mode ivr --rate 300 --seconds 60
//! cargo bench --bench call_load -- --mode overload --rate 300 --seconds 30
//! cargo bench --bench call_load -- --mode bridge --calls 500 --talk-seconds 60
//! ```
//!
//! - `ivr`: calls at `--rate` a second for `--seconds`, each answered by the
//!   IVR (which plays its menu for `--hold-ms`) and hung up by the caller
//!   (tools/sipp/ivr_call.xml). Reports successful and failed calls, sipp's
//!   retransmissions, the INVITE → 200 time (sipp's `-trace_rtt`; its clock
//!   ticks in milliseconds) and the server's CPU. The call-rate limit is
//!   set above the offered rate, so that it does not hide anything.
//! - `overload`: the server's `voice.max_calls_per_second` set to `--rate`,
//!   then calls offered at twice that for `--seconds` (every call is either
//!   answered or refused with `503` at once: none may time out), then at
//!   `--rate` again for `--seconds` (none may be refused: it recovered).
//! - `bridge`: `--calls` operators (made through the admin API, each with a
//!   SIP line and a console that is available), one sipp registering all
//!   their phones at 20 a second (tools/sipp/bridge_phone_*.xml), then `--calls` callers
//!   (tools/sipp/bridge_caller.xml) who press 1 by SIP INFO, are queued,
//!   offered and bridged, and talk for `--talk-seconds`: 20 ms PCMU both
//!   ways (sipp's `rtp_stream`). Once every call is bridged it measures for
//!   `--seconds`: the server's CPU, the datagrams read on the machine
//!   against what the streams send, and the kernel's drops on the server's
//!   sockets (`/proc/net/udp`); after the calls: the packets relayed each
//!   way against the streams' rate, the relay's drops and send errors.
//!
//! The server is the release `ccu` cargo builds with the bench (`--server
//! PATH` to use another) on a fresh SQLite file (or `--database-url`), with
//! the demo configuration and what a load test needs: a trunk from
//! 127.0.0.1 for the unified number, the queues open around the clock,
//! system-chosen RTP ports and MD5 digests (sipp's); the flood limit per
//! address stays on (the trunk's calls are exempt from it). sipp and the server
//! share the machine's cores: on two cores the figures are a lower bound.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{Samples, Server, ServerSetup};
use tokio_tungstenite::tungstenite::Message;

const NUMBER: &str = "+390612345678";
const PHONE_PASSWORD: &str = "telefono-di-prova-lungo";

#[derive(Debug, Clone)]
struct Options {
    mode: String,
    rate: u64,
    seconds: u64,
    hold_ms: u64,
    calls: usize,
    talk_seconds: u64,
    transport: String,
    server: PathBuf,
    database_url: Option<String>,
    redis_url: Option<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: call_load --mode ivr|overload|bridge [--rate CALLS_PER_S] [--seconds S] \
         [--hold-ms MS] [--calls N] [--talk-seconds S] [--transport u1|t1] [--server PATH] \
         [--database-url URL] [--redis-url URL]"
    );
    std::process::exit(2)
}

fn options() -> Options {
    let mut o = Options {
        mode: "ivr".into(),
        rate: 300,
        seconds: 30,
        hold_ms: 1000,
        calls: 500,
        talk_seconds: 60,
        transport: "u1".into(),
        server: PathBuf::from(env!("CARGO_BIN_EXE_ccu")),
        database_url: None,
        redis_url: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let mut number = || value().parse::<u64>().unwrap_or_else(|_| usage());
        match arg.as_str() {
            "--bench" => {}
            "--mode" => o.mode = value(),
            "--rate" => o.rate = number(),
            "--seconds" => o.seconds = number(),
            "--hold-ms" => o.hold_ms = number(),
            "--calls" => o.calls = usize::try_from(number()).unwrap_or_else(|_| usage()),
            "--talk-seconds" => o.talk_seconds = number(),
            "--transport" => o.transport = value(),
            "--server" => o.server = PathBuf::from(value()),
            "--database-url" => o.database_url = Some(value()),
            "--redis-url" => o.redis_url = Some(value()),
            _ => usage(),
        }
    }
    if !matches!(o.mode.as_str(), "ivr" | "overload" | "bridge") || o.rate == 0 {
        usage()
    }
    o
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn server(o: &Options, max_calls: usize, max_calls_per_second: u64) -> Server {
    let env = [
        (
            "CCU_SIP__TRUNKS",
            format!(r#"[{{name="carrier",sources=["127.0.0.1/32"],numbers=["{NUMBER}"]}}]"#),
        ),
        ("CCU_SIP__REGISTRAR__ALGORITHMS", r#"["MD5"]"#.into()),
        ("CCU_VOICE__RTP_PORTS", r#""0""#.into()),
        ("CCU_VOICE__MEDIA_ADDRESS", "127.0.0.1".into()),
        ("CCU_VOICE__MAX_CALLS", max_calls.to_string()),
        (
            "CCU_VOICE__MAX_CALLS_PER_SECOND",
            max_calls_per_second.to_string(),
        ),
        ("CCU_VOICE__RING_TIMEOUT_SECONDS", "60".into()),
        ("CCU_HTTP__MAX_CONNECTIONS", (o.calls + 1000).to_string()),
        ("CCU_AUTH__LOGIN_ATTEMPTS_PER_ADDRESS", "100000000".into()),
        ("CCU_QUEUES__URP__SCHEDULE", "h24".into()),
        ("CCU_QUEUES__URP__HOLIDAYS", "false".into()),
        ("CCU_QUEUES__ANAGRAFE__SCHEDULE", "h24".into()),
        ("CCU_QUEUES__ANAGRAFE__HOLIDAYS", "false".into()),
        ("CCU_QUEUES__ANAGRAFE__MAX_WAIT_SECONDS", "86400".into()),
    ];
    support::start_server(&ServerSetup {
        binary: &o.server,
        bench: "call-load",
        database_url: o.database_url.as_deref(),
        redis_url: o.redis_url.as_deref(),
        env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    })
}

/// What one sipp run of a client scenario left behind.
#[derive(Debug, Default)]
struct SippRun {
    ok: bool,
    successful: u64,
    failed: u64,
    retransmissions: u64,
    /// Timeouts of the scenario's steps (an INVITE or BYE never answered).
    timeouts: u64,
    /// `503` responses received.
    refused: u64,
    /// INVITE → 200, microseconds.
    answer: Samples,
    seconds: f64,
}

fn sipp_binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("sipp"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            eprintln!("sipp not found on PATH: apt-get install -y sip-tester");
            std::process::exit(1)
        })
}

fn read_csv(dir: &Path, suffix: &str) -> Vec<Vec<String>> {
    let Some(path) = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
    }) else {
        return Vec::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(';').map(str::to_owned).collect())
        .collect()
}

/// The last row of sipp's CSV `suffix` as (column, value) pairs.
fn last_row(dir: &Path, suffix: &str) -> Vec<(String, String)> {
    let rows = read_csv(dir, suffix);
    match (rows.first(), rows.last()) {
        (Some(header), Some(last)) if rows.len() > 1 => {
            header.iter().cloned().zip(last.iter().cloned()).collect()
        }
        _ => Vec::new(),
    }
}

/// Calls of `scenario` at `rate` a second for `seconds`.
async fn sipp_calls(
    o: &Options,
    server: &Server,
    scenario: &str,
    rate: u64,
    seconds: u64,
    extra: &[&str],
) -> SippRun {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let calls = (rate * seconds).to_string();
    let rate_arg = rate.to_string();
    let started = Instant::now();
    let output = tokio::process::Command::new(sipp_binary())
        .current_dir(scratch.path())
        .arg("-sf")
        .arg(repo().join("tools/sipp").join(scenario))
        .args(["-s", NUMBER, "-t", &o.transport, "-nostdin"])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-m", &calls, "-r", &rate_arg, "-max_socket", "1000"])
        .args([
            "-trace_rtt",
            "-rtt_freq",
            "100",
            "-trace_counts",
            "-trace_stat",
        ])
        .args(["-fd", "1", "-timeout", "600s", "-trace_err"])
        .args(extra)
        .arg(server.sip_addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .expect("sipp runs");
    let mut run = SippRun {
        ok: output.success(),
        seconds: started.elapsed().as_secs_f64(),
        ..SippRun::default()
    };
    let number = |row: &[(String, String)], column: &str| -> u64 {
        row.iter()
            .find(|(k, _)| k == column)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = last_row(scratch.path(), "_.csv");
    run.successful = number(&stat, "SuccessfulCall(C)");
    run.failed = number(&stat, "FailedCall(C)");
    run.retransmissions = number(&stat, "Retransmissions(C)");
    let counts = last_row(scratch.path(), "_counts.csv");
    for (column, value) in &counts {
        let value: u64 = value.parse().unwrap_or(0);
        if column.ends_with("_Timeout") {
            run.timeouts += value;
        }
        if column.ends_with("_503_Recv") {
            run.refused += value;
        }
    }
    for row in read_csv(scratch.path(), "_rtt.csv").iter().skip(1) {
        if let Some(ms) = row.get(1).and_then(|v| v.parse::<f64>().ok()) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            run.answer.0.push((ms * 1000.0) as u64);
        }
    }
    if !run.ok && run.failed == 0 {
        let errors = read_csv(scratch.path(), "_errors.log");
        eprintln!(
            "sipp exited with {:?}; errors: {:?}",
            output.code(),
            errors.iter().take(5).collect::<Vec<_>>()
        );
    }
    run
}

fn report(name: &str, run: &mut SippRun, cpu: Duration) {
    let total = run.successful + run.failed;
    // A refused call ends as the scenario says (ACK of the 503): sipp
    // counts it successful.
    println!(
        "{name}: {total} calls in {:.1} s ({:.0}/s): {} answered, {} refused with 503, {} failed \
         ({} timeouts), {} retransmissions; server CPU {:.0}% of one core",
        run.seconds,
        total as f64 / run.seconds,
        run.successful.saturating_sub(run.refused),
        run.refused,
        run.failed,
        run.timeouts,
        run.retransmissions,
        100.0 * cpu.as_secs_f64() / run.seconds
    );
    run.answer.report("  INVITE → 200 (answered)");
}

/// IVR calls (tools/sipp/ivr_call.xml, held `--hold-ms`) at `rate` for
/// `--seconds`, with the server's CPU over them; reported under `name`.
async fn ivr_run(o: &Options, server: &Server, rate: u64, name: &str) -> SippRun {
    let pid = server.child.id();
    let hold = o.hold_ms.to_string();
    let cpu = support::cpu_time(pid);
    let mut run = sipp_calls(o, server, "ivr_call.xml", rate, o.seconds, &["-d", &hold]).await;
    let cpu = support::cpu_time(pid).saturating_sub(cpu);
    report(name, &mut run, cpu);
    run
}

async fn ivr(o: &Options) -> bool {
    let server = server(o, 100_000, o.rate * 4);
    let name = format!("IVR calls at {}/s held {} ms", o.rate, o.hold_ms);
    let mut run = ivr_run(o, &server, o.rate, &name).await;
    println!(
        "  server RSS after the run: {} MiB",
        support::rss_kib(server.child.id()) / 1024
    );
    let p99 = run.answer.quantile_ms(0.99);
    let pass = run.ok
        && run.failed == 0
        && run.refused == 0
        && run.successful == o.rate * o.seconds
        && p99 < 50.0;
    println!(
        "  {}: zero failed calls and 99% of INVITE → 200 under 50 ms (p99 {p99:.1} ms)",
        if pass { "PASS" } else { "FAIL" }
    );
    pass
}

async fn overload(o: &Options) -> bool {
    let server = server(o, 100_000, o.rate);
    let client = reqwest::Client::new();
    let refused_before = support::metric(&client, &server, "ccu_voice_calls_refused_total").await;
    let name = format!(
        "surge at {}/s (voice.max_calls_per_second = {})",
        o.rate * 2,
        o.rate
    );
    let mut surge = ivr_run(o, &server, o.rate * 2, &name).await;
    let refused_surge =
        support::metric(&client, &server, "ccu_voice_calls_refused_total").await - refused_before;
    println!("  the server counted {refused_surge:.0} calls refused");
    // The carrier backs off; the load drops to what the server sustains.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ivr_run(o, &server, o.rate, &format!("then at {}/s", o.rate)).await;
    let surge_ok = surge.ok
        && surge.failed == 0
        && surge.timeouts == 0
        && surge.refused > 0
        && surge.successful == o.rate * 2 * o.seconds
        && surge.answer.quantile_ms(0.99) < 50.0;
    let after_ok = after.ok && after.failed == 0 && after.refused == 0;
    println!(
        "  {}: in the surge every call answered or refused at once (no timeout), \
         99% answered under 50 ms; {}: afterwards no call refused or failed",
        if surge_ok { "PASS" } else { "FAIL" },
        if after_ok { "PASS" } else { "FAIL" }
    );
    surge_ok && after_ok
}

/// Machine-wide UDP counters (`Udp:` of /proc/net/snmp): (InDatagrams,
/// RcvbufErrors, SndbufErrors).
fn udp_counters() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(header), Some(values)) = (lines.next(), lines.next()) else {
        return (0, 0, 0);
    };
    let pairs: Vec<(&str, u64)> = header
        .split_whitespace()
        .zip(values.split_whitespace())
        .map(|(k, v)| (k, v.parse().unwrap_or(0)))
        .collect();
    let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map_or(0, |p| p.1);
    (get("InDatagrams"), get("RcvbufErrors"), get("SndbufErrors"))
}

/// The server's UDP sockets now and the datagrams the kernel dropped on
/// them since they were opened (their receive buffers were full): the
/// `drops` column of /proc/net/udp for the inodes of /proc/PID/fd.
fn server_socket_drops(pid: u32) -> (usize, u64) {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut sockets = 0;
    let mut drops = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(9).is_some_and(|inode| inodes.contains(*inode)) {
                sockets += 1;
                drops += fields
                    .last()
                    .and_then(|d| d.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (sockets, drops)
}

/// Sum of the samples of `name` whose labels contain every `labels` part.
fn sum_metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|part| l.contains(part)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn bridge(o: &Options) -> bool {
    let n = o.calls;
    let server = server(o, n * 2, 1000);
    let pid = server.child.id();
    let addr = server.addr;
    let client = reqwest::Client::new();
    let admin = support::admin_token(&client, &server).await;

    // Operators with a SIP line each, a few at a time (argon2 per user).
    let setup = Instant::now();
    let password = "carico-di-prova-lungo-abbastanza";
    let tokens: Vec<String> = futures_util::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let admin = admin.clone();
            async move {
                let username = format!("op{i:04}");
                let user = support::http_json(
                    &client,
                    format!("http://{addr}/api/v1/users"),
                    Some(&admin),
                    json!({
                        "username": username, "display_name": format!("Operatore {i}"),
                        "password": password, "role": "operator",
                        "skills": {"anagrafe": 8}, "languages": ["it"],
                        "capacity": {"voice": 1},
                    }),
                )
                .await
                .expect("operator created");
                let id = user["id"].as_i64().expect("an id");
                support::http_send(
                    &client,
                    reqwest::Method::PUT,
                    format!("http://{addr}/api/v1/users/{id}/sip"),
                    Some(&admin),
                    json!({"username": format!("line{i:04}"), "password": PHONE_PASSWORD}),
                )
                .await
                .expect("SIP line set");
                let login = support::http_json(
                    &client,
                    format!("http://{addr}/api/v1/auth/login"),
                    None,
                    json!({"username": username, "password": password}),
                )
                .await
                .expect("operator login");
                login["token"].as_str().expect("a token").to_owned()
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    println!(
        "{n} operators with SIP lines made in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // Their consoles, available; offers are taken by the phones.
    let stop = tokio_util::sync::CancellationToken::new();
    let offers = Arc::new(AtomicU64::new(0));
    for (i, token) in tokens.iter().enumerate() {
        let mut ws = support::connect(addr, "/ws/operator", i, Some(token))
            .await
            .expect("console connects");
        support::wait_for(&mut ws, "hello", Duration::from_secs(30))
            .await
            .expect("hello");
        ws.send(Message::text(
            json!({"type": "presence", "presence": "available"}).to_string(),
        ))
        .await
        .expect("presence sent");
        let stop = stop.clone();
        let offers = offers.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    frame = support::next_json(&mut ws) => match frame {
                        Some(v) if v["type"] == "offer" => { offers.fetch_add(1, Ordering::Relaxed); }
                        Some(_) => {}
                        None => return,
                    },
                }
            }
        });
    }

    // One sipp for all the phones: each line registers, then waits. They
    // share one address, so they register at 20 a second (40 requests):
    // under the flood limit for one address (50/s), which stays on.
    let phones_dir = tempfile::tempdir().expect("a scratch directory");
    let mut lines = String::from("SEQUENTIAL\n");
    for i in 0..n {
        // sipp expands an [authentication] keyword that comes from a field.
        lines.push_str(&format!(
            "line{i:04};[authentication username=line{i:04} password={PHONE_PASSWORD}]\n"
        ));
    }
    std::fs::write(phones_dir.path().join("lines.csv"), lines).expect("lines written");
    // 1 s of G.711 u-law silence, looped by rtp_stream.
    let talk = vec![0xFF_u8; 8000];
    std::fs::write(phones_dir.path().join("talk.pcmu"), &talk).expect("audio written");
    let callers_dir = tempfile::tempdir().expect("a scratch directory");
    std::fs::write(callers_dir.path().join("talk.pcmu"), &talk).expect("audio written");
    let hold_for = ((o.talk_seconds + 600) * 1000).to_string();
    let n_arg = n.to_string();
    let mut phones = tokio::process::Command::new(sipp_binary())
        .current_dir(phones_dir.path())
        .arg("-sf")
        .arg(repo().join("tools/sipp/bridge_phone_register.xml"))
        .arg("-oocsf")
        .arg(repo().join("tools/sipp/bridge_phone_answer.xml"))
        .args(["-inf", "lines.csv", "-t", &o.transport, "-nostdin"])
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", "30000"])
        .args(["-m", &n_arg, "-r", "20"])
        .args(["-d", &hold_for, "-trace_err"])
        .arg(server.sip_addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let registered = support::metric(&client, &server, "ccu_sip_registered_devices").await;
        if registered >= n as f64 {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("only {registered} of {n} phones registered; sipp said:");
            for row in read_csv(phones_dir.path(), "_errors.log").iter().take(20) {
                eprintln!("  {}", row.join(";"));
            }
            let _ = phones.kill().await;
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{n} consoles available and phones registered after {:.1} s; server RSS {} MiB",
        setup.elapsed().as_secs_f64(),
        support::rss_kib(pid) / 1024
    );

    // The callers, 50 a second, each talking for talk_seconds.
    let talk_ms = (o.talk_seconds * 1000).to_string();
    let callers_path = callers_dir.path().to_owned();
    let sip_addr = server.sip_addr;
    let transport = o.transport.clone();
    let callers = tokio::spawn(async move {
        tokio::process::Command::new(sipp_binary())
            .current_dir(&callers_path)
            .arg("-sf")
            .arg(repo().join("tools/sipp/bridge_caller.xml"))
            .args(["-s", NUMBER, "-t", &transport, "-nostdin"])
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", "40000"])
            .args(["-m", &n_arg, "-l", &n_arg, "-r", "50"])
            .args([
                "-d",
                &talk_ms,
                "-timeout",
                "900s",
                "-trace_err",
                "-trace_stat",
            ])
            .args(["-fd", "1"])
            .arg(sip_addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
    });
    let ramp = Instant::now();
    let deadline = ramp + Duration::from_secs(o.talk_seconds.min(300));
    let mut answered = 0.0;
    while Instant::now() < deadline {
        answered = support::metric(&client, &server, "ccu_voice_calls_answered_total").await;
        if answered >= n as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{answered:.0} of {n} calls bridged after {:.1} s ({} offers seen by the consoles)",
        ramp.elapsed().as_secs_f64(),
        offers.load(Ordering::Relaxed)
    );
    let mut pass = answered >= n as f64;

    // The measurement window: every call bridged and talking.
    let window = Duration::from_secs(
        o.seconds
            .min(o.talk_seconds.saturating_sub(ramp.elapsed().as_secs() + 5)),
    );
    let relayed = |to: &'static str| {
        let client = client.clone();
        let server = &server;
        async move {
            support::metric(
                &client,
                server,
                &format!("ccu_rtp_relayed_packets_total{{to=\"{to}\"}}"),
            )
            .await
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to_operator = relayed("operator").await;
    let to_caller = relayed("caller").await;
    let send_errors = support::metric(&client, &server, "ccu_rtp_send_errors_total").await;
    let udp = udp_counters();
    let cpu = support::cpu_time(pid);
    let started = Instant::now();
    // The relay counters are added at the end of each call; the kernel's
    // count of datagrams taken by the server's sockets shows the flow now.
    tokio::time::sleep(window).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = support::cpu_time(pid).saturating_sub(cpu);
    let udp_after = udp_counters();
    let calls_now = support::metric(&client, &server, "ccu_voice_calls").await;
    let received = udp_after.0.saturating_sub(udp.0);
    // Each bridged call: 50 packets a second from each side, read by the
    // server's two sockets (the sipps' rtp_stream reads nothing: what
    // reaches them shows as their receive-buffer drops).
    let expected = 2.0 * 50.0 * calls_now * seconds;
    println!(
        "window of {seconds:.1} s with {calls_now:.0} calls up: server CPU {:.0}% of one core \
         ({:.2}% per call); RSS {} MiB; UDP datagrams read on the machine {:.0}/s \
         ({:.0}/s expected: {calls_now:.0} calls × 2 directions × 50/s); receive-buffer drops \
         {}, send-buffer drops {}",
        100.0 * cpu.as_secs_f64() / seconds,
        100.0 * cpu.as_secs_f64() / seconds / calls_now.max(1.0),
        support::rss_kib(pid) / 1024,
        received as f64 / seconds,
        expected / seconds,
        udp_after.1.saturating_sub(udp.1),
        udp_after.2.saturating_sub(udp.2),
    );
    let (sockets, socket_drops) = server_socket_drops(pid);
    println!(
        "  the server's {sockets} UDP sockets: {socket_drops} datagrams dropped by the kernel \
         (receive buffer full) since they opened (the rest of the machine's drops are the \
         sipps': their rtp_stream does not read what it receives)"
    );
    pass &= socket_drops == 0;

    // The calls end by themselves (the callers hang up after talk_seconds).
    let status = callers.await;
    let ended = Instant::now();
    while support::metric(&client, &server, "ccu_voice_calls").await > 0.0
        && ended.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to_operator = relayed("operator").await - to_operator;
    let to_caller = relayed("caller").await - to_caller;
    let send_errors =
        support::metric(&client, &server, "ccu_rtp_send_errors_total").await - send_errors;
    let text = match client
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let dropped = sum_metric(&text, "ccu_rtp_dropped_packets_total", &[]);
    // The caller's audio while the IVR and the queue play to it is not
    // relayed, by design; anything else dropped is a loss.
    let before_bridge = sum_metric(
        &text,
        "ccu_rtp_dropped_packets_total",
        &["from=\"caller\"", "reason=\"not_bridged\""],
    );
    let callers_ok = matches!(status, Ok(Ok(s)) if s.success());
    println!(
        "callers' sipp {}; relayed over the calls: {to_operator:.0} packets to the operators, \
         {to_caller:.0} to the callers; relay send errors {send_errors:.0}; not relayed: \
         {before_bridge:.0} of the callers' before the bridge (IVR, queue), {:.0} others",
        if callers_ok {
            "succeeded"
        } else {
            "reported failed calls"
        },
        dropped - before_bridge
    );
    pass &= dropped - before_bridge == 0.0;
    // Each call talks for about talk_seconds from its start, less the
    // second or so of the IVR and the offer: what the relay carried must be
    // about what the streams sent (50 packets a second each way).
    let floor = 0.95 * n as f64 * 50.0 * (o.talk_seconds as f64 - 2.0);
    println!(
        "  relayed each way at least {floor:.0} packets expected from {n} × 50/s × ({} s - 2 s) × 0.95: {}",
        o.talk_seconds,
        if to_operator >= floor && to_caller >= floor {
            "yes"
        } else {
            "NO"
        }
    );
    pass &= to_operator >= floor && to_caller >= floor;
    pass &= callers_ok && send_errors == 0.0;
    stop.cancel();
    let _ = phones.kill().await;
    println!(
        "  {}: {n} concurrent bridged calls, RTP both ways, no packet lost by the relay or the kernel",
        if pass { "PASS" } else { "FAIL" }
    );
    pass
}

#[tokio::main]
async fn main() {
    let o = options();
    println!(
        "call load ({}) on {}; sipp {}",
        o.mode,
        support::machine(),
        std::process::Command::new(sipp_binary())
            .arg("-v")
            .output()
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find(|l| l.contains("SIPp v"))
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_default()
    );
    let pass = match o.mode.as_str() {
        "ivr" => ivr(&o).await,
        "overload" => overload(&o).await,
        _ => bridge(&o).await,
    };
    std::process::exit(if pass { 0 } else { 1 });
}

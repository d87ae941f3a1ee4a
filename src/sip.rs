//! The voice channel in the server (issue 5): [`bind`] takes `sip_addr`
//! (UDP and TCP on one port), [`start`] runs the `ccu_channels` SIP
//! endpoint on it with the store's SIP accounts as the registrar's
//! credentials, and the transaction user here decides what happens to
//! the requests the endpoint does not answer itself.
//!
//! ```text
//!  phones ──REGISTER──▶ endpoint ─▶ registrar ─▶ StoreCredentials (sip_accounts)
//!  trunk ───INVITE────▶ endpoint ─▶ transaction_user ─▶ TrunkGate: 403 / 404 / 407 / accept
//!                                                          accept ─▶ Voice::incoming (480 without [ivr])
//! ```
//!
//! OPTIONS, CANCEL and what validation refuses are answered inside the
//! endpoint. [`export_metrics`] copies the endpoint's counters into the
//! Prometheus registry when `/metrics` is scraped.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ccu_channels::sip::endpoint::{IncomingRequest, SipEndpoint, SipHandle};
use ccu_channels::sip::message::{HeaderName, Method, StatusCode};
use ccu_channels::sip::trunk::{Admission, TrunkGate};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::store::sip::StoreCredentials;

/// The SIP sockets, bound before anything is served.
pub struct Bound {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// The bound address (the same port for UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `sip_addr` for UDP and TCP (with port 0, one free port for both).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<Bound> {
    let (udp, tcp) = SipEndpoint::bind(addr)
        .await
        .with_context(|| format!("binding sip_addr {addr} (UDP and TCP)"))?;
    let addr = udp.local_addr()?;
    Ok(Bound { udp, tcp, addr })
}

/// The running voice channel.
pub struct Running {
    endpoint: SipEndpoint,
    tu: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Resolves once the endpoint and the transaction user have stopped
    /// (after the shutdown token is cancelled: pending requests got `503`).
    pub async fn stopped(self) {
        self.endpoint.wait().await;
        let _ = self.tu.await;
    }
}

/// Starts the endpoint on `bound` and the transaction user; the endpoint's
/// handle goes into `state.sip` for the API and `/metrics`.
pub fn start(
    state: &AppState,
    bound: Bound,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let config = state.settings.sip.clone();
    let mut secret = [0_u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let gate = TrunkGate::new(&config, secret).map_err(|e| anyhow::anyhow!("sip.{e}"))?;
    let credentials = StoreCredentials {
        store: state.store.clone(),
        realm: config.registrar.realm.clone(),
    };
    // The endpoint outlives the calls by a moment at shutdown: each call
    // hangs up with a BYE (the carrier can tell the caller, and reroute),
    // which needs the endpoint to send it and hear its 200.
    let endpoint_stop = CancellationToken::new();
    let (endpoint, requests) = SipEndpoint::start(
        config,
        bound.udp,
        Some(bound.tcp),
        credentials,
        endpoint_stop.clone(),
    )
    .context("starting the SIP endpoint")?;
    if state.sip.set(endpoint.handle()).is_err() {
        anyhow::bail!("the SIP endpoint was started twice");
    }
    let voice = crate::voice::start(state, endpoint.handle(), shutdown.clone())
        .context("starting the call manager")?;
    tokio::spawn(stop_after_calls(
        shutdown.clone(),
        endpoint_stop,
        voice.clone(),
    ));
    let tu = tokio::spawn(transaction_user(requests, gate, shutdown, voice));
    Ok(Running { endpoint, tu })
}

fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Once `shutdown` fires, waits for the calls to hang up (at most 2 s:
/// a BYE's transaction over UDP is answered in a round trip, retransmitted
/// after 500 ms), then stops the endpoint.
async fn stop_after_calls(
    shutdown: CancellationToken,
    endpoint: CancellationToken,
    voice: Option<crate::voice::Voice>,
) {
    shutdown.cancelled().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while voice.as_ref().is_some_and(|v| v.calls() > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    endpoint.cancel();
}

/// Requests for the TU: a call's requests (by Call-ID) go to it; new
/// INVITEs through the trunk gate to the call manager; in-dialog requests
/// of no call get 481.
async fn transaction_user(
    mut requests: mpsc::Receiver<IncomingRequest>,
    mut gate: TrunkGate,
    shutdown: CancellationToken,
    voice: Option<crate::voice::Voice>,
) {
    let mut purge = tokio::time::interval(Duration::from_secs(60));
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = purge.tick() => {
                gate.purge(wall_clock());
                continue;
            }
            incoming = requests.recv() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
        };
        // Requests of a call in progress (BYE, ACK, INFO, REFER, re-INVITE)
        // go to it (src/voice.rs).
        let incoming = match &voice {
            Some(voice) => match voice.dispatch(incoming).await {
                Some(incoming) => incoming,
                None => continue,
            },
            None => incoming,
        };
        let request = &incoming.request;
        let to_tag = incoming.handle.to_tag();
        let response = match request.method {
            // The ACK of a 2xx: no dialogs yet, so nothing to absorb.
            Method::Ack => continue,
            // A re-INVITE (its To has a tag) for a dialog we do not have
            // (RFC 3261 §12.2.2).
            Method::Invite if request.headers.to().is_ok_and(|to| to.tag().is_some()) => {
                request.response(StatusCode::CALL_DOES_NOT_EXIST, to_tag)
            }
            Method::Invite => {
                match gate.admit(request, incoming.source, wall_clock(), to_tag) {
                    Admission::Accept(call) => {
                        metrics::counter!("ccu_sip_invites_total", "status" => "accepted")
                            .increment(1);
                        if let Some(voice) = &voice {
                            voice.incoming(incoming, call).await;
                            continue;
                        }
                        tracing::info!(
                            trunk = %call.trunk,
                            called = %call.called.number,
                            queue = %call.called.queue,
                            caller = call.caller.as_ref().map(|c| c.as_str()).unwrap_or("anonymous"),
                            source = %incoming.source,
                            "incoming call accepted from a trunk; no [ivr] configured, answering 480"
                        );
                        // RFC 3326: why, for the carrier's records.
                        let mut response =
                            request.response(StatusCode::TEMPORARILY_UNAVAILABLE, to_tag);
                        response.headers.push(
                            HeaderName::Reason,
                            "SIP;cause=480;text=\"voice calls are not configured\"",
                        );
                        response
                    }
                    Admission::Refuse(response) => {
                        tracing::info!(
                            status = response.status.as_u16(),
                            reason = %response.reason,
                            source = %incoming.source,
                            "incoming call refused"
                        );
                        response
                    }
                }
            }
            // RFC 3261 §12.2.2: a request within a dialog we do not have.
            _ => request.response(StatusCode::CALL_DOES_NOT_EXIST, to_tag),
        };
        if request.method == Method::Invite {
            metrics::counter!("ccu_sip_invites_total", "status" => response.status.as_u16().to_string())
                .increment(1);
        }
        let _ = incoming.handle.respond(response).await;
    }
}

/// Copies the endpoint's counters into the Prometheus registry (called by
/// `/metrics` before rendering).
pub fn export_metrics(state: &AppState) {
    let Some(sip) = state.sip.get() else {
        return;
    };
    let stats = sip.stats();
    for (name, value) in [
        ("ccu_sip_datagrams_received_total", stats.datagrams_received),
        ("ccu_sip_requests_received_total", stats.requests_received),
        (
            "ccu_sip_retransmissions_absorbed_total",
            stats.retransmissions_absorbed,
        ),
        ("ccu_sip_rejected_total", stats.rejected),
        ("ccu_sip_dropped_total", stats.dropped),
        (
            "ccu_sip_rate_limited_refused_total",
            stats.rate_limited_refused,
        ),
        (
            "ccu_sip_rate_limited_dropped_total",
            stats.rate_limited_dropped,
        ),
        (
            "ccu_sip_tcp_connections_refused_total",
            stats.tcp_connections_refused,
        ),
        ("ccu_sip_messages_sent_total", stats.messages_sent),
        ("ccu_sip_send_failures_total", stats.send_failures),
    ] {
        metrics::counter!(name).absolute(value);
    }
    metrics::gauge!("ccu_sip_registered_devices").set(sip.binding_count() as f64);
}

/// The endpoint, once started (`None` before [`start`]).
pub fn handle(state: &AppState) -> Option<&SipHandle> {
    state.sip.get()
}

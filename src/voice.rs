//! The call manager (issue 5): the async shell around
//! [`ccu_channels::call::Call`]. One task per call owns the call, its two
//! UDP media sockets (caller, phone) and its timer; SIP comes in from the
//! transaction user in [`crate::sip`] by Call-ID, goes out through the
//! endpoint's [`SipHandle`]; the router's offers for voice conversations
//! come from the bus.
//!
//! ```text
//!  trunk INVITE ─▶ sip TU (TrunkGate) ─▶ Voice::incoming ─▶ call task: Call + sockets + timer
//!  BYE/ACK/INFO/REFER/re-INVITE ─▶ Voice::dispatch (by Call-ID) ─┘   │ Route ─▶ Hub::open_conversation
//!  bus OfferMade{voice} ─▶ call task: ring the operator's bindings ──┘ │ OfferOutcome ─▶ router accept/decline
//!                                                                      │ Abandoned ─▶ Hub::abandon
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use ccu_channels::call::{
    Call, CallConfig, CallInput, CallOutput, CallRecord, CallSetup, Device, HangupCause,
    OfferOutcome, SipLeg, SipSend,
};
use ccu_channels::ivr::{Ivr, Opening};
use ccu_channels::media::announce::QueueStatus;
use ccu_channels::media::call::{CallHangup, CallStreams};
use ccu_channels::media::player::PromptLibrary;
use ccu_channels::media::relay::{DropReason, Leg, StreamStart};
use ccu_channels::sip::Uri;
use ccu_channels::sip::dialog::{DialogConfig, DialogEvent};
use ccu_channels::sip::endpoint::{
    ClientOutcome, IncomingRequest, ServerTxHandle, SipHandle, Target,
};
use ccu_channels::sip::message::{HeaderName, Headers, Method, StatusCode};
use ccu_channels::sip::rate::{RateDecision, RateLimitConfig, RateLimiter};
use ccu_channels::sip::registrar::OperatorId;
use ccu_channels::sip::sdp::LocalMedia;
use ccu_channels::sip::transaction::TimerConfig;
use ccu_channels::sip::transport::TransportKind;
use ccu_channels::sip::trunk::TrunkCall;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::bus::BusEvent;
use crate::config::{Channel, ClosedAction, PortRange};
use crate::hub::Arrival;
use crate::store::ConversationState;

mod callback;

/// What a call task hears.
enum Msg {
    /// A request of one of its dialogs (or an ACK).
    Request(Box<IncomingRequest>),
    /// What became of a request it sent.
    Client {
        leg: SipLeg,
        method: Method,
        outcome: ClientOutcome,
    },
    Offer {
        offer: u64,
        operator: i64,
        /// Unix ms.
        expires_at: i64,
    },
    /// A callback's offer withdrawn (the task is found by the offer).
    Withdraw,
    /// An offer to a call withdrawn or declined: its phones stop ringing
    /// if it is the offer ringing now.
    WithdrawOffer(u64),
    /// The conversation is waiting again (a transfer from the console).
    Requeued,
    /// Hold (true) or resume from the console.
    Hold(bool),
    /// The router dropped the waiting call: its queue closed.
    QueueClosed,
    /// The queue's maximum wait: a callback keeps the place (`callback`),
    /// voicemail records a message and keeps it (`voicemail`), or the call
    /// ends with the message.
    MaxWait {
        callback: bool,
        voicemail: bool,
    },
    Position(QueueStatus),
    /// The conversation was assigned (to this operator, or another).
    Assigned {
        operator: Option<i64>,
    },
    HangUp,
}

struct Shared {
    state: AppState,
    sip: SipHandle,
    library: Arc<PromptLibrary>,
    ivr: Arc<Ivr>,
    /// The menu tree started at another menu, for each number whose `ivr`
    /// names one other than `ivr.start` (validated in config).
    ivr_by_menu: HashMap<String, Arc<Ivr>>,
    /// Call-ID (the caller's and every phone leg's) → its call.
    calls: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    /// Calls in progress (callers; a call's phone legs are not counted).
    active: AtomicUsize,
    /// New calls a second (`voice.max_calls_per_second`): one bucket for all
    /// the trunks, refilled each second, holding a second's worth.
    admission: Mutex<RateLimiter>,
    conversations: Mutex<Conversations>,
    /// Conversation → its callbacks placed here, by offer.
    callbacks: Mutex<HashMap<i64, Vec<CallbackTask>>>,
    ports: PortRange,
    next_port: AtomicUsize,
    media_ip: IpAddr,
    shutdown: CancellationToken,
}

/// A callback placed here: its offer and its task.
type CallbackTask = (u64, mpsc::Sender<Msg>);

/// Conversation → its call, and what the bus said of a conversation
/// before its call knew its id.
///
/// The router may offer a call in the moment between the store's insert
/// and [`crate::hub::Hub::open_conversation`] returning the id to the call
/// (an operator is waiting): such an offer is kept here briefly and handed
/// over when the call registers, instead of being lost (the phone would
/// never ring and the offer would time out; without its first position the
/// caller would hear the routing music until the next announcement).
#[derive(Default)]
struct Conversations {
    calls: HashMap<i64, mpsc::Sender<Msg>>,
    early: HashMap<i64, (Instant, Vec<Msg>)>,
}

impl Conversations {
    /// Messages older than this for an unknown conversation are another
    /// node's (or an ended call's) and are dropped.
    const EARLY_TTL: Duration = Duration::from_secs(5);
    const EARLY_MAX: usize = 1024;

    /// The call to hand `msg` to; or `msg` kept for a call to come.
    fn deliver(&mut self, conversation: i64, msg: Msg) -> Option<(mpsc::Sender<Msg>, Msg)> {
        if let Some(sender) = self.calls.get(&conversation) {
            return Some((sender.clone(), msg));
        }
        // What a call must not miss: the offer, and the first position (it
        // ends the call's routing music and starts the announcements and
        // the callback key; the next one may be a minute away). Both come
        // for voice conversations only (the listener drops the others').
        // Withdrawals and ends of unknown conversations concern nobody here.
        if matches!(msg, Msg::Offer { .. } | Msg::Position(_)) {
            let now = Instant::now();
            self.early
                .retain(|_, (at, _)| now.duration_since(*at) < Self::EARLY_TTL);
            if self.early.len() < Self::EARLY_MAX || self.early.contains_key(&conversation) {
                self.early
                    .entry(conversation)
                    .or_insert_with(|| (now, Vec::new()))
                    .1
                    .push(msg);
            }
        }
        None
    }

    /// The call of `conversation`, and what came for it before.
    fn register(&mut self, conversation: i64, sender: mpsc::Sender<Msg>) -> Vec<Msg> {
        self.calls.insert(conversation, sender);
        self.early
            .remove(&conversation)
            .map(|(_, msgs)| msgs)
            .unwrap_or_default()
    }
}

/// A call's place among `voice.max_calls`, given back on drop.
struct ActiveCall(Arc<Shared>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let left = self
            .0
            .active
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        metrics::gauge!("ccu_voice_calls").set(left as f64);
    }
}

/// The call manager; cheap to clone.
#[derive(Clone)]
pub struct Voice(Arc<Shared>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_u64() -> u64 {
    let mut bytes = [0_u8; 8];
    // Without OS randomness the tags are still unique per process.
    if getrandom::fill(&mut bytes).is_err() {
        static COUNTER: AtomicUsize = AtomicUsize::new(1);
        return COUNTER.fetch_add(1, Ordering::Relaxed) as u64 ^ 0x9E37_79B9_7F4A_7C15;
    }
    u64::from_le_bytes(bytes)
}

fn random_start() -> StreamStart {
    let r = random_u64();
    StreamStart {
        ssrc: r as u32,
        sequence: (r >> 32) as u16,
        timestamp: (r >> 16) as u32,
    }
}

/// Loads the prompts and the menu and starts listening to the bus.
/// `None` when there is no `[ivr]`: calls are then refused by the TU.
pub fn start(
    state: &AppState,
    sip: SipHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<Voice>> {
    let settings = &state.settings;
    let Some(ivr_config) = settings.ivr.clone() else {
        return Ok(None);
    };
    let library = PromptLibrary::load_dir(&settings.voice.prompts_dir)
        .with_context(|| format!("loading voice.prompts_dir {:?}", settings.voice.prompts_dir))?;
    let languages = library.languages();
    let ivr = ivr_config
        .validate(
            |q| settings.queues.contains_key(q),
            |l| languages.contains(&l),
        )
        .map_err(|e| anyhow::anyhow!("ivr: {e}"))?;
    ivr.check_prompts(|l, n| library.get(l, n).is_some())
        .map_err(|e| anyhow::anyhow!("ivr: {e}"))?;
    let ports = PortRange::parse(&settings.voice.rtp_ports)
        .map_err(|e| anyhow::anyhow!("voice.rtp_ports: {e}"))?;
    let media_ip = settings
        .voice
        .media_address
        .unwrap_or_else(|| settings.sip_addr.ip());
    let mut ivr_by_menu = HashMap::new();
    for menu in settings.sip.numbers.values().filter_map(|n| n.ivr.as_ref()) {
        if *menu != ivr.start && ivr.menus.contains_key(menu) {
            let mut started_there = ivr.clone();
            started_there.start = menu.clone();
            ivr_by_menu.insert(menu.clone(), Arc::new(started_there));
        }
    }
    let voice = Voice(Arc::new(Shared {
        state: state.clone(),
        sip,
        library: Arc::new(library),
        ivr: Arc::new(ivr),
        ivr_by_menu,
        calls: Mutex::new(HashMap::new()),
        active: AtomicUsize::new(0),
        admission: Mutex::new(RateLimiter::new(RateLimitConfig {
            enabled: true,
            requests_per_second: settings.voice.max_calls_per_second,
            burst: settings.voice.max_calls_per_second,
            refusals_per_second: u32::MAX,
            max_sources: 1,
        })),
        conversations: Mutex::new(Conversations::default()),
        callbacks: Mutex::new(HashMap::new()),
        ports,
        next_port: AtomicUsize::new(0),
        media_ip,
        shutdown,
    }));
    tokio::spawn(voice.clone().bus_listener());
    Ok(Some(voice))
}

impl Voice {
    /// Calls in progress.
    pub fn calls(&self) -> usize {
        self.0.active.load(Ordering::Acquire)
    }

    /// Whether a new call may start now: under `voice.max_calls` calls at
    /// once and `voice.max_calls_per_second`. Takes its place if so.
    fn admit(&self) -> Result<ActiveCall, &'static str> {
        let voice = &self.0.state.settings.voice;
        if self.0.active.fetch_add(1, Ordering::AcqRel) >= voice.max_calls {
            self.0.active.fetch_sub(1, Ordering::AcqRel);
            return Err("max_calls");
        }
        let place = ActiveCall(self.0.clone());
        let admitted = lock(&self.0.admission).check(IpAddr::from([0, 0, 0, 0]), Instant::now());
        if admitted != RateDecision::Allow {
            return Err("calls_per_second");
        }
        metrics::gauge!("ccu_voice_calls").set(self.calls() as f64);
        Ok(place)
    }

    /// Takes an INVITE the trunk gate accepted. Over the limits it gets
    /// `503` with `Retry-After` at once (RFC 3261 §21.5.4): the carrier
    /// tries another route or later, instead of retransmitting into a
    /// server that cannot keep up and timing out.
    pub async fn incoming(&self, incoming: IncomingRequest, trunk: TrunkCall) {
        let Ok(call_id) = incoming.request.headers.call_id().map(str::to_owned) else {
            return;
        };
        let place = match self.admit() {
            Ok(place) => place,
            Err(limit) => {
                metrics::counter!("ccu_voice_calls_refused_total", "limit" => limit).increment(1);
                tracing::debug!(%call_id, limit, "call refused: over the limit");
                let mut response = incoming
                    .request
                    .response(StatusCode::SERVICE_UNAVAILABLE, incoming.handle.to_tag());
                response.headers.push(HeaderName::RetryAfter, "1");
                let _ = incoming.handle.respond(response).await;
                return;
            }
        };
        let (tx, rx) = mpsc::channel(256);
        lock(&self.0.calls).insert(call_id.clone(), tx.clone());
        let voice = self.clone();
        tokio::spawn(async move {
            // Given back however the task ends (a panic included).
            let _place = place;
            if let Err(error) = voice.run_call(incoming, trunk, tx, rx).await {
                tracing::warn!(%call_id, "call ended with an error: {error:#}");
            }
            voice.forget(&call_id);
        });
    }

    /// A request for one of our calls goes to it; anything else comes back.
    /// A call too busy to take it (its channel full) answers `503` with
    /// `Retry-After` (RFC 3261 §21.5.4): the peer retransmits or retries
    /// rather than hearing `481` for a dialog that exists.
    pub async fn dispatch(&self, incoming: IncomingRequest) -> Option<IncomingRequest> {
        let Ok(call_id) = incoming.request.headers.call_id() else {
            return Some(incoming);
        };
        let sender = lock(&self.0.calls).get(call_id).cloned();
        let sender = match sender {
            Some(sender) => sender,
            None => return Some(incoming),
        };
        match sender.try_send(Msg::Request(Box::new(incoming))) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(Msg::Request(incoming))) => {
                // An ACK has no response; the 2xx retransmission brings it again.
                if incoming.request.method != Method::Ack {
                    let mut response = incoming
                        .request
                        .response(StatusCode::SERVICE_UNAVAILABLE, incoming.handle.to_tag());
                    response.headers.push(HeaderName::RetryAfter, "1");
                    let _ = incoming.handle.respond(response).await;
                }
                None
            }
            // The call just ended: the TU answers as for an unknown dialog.
            Err(mpsc::error::TrySendError::Closed(Msg::Request(incoming))) => Some(*incoming),
            Err(_) => None,
        }
    }

    fn forget(&self, call_id: &str) {
        let Some(sender) = lock(&self.0.calls).remove(call_id) else {
            return;
        };
        lock(&self.0.calls).retain(|_, s| !s.same_channel(&sender));
        lock(&self.0.conversations)
            .calls
            .retain(|_, s| !s.same_channel(&sender));
    }

    async fn bus_listener(self) {
        let mut events = self.0.state.bus.subscribe();
        loop {
            let event = tokio::select! {
                () = self.0.shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "voice: bus events lagged");
                        continue;
                    }
                    Err(_) => return,
                },
            };
            self.notify_callbacks(event.as_ref());
            let (conversation, msg) = match event.as_ref() {
                BusEvent::OfferMade {
                    offer_id,
                    conversation_id,
                    operator_id,
                    channel,
                    expires_at,
                    callback,
                    ..
                } if channel == "voice" => {
                    if *callback
                        && self.start_callback(callback::CallbackOffer {
                            conversation: *conversation_id,
                            offer: *offer_id,
                            operator: *operator_id,
                            expires_at: *expires_at,
                        })
                    {
                        continue;
                    }
                    (
                        *conversation_id,
                        Msg::Offer {
                            offer: *offer_id,
                            operator: *operator_id,
                            expires_at: *expires_at,
                        },
                    )
                }
                BusEvent::OfferWithdrawn {
                    conversation_id,
                    offer_id,
                    ..
                } => (*conversation_id, Msg::WithdrawOffer(*offer_id)),
                BusEvent::Position {
                    conversation_id,
                    position,
                    estimated_wait_seconds,
                    channel,
                    ..
                } if channel == "voice" || channel.is_empty() => (
                    *conversation_id,
                    Msg::Position(QueueStatus {
                        position: Some(*position),
                        estimated_wait: estimated_wait_seconds
                            .map(|s| Duration::from_secs(s.into())),
                    }),
                ),
                BusEvent::ConversationEnded {
                    conversation_id,
                    by,
                } if by != "citizen" && by != "voice" => (*conversation_id, Msg::HangUp),
                BusEvent::ConversationChanged {
                    conversation_id,
                    state,
                    ..
                } if state == "queued" => (*conversation_id, Msg::Requeued),
                BusEvent::CallHold {
                    conversation_id,
                    hold,
                } => (*conversation_id, Msg::Hold(*hold)),
                BusEvent::RoutingNotice {
                    conversation_id,
                    kind,
                    ..
                } if kind == "queue_closed" => (*conversation_id, Msg::QueueClosed),
                BusEvent::RoutingNotice {
                    conversation_id,
                    kind,
                    detail,
                } if kind == "max_wait" => (
                    *conversation_id,
                    Msg::MaxWait {
                        callback: detail == "callback",
                        voicemail: detail == "voicemail",
                    },
                ),
                _ => continue,
            };
            let sender = lock(&self.0.conversations).deliver(conversation, msg);
            if let Some((sender, msg)) = sender {
                let _ = sender.try_send(msg);
            }
        }
    }

    /// A media socket, and a second handle to it for sending: a direct
    /// non-blocking `sendto`. Tokio's `try_send_to` answers `WouldBlock`
    /// until its reactor has seen a new socket writable, which lost the
    /// first packet of every call (the IVR's first prompt packet).
    async fn bind_media(&self) -> anyhow::Result<(UdpSocket, std::net::UdpSocket)> {
        let socket = self.bind_media_socket().await?;
        let std_socket = socket.into_std()?;
        let sender = std_socket.try_clone()?;
        Ok((UdpSocket::from_std(std_socket)?, sender))
    }

    async fn bind_media_socket(&self) -> anyhow::Result<UdpSocket> {
        let ip = self.0.media_ip;
        let bind_ip = if ip.is_loopback() {
            ip
        } else {
            IpAddr::from([0, 0, 0, 0])
        };
        let ports = self.0.ports;
        if ports.is_any() {
            return Ok(UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await?);
        }
        for _ in 0..ports.len() {
            let n = self.0.next_port.fetch_add(1, Ordering::Relaxed) % ports.len();
            let port = ports.first.saturating_add(n as u16);
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(bind_ip, port)).await {
                return Ok(socket);
            }
        }
        anyhow::bail!("no free RTP port in voice.rtp_ports")
    }

    fn dialog_config(&self, transport: TransportKind) -> DialogConfig {
        let sip = self.0.sip.udp_addr();
        let host = SocketAddr::new(self.0.media_ip, sip.port());
        let contact = match transport {
            TransportKind::Udp => format!("sip:ccu@{host}"),
            TransportKind::Tcp => format!("sip:ccu@{host};transport=tcp"),
        };
        let sip_settings = &self.0.state.settings.sip;
        DialogConfig {
            timers: TimerConfig {
                t1: Duration::from_millis(sip_settings.t1_ms),
                t2: Duration::from_millis(sip_settings.t2_ms),
                t4: Duration::from_millis(sip_settings.t4_ms),
            },
            contact: Uri::parse(&contact).unwrap_or_else(|_| Uri::Other {
                scheme: "sip".into(),
                rest: format!("ccu@{host}"),
            }),
            sent_by: host.to_string(),
            transport,
        }
    }

    /// Whether the number's queue takes calls now (its schedule and
    /// holidays, as the router sees them); a queue whose closed action is
    /// `queue` takes them at any hour. Closed: the IVR plays the closed
    /// prompts and hangs up.
    fn opening(&self, queue: &str) -> Opening {
        let settings = &self.0.state.settings;
        let queues_anyway = settings
            .queues
            .get(queue)
            .is_some_and(|q| q.closed_action == ClosedAction::Queue);
        match settings.opening_hours(queue) {
            Ok(hours) if !queues_anyway && !hours.is_open(chrono::Utc::now()) => Opening::Closed,
            Ok(_) => Opening::Open,
            Err(error) => {
                // Validated at start; a queue without hours takes calls.
                tracing::warn!(%queue, "opening hours: {error}");
                Opening::Open
            }
        }
    }

    async fn run_call(
        &self,
        incoming: IncomingRequest,
        trunk: TrunkCall,
        me: mpsc::Sender<Msg>,
        mut rx: mpsc::Receiver<Msg>,
    ) -> anyhow::Result<()> {
        let shared = &self.0;
        let settings = &shared.state.settings;
        let (caller_socket, caller_sender) = self.bind_media().await?;
        let (phone_socket, phone_sender) = self.bind_media().await?;
        let caller_target = match incoming.transport {
            TransportKind::Udp => Target::Udp(incoming.source),
            TransportKind::Tcp => Target::Tcp(incoming.source),
        };
        let caller_number = trunk
            .caller
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let mut media_config = settings.voice.media.clone();
        if caller_number.is_empty() {
            // Nobody to call back: the key is not offered.
            media_config.announcer.callback_key = None;
        }
        media_config.announcer.every_seconds =
            settings.routing.announce_every_seconds.max(1).into();
        let config = CallConfig {
            caller_dialog: self.dialog_config(incoming.transport),
            phone_dialog: self.dialog_config(TransportKind::Udp),
            media: media_config,
            ring_timeout: Duration::from_secs(settings.voice.ring_timeout_seconds),
        };
        let setup = CallSetup {
            invite: incoming.request.clone(),
            local_tag: incoming.handle.to_tag().to_owned(),
            source_ip: incoming.source.ip(),
            caller_number: caller_number.clone(),
            caller_media: LocalMedia::new(
                shared.media_ip,
                caller_socket.local_addr()?.port(),
                random_u64() >> 2,
            ),
            phone_media: LocalMedia::new(
                shared.media_ip,
                phone_socket.local_addr()?.port(),
                random_u64() >> 2,
            ),
            streams: CallStreams {
                caller: random_start(),
                player: random_start(),
            },
            operator_stream: random_start(),
            opening: self.opening(&trunk.called.queue),
        };
        let caller_call_id = incoming.request.headers.call_id()?.to_owned();
        // The number's own menu answers first (`sip.numbers.N.ivr`).
        let ivr = trunk
            .called
            .ivr
            .as_ref()
            .and_then(|menu| shared.ivr_by_menu.get(menu))
            .unwrap_or(&shared.ivr)
            .clone();
        let mut call = match Call::new(Instant::now(), config, setup, shared.library.clone(), ivr) {
            Ok(call) => call,
            Err(response) => {
                let _ = incoming.handle.respond(*response).await;
                return Ok(());
            }
        };
        tracing::info!(call_id = %caller_call_id, caller = %caller_number, queue = %trunk.called.queue, "call answered");
        // Server transactions waiting for our response, by (Call-ID, CSeq, method).
        let mut handles: HashMap<(String, u32, String), ServerTxHandle> = HashMap::new();
        let cseq = incoming.request.headers.cseq()?;
        handles.insert(
            (caller_call_id.clone(), cseq.seq, cseq.method.to_string()),
            incoming.handle.clone(),
        );
        let mut context = CallContext {
            voice: self.clone(),
            me,
            caller_call_id: caller_call_id.clone(),
            caller_target,
            phones: HashMap::new(),
            vias: HashMap::new(),
            conversation: None,
            queue: trunk.called.queue.clone(),
            caller_number: caller_number.clone(),
            operator: None,
            answered: false,
            voicemail: false,
            voice_message: false,
            kept: false,
            ringing: Vec::new(),
            pending: Vec::new(),
        };
        // The caller's leg, first of the call's records.
        context
            .record_event(
                "call_started",
                None,
                serde_json::json!({
                    "call_id": caller_call_id,
                    "caller": trunk.caller.as_ref().map(|c| c.as_str()),
                    "caller_name": trunk.caller_name,
                    "called": trunk.called.number.as_str(),
                    "trunk": trunk.trunk,
                    "transport": incoming.transport.to_string(),
                    "source": incoming.source.to_string(),
                }),
            )
            .await;
        let mut shutting_down = false;
        let mut buf_a = vec![0_u8; 2048];
        let mut buf_b = vec![0_u8; 2048];
        loop {
            // Poll after every input (and once at the start: the answer
            // and the IVR's first prompt are waiting).
            let now = Instant::now();
            while let Some(output) = call.poll(now) {
                context
                    .execute(
                        output,
                        &mut handles,
                        &caller_sender,
                        &phone_sender,
                        &mut call,
                    )
                    .await;
            }
            if call.is_done() {
                break;
            }
            let deadline = call
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    match msg {
                        Msg::Request(incoming) => {
                            let leg = context.request_leg(&incoming, &mut handles, |id| call.phone_leg(id)).await;
                            if let Some(leg) = leg {
                                call.handle(now, CallInput::Sip { leg, event: DialogEvent::Request(&incoming.request) });
                            }
                        }
                        Msg::Client { leg, method, outcome } => {
                            call.handle(now, CallInput::Sip { leg, event: client_event(method, &outcome) });
                        }
                        Msg::Offer { offer, operator, expires_at } => {
                            // Offered while bridged: the console transferred
                            // the conversation and the router offered it
                            // before the change reached us.
                            context.requeue_if_bridged(&mut call, now);
                            let conversation = context.conversation.unwrap_or_default();
                            let devices = context.devices(operator);
                            context.operator = Some((offer, operator));
                            tracing::info!(offer, operator, devices = devices.len(), "ringing the operator's phones");
                            // The phone rings until the offer expires (the
                            // router's offer timeout), or the ring timeout.
                            let ring_for = u64::try_from(expires_at - crate::now_ms())
                                .ok()
                                .map(Duration::from_millis);
                            call.handle(now, CallInput::Offer { offer, operator, conversation, devices, ring_for });
                        }
                        Msg::WithdrawOffer(offer) => {
                            // Withdrawn by the router, or declined in the
                            // console while the phones ring: they stop. A
                            // late word of an older offer stops nothing.
                            if call.ringing_offer() == Some(offer) {
                                call.handle(now, CallInput::WithdrawOffer);
                            }
                        }
                        Msg::Withdraw => {}
                        Msg::Requeued => context.requeue_if_bridged(&mut call, now),
                        Msg::Hold(true) => call.handle(now, CallInput::Hold),
                        Msg::Hold(false) => call.handle(now, CallInput::Unhold),
                        Msg::QueueClosed => call.handle(now, CallInput::QueueClosed),
                        Msg::MaxWait { voicemail: true, .. } => {
                            // Anonymous callers too: the message is heard
                            // even if they cannot be called back.
                            context.voicemail = true;
                            context.kept = !context.caller_number.is_empty();
                            call.handle(now, CallInput::Voicemail);
                        }
                        Msg::MaxWait { callback, .. } => {
                            // An anonymous caller cannot be called back: the
                            // maximum-wait message, and the call's end closes it.
                            let callback = callback && !context.caller_number.is_empty();
                            context.kept |= callback;
                            call.handle(now, CallInput::MaxWait { callback });
                        }
                        Msg::Position(status) => call.handle(now, CallInput::QueueStatus(status)),
                        Msg::HangUp => call.handle(now, CallInput::HangUp),
                        // A call's own assignment comes with its answer.
                        Msg::Assigned { .. } => {}
                    }
                }
                received = caller_socket.recv_from(&mut buf_a) => {
                    if let Ok((n, from)) = received {
                        call.handle(Instant::now(), CallInput::Rtp { leg: Leg::A, from, bytes: &buf_a[..n] });
                    }
                }
                received = phone_socket.recv_from(&mut buf_b) => {
                    if let Ok((n, from)) = received {
                        call.handle(Instant::now(), CallInput::Rtp { leg: Leg::B, from, bytes: &buf_b[..n] });
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.shutdown.cancelled(), if !shutting_down => {
                    // Calls are hung up politely (BYE) before the process exits.
                    shutting_down = true;
                    call.handle(Instant::now(), CallInput::HangUp);
                }
            }
        }
        Ok(())
    }
}

struct CallContext {
    voice: Voice,
    me: mpsc::Sender<Msg>,
    caller_call_id: String,
    caller_target: Target,
    /// Phone leg Call-ID → where its binding is.
    phones: HashMap<String, Target>,
    /// The Via each phone INVITE went out with, for its CANCEL.
    vias: HashMap<String, String>,
    conversation: Option<i64>,
    /// The conversation's queue (the number's until the IVR chose).
    queue: String,
    /// E.164, or empty for an anonymous caller: the callback's number.
    caller_number: String,
    operator: Option<(u64, i64)>,
    answered: bool,
    /// The caller was asked for a voice message, and left one.
    voicemail: bool,
    voice_message: bool,
    /// The router keeps this call's place as a callback while the caller
    /// is still on the line: their hang-up lets it be offered.
    kept: bool,
    /// The devices of the offer ringing now, for its record.
    ringing: Vec<serde_json::Value>,
    /// Records made before the conversation exists (the IVR's): stored
    /// once it is opened.
    pending: Vec<PendingEvent>,
}

struct PendingEvent {
    at: i64,
    kind: &'static str,
    operator: Option<i64>,
    data: serde_json::Value,
}

/// What became of a request we sent, for its dialog.
fn client_event(method: Method, outcome: &ClientOutcome) -> DialogEvent<'_> {
    match outcome {
        ClientOutcome::Response(response) => DialogEvent::Response(response),
        ClientOutcome::Timeout | ClientOutcome::TransportError => {
            DialogEvent::RequestFailed { method }
        }
    }
}

/// Sends an RTP packet from the media leg's socket. A full socket buffer
/// loses the packet (RTP does not wait): counted, so that a relay loss shows.
fn send_rtp(
    leg: Leg,
    to: SocketAddr,
    bytes: &[u8],
    caller_socket: &std::net::UdpSocket,
    phone_socket: &std::net::UdpSocket,
) {
    let socket = match leg {
        Leg::A => caller_socket,
        Leg::B => phone_socket,
    };
    if socket.send_to(bytes, to).is_err() {
        metrics::counter!("ccu_rtp_send_errors_total").increment(1);
    }
}

/// Calls by how they ended, and the relay's packets over the call
/// (Prometheus counters; `/metrics`).
fn export_call_metrics(cause: HangupCause, call: &Call) {
    metrics::counter!("ccu_voice_calls_ended_total", "cause" => cause.as_str()).increment(1);
    if let Some(media) = call.media() {
        export_relay_metrics(media.relay());
    }
}

/// A call's relayed, local and dropped packets, once it is over.
fn export_relay_metrics(relay: &ccu_channels::media::relay::Relay) {
    for (leg, to) in [(Leg::A, "caller"), (Leg::B, "operator")] {
        let stats = relay.stats(leg);
        metrics::counter!("ccu_rtp_relayed_packets_total", "to" => to)
            .increment(stats.relayed_packets);
        metrics::counter!("ccu_rtp_local_packets_total", "to" => to).increment(stats.local_packets);
        for reason in DropReason::ALL {
            let dropped = stats.dropped(reason);
            if dropped > 0 {
                metrics::counter!("ccu_rtp_dropped_packets_total", "from" => to, "reason" => reason.as_str())
                    .increment(dropped);
            }
        }
    }
}

/// A call record as a conversation event: its kind, operator and data.
fn call_event(record: &CallRecord) -> (&'static str, Option<i64>, serde_json::Value) {
    use serde_json::json;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match record {
        CallRecord::IvrPath(path) => (
            "call_ivr",
            None,
            json!({ "path": path.iter().map(ToString::to_string).collect::<Vec<_>>() }),
        ),
        CallRecord::Rang {
            offer,
            operator,
            devices,
        } => (
            "call_ringing",
            Some(*operator),
            json!({ "offer": offer, "devices": devices }),
        ),
        CallRecord::OfferEnded {
            offer,
            operator,
            end,
        } => (
            "call_not_answered",
            Some(*operator),
            json!({
                "offer": offer,
                "reason": end.as_str(),
                "status": end.status().map(|s| s.as_u16()),
            }),
        ),
        CallRecord::Answered {
            offer,
            operator,
            waited,
        } => (
            "call_answered",
            Some(*operator),
            json!({ "offer": offer, "waited_ms": millis(*waited) }),
        ),
        CallRecord::Hold { by_phone } => (
            "call_held",
            None,
            json!({ "by": if *by_phone { "phone" } else { "console" } }),
        ),
        CallRecord::Unhold {
            by_phone,
            music_packets,
        } => (
            "call_resumed",
            None,
            json!({
                "by": if *by_phone { "phone" } else { "console" },
                "music_packets": music_packets,
            }),
        ),
        CallRecord::Transferred { to } => ("call_transferred", None, json!({ "to": to })),
        CallRecord::CallbackDialing { number } => {
            ("callback_dialing", None, json!({ "uri": number }))
        }
        CallRecord::CallbackAttempt { end } => (
            crate::store::CALLBACK_ATTEMPT,
            None,
            json!({
                "result": end.map_or("answered", |e| e.as_str()),
                "status": end.and_then(|e| e.status()).map(|s| s.as_u16()),
            }),
        ),
        CallRecord::Hangup {
            cause,
            relayed_to_caller,
            relayed_to_operator,
        } => (
            "call_ended",
            None,
            json!({
                "cause": cause.as_str(),
                "relayed_to_caller": relayed_to_caller,
                "relayed_to_operator": relayed_to_operator,
            }),
        ),
    }
}

impl CallContext {
    /// The leg of the task's dialog a request belongs to (by Call-ID), its
    /// server transaction kept for the answer; a request for no leg of ours
    /// is answered `481` here (an ACK, nothing).
    async fn request_leg(
        &self,
        incoming: &IncomingRequest,
        handles: &mut HashMap<(String, u32, String), ServerTxHandle>,
        phone_leg: impl Fn(&str) -> Option<SipLeg>,
    ) -> Option<SipLeg> {
        let request = &incoming.request;
        let call_id = request.headers.call_id().unwrap_or_default().to_owned();
        let leg = if call_id == self.caller_call_id {
            Some(SipLeg::Caller)
        } else {
            phone_leg(&call_id)
        };
        match leg {
            // Kept only for a leg that answers: a request answered 481 must
            // not leave an entry behind.
            Some(_) => {
                if let Ok(cseq) = request.headers.cseq()
                    && request.method != Method::Ack
                {
                    let key = (call_id, cseq.seq, cseq.method.to_string());
                    handles.insert(key, incoming.handle.clone());
                }
            }
            None if request.method != Method::Ack => {
                let response =
                    request.response(StatusCode::CALL_DOES_NOT_EXIST, incoming.handle.to_tag());
                let _ = incoming.handle.respond(response).await;
            }
            None => {}
        }
        leg
    }

    /// The operator's registered phones, each a new leg of this call (its
    /// Call-ID routed here, its address kept for the INVITE).
    fn devices(&mut self, operator: i64) -> Vec<Device> {
        let shared = &self.voice.0;
        let mut devices = Vec::new();
        self.ringing.clear();
        for binding in shared.sip.bindings(OperatorId(operator)) {
            let device = Device {
                target: binding.contact.uri.clone(),
                source_ip: binding.source.ip(),
                call_id: format!("{:016x}@ccu", random_u64()),
                local_tag: format!("{:012x}", random_u64() >> 16),
            };
            let target = match binding.transport {
                TransportKind::Udp => Target::Udp(binding.source),
                TransportKind::Tcp => Target::Tcp(binding.source),
            };
            self.phones.insert(device.call_id.clone(), target);
            self.ringing.push(serde_json::json!({
                "call_id": device.call_id,
                "contact": binding.contact.uri.to_string(),
                "transport": binding.transport.to_string(),
            }));
            lock(&shared.calls).insert(device.call_id.clone(), self.me.clone());
            devices.push(device);
        }
        devices
    }

    /// A transfer from the console (the conversation is queued again while
    /// the call is bridged): the operator's phone is hung up and the caller
    /// waits with music for the next offer.
    fn requeue_if_bridged(&mut self, call: &mut Call, now: Instant) {
        if call.is_bridged() {
            tracing::info!(conversation = ?self.conversation, "call transferred from the console");
            self.answered = false;
            call.handle(
                now,
                CallInput::TransferToQueue(QueueStatus {
                    position: None,
                    estimated_wait: None,
                }),
            );
        }
    }

    /// Stores a record as a conversation event, or keeps it until the
    /// conversation exists.
    async fn record_event(
        &mut self,
        kind: &'static str,
        operator: Option<i64>,
        data: serde_json::Value,
    ) {
        let event = PendingEvent {
            at: crate::now_ms(),
            kind,
            operator,
            data,
        };
        match self.conversation {
            Some(conversation) => self.store_event(conversation, event).await,
            None => self.pending.push(event),
        }
    }

    async fn store_event(&self, conversation: i64, event: PendingEvent) {
        let result = self
            .voice
            .0
            .state
            .store
            .append_event(
                conversation,
                event.at,
                event.kind,
                Some(&self.queue),
                event.operator,
                &event.data,
            )
            .await;
        if let Err(error) = result {
            tracing::warn!(
                conversation,
                kind = event.kind,
                "call record not stored: {error}"
            );
        }
    }

    fn target_of(&self, leg: SipLeg, call_id: &str) -> Option<Target> {
        match leg {
            SipLeg::Caller => Some(self.caller_target),
            SipLeg::Phone(_) => self.phones.get(call_id).copied(),
        }
    }

    async fn execute(
        &mut self,
        output: CallOutput,
        handles: &mut HashMap<(String, u32, String), ServerTxHandle>,
        caller_socket: &std::net::UdpSocket,
        phone_socket: &std::net::UdpSocket,
        call: &mut Call,
    ) {
        let shared = &self.voice.0;
        match output {
            CallOutput::Rtp { leg, to, bytes } => {
                send_rtp(leg, to, &bytes, caller_socket, phone_socket);
            }
            CallOutput::Sip { leg, send } => self.send_sip(leg, send, handles).await,
            CallOutput::Route {
                queue,
                language,
                ivr_path,
                ..
            } => {
                let path: Vec<String> = ivr_path.iter().map(ToString::to_string).collect();
                // The chosen queue may keep other hours than the number's:
                // closed, the caller hears so and no conversation is opened
                // (the router would refuse to queue it, and the caller's
                // hang-up then be an abandon of a conversation it never had).
                if self.voice.opening(&queue) == Opening::Closed {
                    tracing::info!(%queue, path = %path.join(" "), "call for a closed queue");
                    call.handle(Instant::now(), CallInput::QueueClosed);
                    return;
                }
                let arrival = Arrival {
                    queue_id: queue.clone(),
                    channel: Channel::Voice,
                    language,
                    subject: Some(format!("call {}", path.join(" "))),
                    contact_id: None,
                };
                match shared.state.hub.open_conversation(arrival).await {
                    Ok(conversation) => {
                        tracing::info!(conversation = conversation.id, %queue, path = %path.join(" "), "call queued");
                        self.conversation = Some(conversation.id);
                        self.queue = queue.clone();
                        {
                            // Handed over under the lock, so that nothing the
                            // listener delivers directly overtakes them.
                            let mut conversations = lock(&shared.conversations);
                            for msg in conversations.register(conversation.id, self.me.clone()) {
                                let _ = self.me.try_send(msg);
                            }
                        }
                        for event in std::mem::take(&mut self.pending) {
                            self.store_event(conversation.id, event).await;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%queue, "the call could not be queued: {error}");
                        call.handle(Instant::now(), CallInput::HangUp);
                    }
                }
            }
            CallOutput::OfferOutcome { offer, outcome } => {
                self.offer_outcome(offer, outcome).await;
            }
            CallOutput::VoiceMessage { wav, duration } => {
                // Under half a second is a hang-up after the tone, not a message.
                let Some(conversation) = self
                    .conversation
                    .filter(|_| duration >= Duration::from_millis(500))
                else {
                    return;
                };
                let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
                let stored = shared
                    .state
                    .store
                    .store_voice_message(
                        conversation,
                        &self.queue,
                        crate::now_ms(),
                        duration_ms,
                        &wav,
                    )
                    .await;
                match stored {
                    Ok(id) => {
                        self.voice_message = true;
                        metrics::counter!("ccu_voice_messages_total").increment(1);
                        tracing::info!(conversation, id, duration_ms, "voice message stored");
                    }
                    Err(error) => {
                        tracing::error!(conversation, "the voice message was not stored: {error}")
                    }
                }
            }
            CallOutput::Abandoned { wait } => {
                if let Some(conversation) = self.conversation {
                    tracing::info!(
                        conversation,
                        wait_ms = wait.as_millis() as u64,
                        "call abandoned"
                    );
                    if let Err(error) = shared.state.hub.abandon(conversation).await {
                        tracing::warn!(conversation, "abandon: {error}");
                    }
                }
            }
            CallOutput::Transfer { target } => {
                let queue = match &target {
                    Uri::Sip(sip) => sip.user.clone().unwrap_or_default(),
                    Uri::Other { .. } => String::new(),
                };
                if let Some(conversation) = self.conversation {
                    if let Err(error) = shared
                        .state
                        .hub
                        .router()
                        .transfer_to_queue(conversation, &queue)
                        .await
                    {
                        tracing::warn!(conversation, %target, "transfer: {error}");
                    } else if shared.state.settings.queues.contains_key(&queue) {
                        self.queue = queue;
                    }
                    self.answered = false;
                }
            }
            CallOutput::Record(record) => self.record(record).await,
            CallOutput::CallbackRequested => {
                // The caller pressed the callback key: the place is kept
                // (stored first, then the router), the caller hears the
                // confirmation and the call ends without an abandon.
                let Some(conversation) = self.conversation else {
                    return;
                };
                tracing::info!(conversation, "callback requested");
                let stored = shared
                    .state
                    .store
                    .append_event(
                        conversation,
                        crate::now_ms(),
                        crate::store::CALLBACK_REQUESTED,
                        Some(&self.queue),
                        None,
                        &serde_json::json!({ "reason": "key", "number": self.caller_number }),
                    )
                    .await;
                let result = match stored {
                    Ok(_) => shared
                        .state
                        .hub
                        .router()
                        .callback(conversation)
                        .await
                        .map_err(anyhow::Error::from),
                    Err(error) => Err(error.into()),
                };
                match result {
                    Ok(()) => self.kept = true,
                    Err(error) => tracing::warn!(conversation, "callback request: {error:#}"),
                }
            }
            CallOutput::Ended { cause } => {
                tracing::info!(conversation = ?self.conversation, cause = cause.as_str(), "call ended");
                export_call_metrics(cause, call);
                if let (Some(conversation), Some((_, operator)), true) =
                    (self.conversation, self.operator, self.answered)
                {
                    let _ = shared.state.hub.complete(conversation, operator).await;
                    shared.state.hub.announce_end(conversation, "voice").await;
                } else if let Some(conversation) = self.conversation.filter(|_| {
                    cause == HangupCause::Ivr(CallHangup::MaxWait)
                        || (self.voicemail && !self.voice_message && self.caller_number.is_empty())
                }) {
                    // The router closed it at the maximum wait, or (an
                    // anonymous caller at a callback queue's maximum wait)
                    // it is still in line: closed here, out of the engine.
                    let data = serde_json::json!({ "reason": "max_wait", "anonymous": true });
                    if self.close_waiting(conversation, &data).await {
                        let _ = shared.state.hub.router().ended(conversation, true).await;
                    }
                    shared.state.hub.announce_end(conversation, "voice").await;
                } else if let (Some(conversation), HangupCause::Ivr(CallHangup::Closed)) =
                    (self.conversation, cause)
                {
                    // The router dropped the waiting call when its queue
                    // closed (a notice, no state change): the caller heard
                    // the closed message; the conversation ends here.
                    let data = serde_json::json!({ "reason": "queue_closed" });
                    self.close_waiting(conversation, &data).await;
                    shared.state.hub.announce_end(conversation, "voice").await;
                } else if let Some(conversation) = self.conversation.filter(|_| self.kept) {
                    // The callback waits, from its place, for an operator.
                    if let Err(error) = shared.state.hub.router().caller_left(conversation).await {
                        tracing::warn!(conversation, "callback: {error}");
                    }
                }
            }
        }
    }

    /// Tells the router how the offer went; whether the router gave the
    /// conversation to the operator (an accepted offer it still had).
    async fn offer_outcome(&mut self, offer: u64, outcome: OfferOutcome) -> bool {
        let Some((_, operator)) = self.operator.filter(|(o, _)| *o == offer) else {
            return false;
        };
        let router = self.voice.0.state.hub.router();
        let result = match outcome {
            OfferOutcome::Accepted => {
                // Even if the router says no (the console accepted it a
                // moment before): the phone talks, and the end completes it.
                self.answered = true;
                let accepted = router.accept(operator, offer).await;
                if accepted.is_ok() {
                    metrics::counter!("ccu_voice_calls_answered_total").increment(1);
                }
                accepted
            }
            OfferOutcome::Declined(_) => router.decline(operator, offer).await,
            // Rang out, or no device: missed (the operator's misses count
            // towards not-ready). The router may have timed the offer out
            // itself a moment before.
            OfferOutcome::Missed => router.missed(operator, offer).await,
        };
        if let Err(error) = &result {
            tracing::warn!(offer, operator, ?outcome, "router: {error}");
        }
        outcome == OfferOutcome::Accepted && result.is_ok()
    }

    /// Stores a call record as a conversation event.
    async fn record(&mut self, record: CallRecord) {
        tracing::debug!(conversation = ?self.conversation, ?record, "call record");
        let (kind, operator, mut data) = call_event(&record);
        if let CallRecord::Rang { .. } = record {
            data["devices"] = serde_json::Value::Array(std::mem::take(&mut self.ringing));
        }
        self.record_event(kind, operator, data).await;
    }

    /// Closes the conversation if it is still waiting (queued or offered);
    /// whether it did.
    async fn close_waiting(&self, conversation: i64, data: &serde_json::Value) -> bool {
        let closed = self
            .voice
            .0
            .state
            .store
            .transition(
                conversation,
                &[ConversationState::Queued, ConversationState::Offered],
                ConversationState::Closed,
                "closed",
                None,
                data,
                crate::now_ms(),
            )
            .await;
        closed.unwrap_or_else(|error| {
            tracing::warn!(conversation, "closing the conversation: {error}");
            false
        })
    }

    async fn send_sip(
        &mut self,
        leg: SipLeg,
        send: SipSend,
        handles: &mut HashMap<(String, u32, String), ServerTxHandle>,
    ) {
        let sip = &self.voice.0.sip;
        match send {
            SipSend::Respond(response) => {
                let call_id = response.headers.call_id().unwrap_or_default().to_owned();
                let Ok(cseq) = response.headers.cseq() else {
                    return;
                };
                let key = (call_id, cseq.seq, cseq.method.to_string());
                let handle = if response.status.is_final() {
                    handles.remove(&key)
                } else {
                    handles.get(&key).cloned()
                };
                match handle {
                    Some(handle) => {
                        if let Err(error) = handle.respond(response).await {
                            tracing::debug!("voice: response not sent: {error}");
                        }
                    }
                    None => tracing::debug!(?key, "voice: no transaction for a response"),
                }
            }
            SipSend::Stateless(message) => {
                let call_id = message.headers().call_id().unwrap_or_default().to_owned();
                if let Some(target) = self.target_of(leg, &call_id) {
                    let _ = sip.send_stateless(message, target).await;
                }
            }
            SipSend::Request(request) | SipSend::Cancel(request) => {
                let call_id = request.headers.call_id().unwrap_or_default().to_owned();
                let Some(target) = self.target_of(leg, &call_id) else {
                    return;
                };
                let mut request = request;
                if request.method == Method::Cancel {
                    // RFC 3261 §9.1: the CANCEL carries the INVITE's Via.
                    let Some(via) = self.vias.get(&call_id) else {
                        return;
                    };
                    let mut headers = Headers::new();
                    headers.push(HeaderName::Via, via.clone());
                    for header in &request.headers {
                        headers.push(header.name.clone(), header.value.clone());
                    }
                    request.headers = headers;
                }
                let method = request.method.clone();
                let Ok(mut tx) = sip.send_request(request, target).await else {
                    let _ = self
                        .me
                        .send(Msg::Client {
                            leg,
                            method,
                            outcome: ClientOutcome::TransportError,
                        })
                        .await;
                    return;
                };
                if method == Method::Invite {
                    self.vias.insert(call_id, tx.via().to_owned());
                }
                let me = self.me.clone();
                tokio::spawn(async move {
                    while let Some(outcome) = tx.next().await {
                        let message = Msg::Client {
                            leg,
                            method: method.clone(),
                            outcome,
                        };
                        if me.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }
}

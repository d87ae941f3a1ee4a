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
    Call, CallConfig, CallInput, CallOutput, CallSetup, Device, OfferOutcome, SipLeg, SipSend,
};
use ccu_channels::ivr::{Ivr, Opening};
use ccu_channels::media::announce::QueueStatus;
use ccu_channels::media::call::CallStreams;
use ccu_channels::media::player::PromptLibrary;
use ccu_channels::media::relay::{Leg, StreamStart};
use ccu_channels::sip::Uri;
use ccu_channels::sip::dialog::{DialogConfig, DialogEvent};
use ccu_channels::sip::endpoint::{
    ClientOutcome, IncomingRequest, ServerTxHandle, SipHandle, Target,
};
use ccu_channels::sip::message::{HeaderName, Headers, Method, StatusCode};
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
use crate::config::{Channel, PortRange};
use crate::hub::Arrival;

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
    },
    Withdraw,
    Position(QueueStatus),
    HangUp,
}

struct Shared {
    state: AppState,
    sip: SipHandle,
    library: Arc<PromptLibrary>,
    ivr: Arc<Ivr>,
    /// Call-ID (the caller's and every phone leg's) → its call.
    calls: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
    conversations: Mutex<HashMap<i64, mpsc::Sender<Msg>>>,
    ports: PortRange,
    next_port: AtomicUsize,
    media_ip: IpAddr,
    shutdown: CancellationToken,
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
    let voice = Voice(Arc::new(Shared {
        state: state.clone(),
        sip,
        library: Arc::new(library),
        ivr: Arc::new(ivr),
        calls: Mutex::new(HashMap::new()),
        conversations: Mutex::new(HashMap::new()),
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
        lock(&self.0.calls).len()
    }

    /// Takes an INVITE the trunk gate accepted.
    pub async fn incoming(&self, incoming: IncomingRequest, trunk: TrunkCall) {
        if self.calls() >= self.0.state.settings.voice.max_calls {
            let response = incoming
                .request
                .response(StatusCode::SERVICE_UNAVAILABLE, incoming.handle.to_tag());
            let _ = incoming.handle.respond(response).await;
            return;
        }
        let Ok(call_id) = incoming.request.headers.call_id().map(str::to_owned) else {
            return;
        };
        let (tx, rx) = mpsc::channel(256);
        lock(&self.0.calls).insert(call_id.clone(), tx.clone());
        let voice = self.clone();
        tokio::spawn(async move {
            if let Err(error) = voice.run_call(incoming, trunk, tx, rx).await {
                tracing::warn!(%call_id, "call ended with an error: {error:#}");
            }
            voice.forget(&call_id);
        });
    }

    /// A request for one of our calls goes to it; anything else comes back.
    pub fn dispatch(&self, incoming: IncomingRequest) -> Option<IncomingRequest> {
        let call_id = incoming.request.headers.call_id().ok()?.to_owned();
        let sender = lock(&self.0.calls).get(&call_id).cloned();
        match sender {
            Some(sender) => {
                if let Err(mpsc::error::TrySendError::Full(Msg::Request(incoming))) =
                    sender.try_send(Msg::Request(Box::new(incoming)))
                {
                    return Some(*incoming);
                }
                None
            }
            None => Some(incoming),
        }
    }

    fn forget(&self, call_id: &str) {
        let Some(sender) = lock(&self.0.calls).remove(call_id) else {
            return;
        };
        lock(&self.0.calls).retain(|_, s| !s.same_channel(&sender));
        lock(&self.0.conversations).retain(|_, s| !s.same_channel(&sender));
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
            let (conversation, msg) = match event.as_ref() {
                BusEvent::OfferMade {
                    offer_id,
                    conversation_id,
                    operator_id,
                    channel,
                    ..
                } if channel == "voice" => (
                    *conversation_id,
                    Msg::Offer {
                        offer: *offer_id,
                        operator: *operator_id,
                    },
                ),
                BusEvent::OfferWithdrawn {
                    conversation_id, ..
                } => (*conversation_id, Msg::Withdraw),
                BusEvent::Position {
                    conversation_id,
                    position,
                    estimated_wait_seconds,
                    ..
                } => (
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
                _ => continue,
            };
            let sender = lock(&self.0.conversations).get(&conversation).cloned();
            if let Some(sender) = sender {
                let _ = sender.try_send(msg);
            }
        }
    }

    async fn bind_media(&self) -> anyhow::Result<UdpSocket> {
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

    async fn run_call(
        &self,
        incoming: IncomingRequest,
        trunk: TrunkCall,
        me: mpsc::Sender<Msg>,
        mut rx: mpsc::Receiver<Msg>,
    ) -> anyhow::Result<()> {
        let shared = &self.0;
        let settings = &shared.state.settings;
        let caller_socket = self.bind_media().await?;
        let phone_socket = self.bind_media().await?;
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
            opening: Opening::Open,
        };
        let caller_call_id = incoming.request.headers.call_id()?.to_owned();
        let mut call = match Call::new(
            Instant::now(),
            config,
            setup,
            shared.library.clone(),
            shared.ivr.clone(),
        ) {
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
            caller_call_id,
            caller_target,
            phones: HashMap::new(),
            vias: HashMap::new(),
            conversation: None,
            operator: None,
            answered: false,
        };
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
                        &caller_socket,
                        &phone_socket,
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
                            let request = &incoming.request;
                            let call_id = request.headers.call_id().unwrap_or_default().to_owned();
                            let leg = if call_id == context.caller_call_id {
                                Some(SipLeg::Caller)
                            } else {
                                call.phone_leg(&call_id)
                            };
                            // Kept only for a leg the call answers: a request
                            // answered 481 below must not leave an entry behind.
                            if leg.is_some()
                                && let Ok(cseq) = request.headers.cseq()
                                && request.method != Method::Ack
                            {
                                handles.insert((call_id.clone(), cseq.seq, cseq.method.to_string()), incoming.handle.clone());
                            }
                            match leg {
                                Some(leg) => call.handle(now, CallInput::Sip { leg, event: DialogEvent::Request(request) }),
                                None if request.method != Method::Ack => {
                                    let response = request.response(StatusCode::CALL_DOES_NOT_EXIST, incoming.handle.to_tag());
                                    let _ = incoming.handle.respond(response).await;
                                }
                                None => {}
                            }
                        }
                        Msg::Client { leg, method, outcome } => match outcome {
                            ClientOutcome::Response(response) => {
                                call.handle(now, CallInput::Sip { leg, event: DialogEvent::Response(&response) });
                            }
                            ClientOutcome::Timeout | ClientOutcome::TransportError => {
                                call.handle(now, CallInput::Sip { leg, event: DialogEvent::RequestFailed { method } });
                            }
                        },
                        Msg::Offer { offer, operator } => {
                            let conversation = context.conversation.unwrap_or_default();
                            let bindings = shared.sip.bindings(OperatorId(operator));
                            let mut devices = Vec::new();
                            for binding in bindings {
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
                                context.phones.insert(device.call_id.clone(), target);
                                lock(&shared.calls).insert(device.call_id.clone(), context.me.clone());
                                devices.push(device);
                            }
                            context.operator = Some((offer, operator));
                            tracing::info!(offer, operator, devices = devices.len(), "ringing the operator's phones");
                            call.handle(now, CallInput::Offer { offer, operator, conversation, devices });
                        }
                        Msg::Withdraw => call.handle(now, CallInput::WithdrawOffer),
                        Msg::Position(status) => call.handle(now, CallInput::QueueStatus(status)),
                        Msg::HangUp => call.handle(now, CallInput::HangUp),
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
    operator: Option<(u64, i64)>,
    answered: bool,
}

impl CallContext {
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
        caller_socket: &UdpSocket,
        phone_socket: &UdpSocket,
        call: &mut Call,
    ) {
        let shared = &self.voice.0;
        match output {
            CallOutput::Rtp { leg, to, bytes } => {
                let socket = match leg {
                    Leg::A => caller_socket,
                    Leg::B => phone_socket,
                };
                let _ = socket.try_send_to(&bytes, to);
            }
            CallOutput::Sip { leg, send } => self.send_sip(leg, send, handles).await,
            CallOutput::Route {
                queue,
                language,
                ivr_path,
                ..
            } => {
                let path: Vec<String> = ivr_path.iter().map(ToString::to_string).collect();
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
                        lock(&shared.conversations).insert(conversation.id, self.me.clone());
                    }
                    Err(error) => {
                        tracing::error!(%queue, "the call could not be queued: {error}");
                        call.handle(Instant::now(), CallInput::HangUp);
                    }
                }
            }
            CallOutput::OfferOutcome { offer, outcome } => {
                let Some((_, operator)) = self.operator.filter(|(o, _)| *o == offer) else {
                    return;
                };
                let router = shared.state.hub.router();
                let result = match outcome {
                    OfferOutcome::Accepted => {
                        self.answered = true;
                        router.accept(operator, offer).await
                    }
                    OfferOutcome::Declined(_) => router.decline(operator, offer).await,
                    // The router's own offer timeout settles a missed offer.
                    OfferOutcome::Missed => Ok(()),
                };
                if let Err(error) = result {
                    tracing::warn!(offer, operator, ?outcome, "router: {error}");
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
                    }
                    self.answered = false;
                }
            }
            CallOutput::Record(record) => {
                tracing::info!(conversation = ?self.conversation, ?record, "call event");
            }
            CallOutput::CallbackRequested => {
                tracing::info!(conversation = ?self.conversation, "callback requested");
            }
            CallOutput::Ended { cause } => {
                tracing::info!(conversation = ?self.conversation, cause = cause.as_str(), "call ended");
                if let (Some(conversation), Some((_, operator)), true) =
                    (self.conversation, self.operator, self.answered)
                {
                    let _ = shared.state.hub.complete(conversation, operator).await;
                    shared.state.hub.announce_end(conversation, "voice").await;
                }
            }
        }
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

//! The SIP endpoint: the async shell around the sans-IO layers. It owns
//! the UDP socket and the TCP listener, frames and validates what arrives,
//! keeps the server transaction table and its timers, answers OPTIONS,
//! runs the registrar, and hands every other request to the transaction
//! user (TU: dialogs, calls) with a handle to answer it.
//!
//! # For the server
//!
//! ```
//! use ccu_channels::sip::endpoint::{SipConfig, SipEndpoint};
//! use ccu_channels::sip::registrar::{OperatorId, StaticCredentials, StoredCredential};
//! use tokio_util::sync::CancellationToken;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Application::build binds CCU_SIP_ADDR (UDP and TCP on one port); tests bind port 0.
//! let (udp, tcp) = SipEndpoint::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
//! let config = SipConfig::default(); // or deserialized from `[sip]`
//! // The server implements `SipCredentials` over its store (HA1 values from `ha1_for`).
//! let mut users = StaticCredentials::default();
//! let realm = config.registrar.realm.clone();
//! users.0.insert("1001".into(), StoredCredential::from_password(OperatorId(1), "1001", &realm, "s3cret"));
//! let shutdown = CancellationToken::new();
//! let (endpoint, mut requests) =
//!     SipEndpoint::start(config, udp, Some(tcp), users, shutdown.child_token()).unwrap();
//! assert_eq!(endpoint.udp_addr().port(), endpoint.tcp_addr().unwrap().port());
//!
//! // The TU loop: INVITE, BYE, INFO... (REGISTER and OPTIONS are handled inside).
//! tokio::spawn(async move {
//!     while let Some(incoming) = requests.recv().await {
//!         let response = incoming.request.response(
//!             ccu_channels::sip::StatusCode::TEMPORARILY_UNAVAILABLE,
//!             incoming.handle.to_tag(),
//!         );
//!         let _ = incoming.handle.respond(response).await;
//!     }
//! });
//! // The call offer finds the operator's phones, and sends them requests
//! // through client transactions (`send_request(request, Target::Udp(binding.source))`).
//! assert!(endpoint.bindings(OperatorId(1)).is_empty());
//! shutdown.cancel();
//! endpoint.wait().await;
//! # });
//! ```
//!
//! # Inside
//!
//! One core task owns the server and client transaction tables (keyed by
//! [`TransactionKey`]), the rate limiter and the UDP socket; it sleeps until
//! the earliest transaction deadline (one timer heap, not a task per
//! timer), a datagram, or an input from a TCP connection or a TU handle.
//! Each TCP connection is a task that frames the stream with
//! [`receive_stream`] and writes what the core sends it. REGISTERs go to a
//! registrar task that looks the user up through [`SipCredentials`] (an
//! async store call) and then decides with the sans-IO [`Registrar`].
//!
//! What the validation layer refuses (400, 405/501 with Allow, 416, 420,
//! 505, 513…) is answered statelessly; what cannot be answered is dropped.
//! New requests are rate-limited per source address ([`RateLimiter`]);
//! the core never waits on a peer (UDP sends and hand-offs to TCP
//! connections and the TU do not block: a full queue means `503` or a
//! transport error), so one slow or hostile peer cannot stall the others.
//!
//! Responses go back over the connection a request came on, or for UDP to
//! the Via `received`/`rport` address (RFC 3261 §18.2.2, RFC 3581), which
//! [`Request::record_source`] stamps on every request received.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::sip::message::{HeaderName, Message, Method, Request, Response, StatusCode};
use crate::sip::parse::Limits;
use crate::sip::rate::{RateDecision, RateLimitConfig, RateLimiter};
use crate::sip::registrar::{
    Binding, OperatorId, RegisterContext, Registrar, RegistrarConfig, SipCredentials,
};
use crate::sip::transaction::{
    Action, ClientEvent, ClientTransaction, ServerEvent, ServerState, ServerTransaction,
    TimerConfig, TransactionKey, Transport,
};
use crate::sip::transport::{TransportKind, response_destination};
use crate::sip::trunk::{NumberConfig, SourceNet, TrunkConfig};
use crate::sip::validate::{Inbound, Policy, StreamInbound, receive_datagram, receive_stream};

/// Endpoint settings (`[sip]` in the server's configuration). Every field
/// has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// RFC 3261 T1 (RTT estimate), T2 and T4, in milliseconds.
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// Larger messages get `513` (RFC 3261 §21.5.14).
    pub max_message_size: usize,
    /// TCP connections open at once; further ones are closed at accept.
    pub max_tcp_connections: usize,
    /// A TCP connection silent this long is closed.
    pub tcp_idle_timeout_secs: u64,
    /// Server transactions at once; beyond, new requests get `503`. A
    /// non-INVITE transaction over UDP stays 64·T1 = 32 s after its final
    /// response (Timer J, to absorb retransmissions) and takes a few KB, so
    /// this bounds both memory (50,000: ~200 MB) and the sustained UDP
    /// request rate before `503`s (50,000 / 32 s: ~1,500 requests/s).
    pub max_transactions: usize,
    /// Requests waiting for the TU; beyond, `503`.
    pub tu_queue: usize,
    /// `Server` header value of the responses the endpoint makes itself.
    pub server_name: String,
    pub rate_limit: RateLimitConfig,
    pub registrar: RegistrarConfig,
    /// The calling code of numbers written without one (`"39"`: Italy).
    pub default_country_code: String,
    /// The unified number(s), E.164, and where their calls go
    /// (`[sip.numbers."+390612345678"]`). Read by [`TrunkGate`].
    ///
    /// [`TrunkGate`]: crate::sip::trunk::TrunkGate
    pub numbers: BTreeMap<String, NumberConfig>,
    /// The carriers' trunks that may deliver calls to those numbers
    /// (`[[sip.trunks]]`).
    pub trunks: Vec<TrunkConfig>,
}

impl Default for SipConfig {
    fn default() -> SipConfig {
        SipConfig {
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            max_message_size: Limits::default().max_message_size,
            max_tcp_connections: 1_024,
            tcp_idle_timeout_secs: 300,
            max_transactions: 50_000,
            tu_queue: 1_024,
            server_name: "ccu".into(),
            rate_limit: RateLimitConfig::default(),
            registrar: RegistrarConfig::default(),
            default_country_code: crate::sip::phone::DEFAULT_COUNTRY_CODE.into(),
            numbers: BTreeMap::new(),
            trunks: Vec::new(),
        }
    }
}

impl SipConfig {
    fn timers(&self) -> TimerConfig {
        TimerConfig {
            t1: Duration::from_millis(self.t1_ms),
            t2: Duration::from_millis(self.t2_ms),
            t4: Duration::from_millis(self.t4_ms),
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            limits: Limits {
                max_message_size: self.max_message_size,
                ..Limits::default()
            },
            ..Policy::default()
        }
    }
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot read the local address of the SIP {transport} socket: {source}")]
    LocalAddr {
        transport: TransportKind,
        source: std::io::Error,
    },
    #[error("cannot set up the SIP UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("no randomness for the nonce secret: {0}")]
    Random(getrandom::Error),
    #[error("sip.registrar.algorithms is empty: at least one digest algorithm is needed")]
    NoDigestAlgorithms,
}

/// Why a response could not be handed to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// An ACK has no transaction and gets no response (RFC 3261 §17.1.1.3).
    #[error("an ACK has no transaction to respond on")]
    NoTransaction,
    #[error("the SIP endpoint has shut down")]
    Closed,
}

/// A request for the TU, with the way to answer it.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The request, its top Via stamped with `received`/`rport`.
    pub request: Request,
    pub source: SocketAddr,
    pub transport: TransportKind,
    pub handle: ServerTxHandle,
}

/// Answers one server transaction. Cheap to clone; outlives the
/// transaction harmlessly (responses after the final one are dropped, RFC
/// 3261 §17.2.2).
#[derive(Debug, Clone)]
pub struct ServerTxHandle {
    key: Option<TransactionKey>,
    to_tag: String,
    core: mpsc::Sender<CoreInput>,
    cancelled: CancellationToken,
}

impl ServerTxHandle {
    /// The To tag to put in every response of this transaction (and of the
    /// dialog it creates): random, drawn by the endpoint.
    pub fn to_tag(&self) -> &str {
        &self.to_tag
    }

    /// Sends a provisional or final response through the transaction,
    /// which retransmits it over UDP as RFC 3261 §17.2 says.
    pub async fn respond(&self, response: Response) -> Result<(), RespondError> {
        let key = self.key.clone().ok_or(RespondError::NoTransaction)?;
        self.core
            .send(CoreInput::Respond { key, response })
            .await
            .map_err(|_| RespondError::Closed)
    }

    /// Cancelled when a CANCEL for this INVITE arrived: the endpoint has
    /// already answered it `487 Request Terminated` (RFC 3261 §9.2).
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancelled
    }
}

/// Where a request from ccu goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Udp(SocketAddr),
    /// Over the open TCP connection from this peer (a phone registered
    /// over TCP: its binding's `source`). Connecting out is not done yet.
    Tcp(SocketAddr),
}

/// What happens to a request sent with [`SipHandle::send_request`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientOutcome {
    /// A provisional or final response (RFC 3261 §17.1: retransmissions
    /// are absorbed; the ACK of a non-2xx final is sent by the endpoint).
    Response(Response),
    /// Timer B or F: no final response (treat as 408).
    Timeout,
    /// The request could not be sent (no such TCP connection, socket
    /// error).
    TransportError,
}

/// The responses to one request sent by ccu. Ends (`None`) when the
/// transaction is over.
#[derive(Debug)]
pub struct ClientTx {
    events: mpsc::Receiver<ClientOutcome>,
    branch: String,
    via: String,
}

impl ClientTx {
    pub async fn next(&mut self) -> Option<ClientOutcome> {
        self.events.recv().await
    }

    /// The branch the endpoint put in the request's Via (for a CANCEL,
    /// which must carry the same one, RFC 3261 §9.1).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The whole Via value the endpoint put on the request: a CANCEL of
    /// it repeats it (`UacCall::sent_with_via`), and the endpoint then
    /// keeps it.
    pub fn via(&self) -> &str {
        &self.via
    }
}

/// Counters since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub datagrams_received: u64,
    pub requests_received: u64,
    /// Retransmitted requests matched to their transaction.
    pub retransmissions_absorbed: u64,
    /// Requests answered by the validation layer (400, 501, 513...).
    pub rejected: u64,
    pub dropped: u64,
    /// Over the rate limit: answered `503`.
    pub rate_limited_refused: u64,
    /// Over the rate limit: dropped.
    pub rate_limited_dropped: u64,
    pub tcp_connections_refused: u64,
    pub messages_sent: u64,
    pub send_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_received: AtomicU64,
    requests_received: AtomicU64,
    retransmissions_absorbed: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    rate_limited_refused: AtomicU64,
    rate_limited_dropped: AtomicU64,
    tcp_connections_refused: AtomicU64,
    messages_sent: AtomicU64,
    send_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> EndpointStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EndpointStats {
            datagrams_received: get(&self.datagrams_received),
            requests_received: get(&self.requests_received),
            retransmissions_absorbed: get(&self.retransmissions_absorbed),
            rejected: get(&self.rejected),
            dropped: get(&self.dropped),
            rate_limited_refused: get(&self.rate_limited_refused),
            rate_limited_dropped: get(&self.rate_limited_dropped),
            tcp_connections_refused: get(&self.tcp_connections_refused),
            messages_sent: get(&self.messages_sent),
            send_failures: get(&self.send_failures),
        }
    }
}

/// A running endpoint: its tasks, and a [`SipHandle`] to talk to it
/// (`SipEndpoint` derefs to it).
pub struct SipEndpoint {
    handle: SipHandle,
    tasks: JoinSet<()>,
}

/// What the rest of the server holds of the endpoint: cheap to clone,
/// usable from any task (the API lists registrations, the call layer sends
/// requests, `/metrics` reads the counters).
#[derive(Clone)]
pub struct SipHandle {
    core: mpsc::Sender<CoreInput>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    registrar: Arc<Mutex<Registrar>>,
    counters: Arc<Counters>,
}

impl std::ops::Deref for SipEndpoint {
    type Target = SipHandle;

    fn deref(&self) -> &SipHandle {
        &self.handle
    }
}

/// The clock of the shell. Tokio's, so that `tokio::time::pause` moves
/// the transaction timers in tests.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Locks the registrar. A std mutex: the critical sections are short and
/// never await; a panic inside one leaves consistent-enough state (maps
/// of bindings), so poisoning is ignored.
fn lock(registrar: &Mutex<Registrar>) -> std::sync::MutexGuard<'_, Registrar> {
    registrar.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SipEndpoint {
    /// Binds UDP and TCP on the same address. With port 0, UDP picks the
    /// port and TCP takes the same one (retrying a few times if it is taken).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
        let mut last_error = None;
        for _ in 0..8 {
            let udp = UdpSocket::bind(addr).await?;
            let port = udp.local_addr()?.port();
            match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                Ok(tcp) => return Ok((udp, tcp)),
                Err(e) if addr.port() == 0 => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    /// Starts the endpoint on bound sockets (tokio ones: convert std
    /// sockets with `from_std` after `set_nonblocking(true)`). Must be
    /// called inside a tokio runtime. Requests other than REGISTER, OPTIONS
    /// and CANCEL arrive on the returned receiver; if it is dropped or full
    /// they get `503`. Everything stops when `shutdown` is cancelled.
    pub fn start<C: SipCredentials>(
        config: SipConfig,
        udp: UdpSocket,
        tcp: Option<TcpListener>,
        credentials: C,
        shutdown: CancellationToken,
    ) -> Result<(SipEndpoint, mpsc::Receiver<IncomingRequest>), EndpointError> {
        if config.registrar.algorithms.is_empty() {
            return Err(EndpointError::NoDigestAlgorithms);
        }
        let udp_addr = udp
            .local_addr()
            .map_err(|source| EndpointError::LocalAddr {
                transport: TransportKind::Udp,
                source,
            })?;
        let tcp_addr = tcp
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|source| EndpointError::LocalAddr {
                transport: TransportKind::Tcp,
                source,
            })?;
        // UDP sends go through a std clone of the socket: a direct
        // non-blocking sendto. Tokio's `try_send_to` answers WouldBlock
        // until the reactor has seen the socket writable, which lost the
        // first datagram of a fresh endpoint.
        let std_udp = udp.into_std().map_err(EndpointError::Socket)?;
        let udp_sender = std_udp.try_clone().map_err(EndpointError::Socket)?;
        let udp = UdpSocket::from_std(std_udp).map_err(EndpointError::Socket)?;
        let mut secret = [0_u8; 32];
        getrandom::fill(&mut secret).map_err(EndpointError::Random)?;
        let seed = getrandom::u64().map_err(EndpointError::Random)?;

        let registrar = Arc::new(Mutex::new(Registrar::new(config.registrar.clone(), secret)));
        let counters = Arc::new(Counters::default());
        let (core_tx, core_rx) = mpsc::channel(4_096);
        let (tu_tx, tu_rx) = mpsc::channel(config.tu_queue.max(1));
        let (register_tx, register_rx) = mpsc::channel(config.tu_queue.max(1));
        let mut tasks = JoinSet::new();

        let policy = Arc::new(config.policy());
        if let Some(listener) = tcp {
            tasks.spawn(accept_loop(
                listener,
                AcceptContext {
                    core: core_tx.clone(),
                    policy: policy.clone(),
                    connections: Arc::new(Semaphore::new(config.max_tcp_connections)),
                    idle_timeout: Duration::from_secs(config.tcp_idle_timeout_secs.max(1)),
                    counters: counters.clone(),
                    shutdown: shutdown.clone(),
                },
            ));
        }
        tasks.spawn(registrar_loop(
            register_rx,
            registrar.clone(),
            Arc::new(credentials),
            shutdown.clone(),
        ));
        let core = Core {
            timers_config: config.timers(),
            allow: policy
                .allowed_methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            recv_buffer: config.max_message_size.saturating_add(1).max(2_048),
            // The trunks' addresses: their calls are admitted by the TU.
            limiter: RateLimiter::new(config.rate_limit).exempting(
                config
                    .trunks
                    .iter()
                    .flat_map(|t| t.sources.iter())
                    .filter_map(|s| SourceNet::parse(s)),
            ),
            policy,
            config,
            udp,
            udp_sender,
            transactions: HashMap::new(),
            clients: HashMap::new(),
            peers: HashMap::new(),
            udp_addr,
            timers: BinaryHeap::new(),
            ids: HashMap::new(),
            next_id: 0,
            connections: HashMap::new(),
            tu: tu_tx,
            registrar: register_tx,
            core_tx: core_tx.clone(),
            tags: TagSource(seed),
            counters: counters.clone(),
        };
        tasks.spawn(core.run(core_rx, shutdown));
        Ok((
            SipEndpoint {
                handle: SipHandle {
                    core: core_tx,
                    udp_addr,
                    tcp_addr,
                    registrar,
                    counters,
                },
                tasks,
            },
            tu_rx,
        ))
    }

    /// A handle for other tasks.
    pub fn handle(&self) -> SipHandle {
        self.handle.clone()
    }

    /// Waits until every task of the endpoint has stopped (after the
    /// shutdown token is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

impl SipHandle {
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The operator's registered devices now (for the call offer).
    pub fn bindings(&self, operator: OperatorId) -> Vec<Binding> {
        lock(&self.registrar)
            .registrations()
            .lookup(operator, now())
    }

    /// The operator's registered devices with the seconds each has left.
    pub fn bindings_with_expiry(&self, operator: OperatorId) -> Vec<(Binding, u64)> {
        let now = now();
        lock(&self.registrar)
            .registrations()
            .lookup(operator, now)
            .into_iter()
            .map(|b| {
                let left = b.expires_in(now);
                (b, left)
            })
            .collect()
    }

    pub fn stats(&self) -> EndpointStats {
        self.counters.snapshot()
    }

    /// Sends a request through a client transaction (RFC 3261 §17.1):
    /// the endpoint adds the top Via (its address, a fresh branch,
    /// `rport`), retransmits over UDP (Timers A/E) and reports responses,
    /// timeout or transport failure on the returned [`ClientTx`]. Not for
    /// ACK (use [`SipHandle::send_stateless`]); a CANCEL that carries the Via of its INVITE (RFC 3261 §9.1) keeps it.
    pub async fn send_request(
        &self,
        request: Request,
        target: Target,
    ) -> Result<ClientTx, RespondError> {
        let (events, receiver) = mpsc::channel(16);
        let (branch_tx, branch_rx) = tokio::sync::oneshot::channel();
        self.core
            .send(CoreInput::SendRequest {
                request,
                target,
                events,
                branch: branch_tx,
            })
            .await
            .map_err(|_| RespondError::Closed)?;
        let (branch, via) = branch_rx.await.map_err(|_| RespondError::Closed)?;
        Ok(ClientTx {
            events: receiver,
            branch,
            via,
        })
    }

    /// Sends a message outside any transaction (the ACK of a 2xx, a 2xx
    /// retransmission by the dialog layer). The message is sent as is: an
    /// ACK carries the Via the caller gives it.
    pub async fn send_stateless(
        &self,
        message: Message,
        target: Target,
    ) -> Result<(), RespondError> {
        self.core
            .send(CoreInput::Stateless { message, target })
            .await
            .map_err(|_| RespondError::Closed)
    }

    /// Forgets every registered device of `operator` (their SIP
    /// credentials were removed); returns how many there were.
    pub fn remove_bindings(&self, operator: OperatorId) -> usize {
        lock(&self.registrar)
            .registrations_mut()
            .remove_operator(operator)
    }

    /// Registered devices of every operator (expired ones not yet purged
    /// included), for `/metrics`.
    pub fn binding_count(&self) -> usize {
        lock(&self.registrar).registrations().len()
    }

    /// Whether the endpoint's core task is still running (`/readyz`).
    pub fn is_running(&self) -> bool {
        !self.core.is_closed()
    }
}

/// Random To tags: SplitMix64 seeded from the OS. Tags need to be unique
/// and hard to guess (RFC 3261 §19.3), not secret keys, and drawing from
/// the OS for every datagram would cost a syscall each.
struct TagSource(u64);

impl TagSource {
    fn next(&mut self) -> String {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        format!("{:016x}", z ^ (z >> 31))
    }
}

type ConnId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    Udp(SocketAddr),
    Tcp(ConnId),
}

#[derive(Debug)]
enum CoreInput {
    Opened {
        conn: ConnId,
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    SendRequest {
        request: Request,
        target: Target,
        events: mpsc::Sender<ClientOutcome>,
        branch: tokio::sync::oneshot::Sender<(String, String)>,
    },
    Stateless {
        message: Message,
        target: Target,
    },
    Stream {
        conn: ConnId,
        peer: SocketAddr,
        inbound: Inbound,
    },
    Closed {
        conn: ConnId,
    },
    Respond {
        key: TransactionKey,
        response: Response,
    },
}

struct Entry {
    id: u64,
    tx: ServerTransaction,
    destination: Destination,
    /// The deadline pushed on the heap for this transaction, if any;
    /// heap items that do not match it are stale and skipped.
    scheduled: Option<Instant>,
    to_tag: String,
    cancelled: CancellationToken,
    source: SocketAddr,
    transport: TransportKind,
}

struct ClientEntry {
    id: u64,
    tx: ClientTransaction,
    destination: Destination,
    scheduled: Option<Instant>,
    events: mpsc::Sender<ClientOutcome>,
}

struct Core {
    config: SipConfig,
    policy: Arc<Policy>,
    timers_config: TimerConfig,
    allow: String,
    recv_buffer: usize,
    udp: UdpSocket,
    /// The same socket, for sends that never wait (see `start`).
    udp_sender: std::net::UdpSocket,
    transactions: HashMap<TransactionKey, Entry>,
    clients: HashMap<TransactionKey, ClientEntry>,
    /// TCP connections by peer address, for requests to phones registered
    /// over TCP.
    peers: HashMap<SocketAddr, ConnId>,
    udp_addr: SocketAddr,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Heap ids to transactions; `true` for client transactions.
    ids: HashMap<u64, (bool, TransactionKey)>,
    next_id: u64,
    connections: HashMap<ConnId, mpsc::Sender<Vec<u8>>>,
    limiter: RateLimiter,
    tu: mpsc::Sender<IncomingRequest>,
    registrar: mpsc::Sender<IncomingRequest>,
    core_tx: mpsc::Sender<CoreInput>,
    tags: TagSource,
    counters: Arc<Counters>,
}

impl Core {
    async fn run(mut self, mut inputs: mpsc::Receiver<CoreInput>, shutdown: CancellationToken) {
        let mut buffer = vec![0_u8; self.recv_buffer];
        loop {
            let deadline = self.timers.peek().map(|Reverse((at, _))| *at);
            let sleep = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Biased: timers and TU responses before new datagrams, so a
            // flood cannot delay retransmissions and answers.
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep => self.fire_timers(now()),
                input = inputs.recv() => match input {
                    Some(input) => self.on_input(input),
                    None => break,
                },
                received = self.udp.recv_from(&mut buffer) => match received {
                    Ok((len, source)) => {
                        bump(&self.counters.datagrams_received);
                        let datagram = buffer.get(..len).unwrap_or_default().to_vec();
                        self.on_datagram(&datagram, source);
                    }
                    // E.g. ICMP errors reported on the socket: not fatal.
                    Err(e) => tracing::debug!(error = %e, "sip udp receive"),
                },
            }
        }
        self.shut_down();
    }

    /// Politely ends what is pending: `503` to requests not yet answered.
    fn shut_down(&mut self) {
        let keys: Vec<TransactionKey> = self.transactions.keys().cloned().collect();
        let now = now();
        for key in keys {
            if let Some(entry) = self.transactions.get_mut(&key)
                && matches!(
                    entry.tx.state(),
                    ServerState::Trying | ServerState::Proceeding
                )
            {
                let response = entry
                    .tx
                    .request()
                    .response(StatusCode::SERVICE_UNAVAILABLE, &entry.to_tag);
                entry.tx.handle(now, ServerEvent::Respond(response));
                self.drive(&key, now);
            }
        }
    }

    fn on_input(&mut self, input: CoreInput) {
        match input {
            CoreInput::Opened { conn, peer, writer } => {
                self.connections.insert(conn, writer);
                self.peers.insert(peer, conn);
            }
            CoreInput::Closed { conn } => {
                self.connections.remove(&conn);
                self.peers.retain(|_, c| *c != conn);
            }
            CoreInput::SendRequest {
                request,
                target,
                events,
                branch,
            } => self.send_request(request, target, events, branch),
            CoreInput::Stateless { message, target } => {
                if let Some(destination) = self.destination(target) {
                    self.send(destination, &message);
                }
            }
            CoreInput::Stream {
                conn,
                peer,
                inbound,
            } => match inbound {
                Inbound::Request(request) => {
                    self.on_request(request, peer, Destination::Tcp(conn), TransportKind::Tcp);
                }
                Inbound::Response(response) => self.on_response(response),
                Inbound::Reply(_) | Inbound::Drop(_) => bump(&self.counters.dropped),
            },
            CoreInput::Respond { key, response } => {
                let now = now();
                if let Some(entry) = self.transactions.get_mut(&key) {
                    entry.tx.handle(now, ServerEvent::Respond(response));
                    self.drive(&key, now);
                }
            }
        }
    }

    fn on_datagram(&mut self, datagram: &[u8], source: SocketAddr) {
        let tag = self.tags.next();
        match receive_datagram(datagram, &self.policy, &tag) {
            Inbound::Request(request) => {
                self.on_request(
                    request,
                    source,
                    Destination::Udp(source),
                    TransportKind::Udp,
                );
            }
            Inbound::Response(response) => self.on_response(response),
            Inbound::Reply(reply) => {
                // Garbage floods count against the source's budget too, so
                // that the endpoint does not amplify them.
                if self.limiter.check(source.ip(), now()) == RateDecision::Allow {
                    bump(&self.counters.rejected);
                    self.send(Destination::Udp(source), &Message::Response(reply));
                } else {
                    bump(&self.counters.rate_limited_dropped);
                }
            }
            Inbound::Drop(reason) => {
                tracing::debug!(%source, %reason, "sip datagram dropped");
                bump(&self.counters.dropped);
            }
        }
    }

    fn on_request(
        &mut self,
        mut request: Request,
        source: SocketAddr,
        destination: Destination,
        transport: TransportKind,
    ) {
        bump(&self.counters.requests_received);
        let now = now();
        if request.record_source(source).is_err() {
            bump(&self.counters.dropped);
            return;
        }
        let Ok(key) = TransactionKey::for_request(&request) else {
            bump(&self.counters.dropped);
            return;
        };
        if let Some(entry) = self.transactions.get_mut(&key) {
            // A retransmission, or the ACK of a non-2xx final response.
            if request.method != Method::Ack {
                bump(&self.counters.retransmissions_absorbed);
            }
            entry.tx.handle(now, ServerEvent::Request(request));
            self.drive(&key, now);
            return;
        }
        let is_ack = request.method == Method::Ack;
        // A trunk's calls pass (the call layer admits them); its other
        // requests are limited like anybody's.
        let call_request = matches!(
            request.method,
            Method::Invite
                | Method::Ack
                | Method::Bye
                | Method::Cancel
                | Method::Info
                | Method::Prack
                | Method::Update
                | Method::Refer
                | Method::Notify
        );
        let decision = if call_request && self.limiter.is_exempt(source.ip()) {
            RateDecision::Allow
        } else {
            self.limiter.check(source.ip(), now)
        };
        match decision {
            RateDecision::Allow => {}
            RateDecision::Refuse { retry_after_secs } if !is_ack => {
                bump(&self.counters.rate_limited_refused);
                let mut response =
                    request.response(StatusCode::SERVICE_UNAVAILABLE, &self.tags.next());
                response
                    .headers
                    .push(HeaderName::RetryAfter, retry_after_secs.to_string());
                self.send(destination, &Message::Response(response));
                return;
            }
            RateDecision::Refuse { .. } | RateDecision::Drop => {
                bump(&self.counters.rate_limited_dropped);
                return;
            }
        }
        if is_ack {
            // The ACK of a 2xx: no transaction (RFC 3261 §17.1.1.3); the
            // dialog layer in the TU wants it.
            let handle = ServerTxHandle {
                key: None,
                to_tag: String::new(),
                core: self.core_tx.clone(),
                cancelled: CancellationToken::new(),
            };
            let _ = self.tu.try_send(IncomingRequest {
                request,
                source,
                transport,
                handle,
            });
            return;
        }
        if self.transactions.len() >= self.config.max_transactions {
            let response = request.response(StatusCode::SERVICE_UNAVAILABLE, &self.tags.next());
            self.send(destination, &Message::Response(response));
            return;
        }
        let destination = match (destination, request.headers.top_via()) {
            (Destination::Udp(_), Ok(via)) => Destination::Udp(response_destination(&via, source)),
            (other, _) => other,
        };
        let tx_transport = if transport.is_reliable() {
            Transport::Reliable
        } else {
            Transport::Unreliable
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let entry = Entry {
            id,
            tx: ServerTransaction::new(request, tx_transport, self.timers_config, now),
            destination,
            scheduled: None,
            to_tag: self.tags.next(),
            cancelled: CancellationToken::new(),
            source,
            transport,
        };
        self.ids.insert(id, (false, key.clone()));
        self.transactions.insert(key.clone(), entry);
        self.drive(&key, now);
    }

    /// Runs a transaction's actions until it has none, then schedules its
    /// next deadline.
    fn drive(&mut self, key: &TransactionKey, now: Instant) {
        loop {
            let Some(entry) = self.transactions.get_mut(key) else {
                return;
            };
            let Some(action) = entry.tx.poll(now) else {
                break;
            };
            let destination = entry.destination;
            let id = entry.id;
            let (source, transport) = (entry.source, entry.transport);
            match action {
                Action::Send(message) => {
                    if !self.send(destination, &message)
                        && let Some(entry) = self.transactions.get_mut(key)
                    {
                        entry.tx.handle(now, ServerEvent::TransportError);
                    }
                }
                Action::PassToTu(Message::Request(request)) => {
                    self.dispatch(key, request, source, transport, now);
                }
                Action::PassToTu(Message::Response(_)) => {}
                Action::Timeout => tracing::debug!(?key, "sip server transaction timed out"),
                Action::TransportError => {
                    tracing::debug!(?key, "sip transport error");
                }
                Action::Terminated => {
                    self.transactions.remove(key);
                    self.ids.remove(&id);
                    return;
                }
            }
        }
        if let Some(entry) = self.transactions.get_mut(key) {
            let next = entry.tx.next_deadline();
            if next != entry.scheduled {
                entry.scheduled = next;
                if let Some(at) = next {
                    self.timers.push(Reverse((at, entry.id)));
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some((client, key)) = self.ids.get(&id).cloned() else {
                continue;
            };
            if client {
                if let Some(entry) = self.clients.get_mut(&key)
                    && entry.scheduled == Some(at)
                {
                    entry.scheduled = None;
                    self.drive_client(&key, now);
                }
            } else if let Some(entry) = self.transactions.get_mut(&key)
                && entry.scheduled == Some(at)
            {
                entry.scheduled = None;
                self.drive(&key, now);
            }
        }
    }

    fn destination(&self, target: Target) -> Option<Destination> {
        match target {
            Target::Udp(addr) => Some(Destination::Udp(addr)),
            Target::Tcp(peer) => self.peers.get(&peer).map(|c| Destination::Tcp(*c)),
        }
    }

    fn send_request(
        &mut self,
        mut request: Request,
        target: Target,
        events: mpsc::Sender<ClientOutcome>,
        branch_reply: tokio::sync::oneshot::Sender<(String, String)>,
    ) {
        let now = now();
        let Some(destination) = self.destination(target) else {
            let _ = branch_reply.send((String::new(), String::new()));
            let _ = events.try_send(ClientOutcome::TransportError);
            return;
        };
        let (transport, tx_transport) = match destination {
            Destination::Udp(_) => (TransportKind::Udp, Transport::Unreliable),
            Destination::Tcp(_) => (TransportKind::Tcp, Transport::Reliable),
        };
        // A CANCEL carries the Via of the INVITE it cancels (RFC 3261
        // §9.1): the caller gives it. Anything else gets our Via on top
        // (§8.1.1.7, §18.1.1).
        let given = (request.method == Method::Cancel)
            .then(|| request.headers.top_via().ok())
            .flatten()
            .and_then(|via| Some((via.branch()?.to_owned(), via.to_string())));
        let (branch, via) = match given {
            Some(given) => given,
            None => {
                let branch = format!("z9hG4bK{}", self.tags.next());
                let via = format!(
                    "SIP/2.0/{transport} {};branch={branch};rport",
                    self.udp_addr
                );
                let mut headers = crate::sip::message::Headers::new();
                headers.push(HeaderName::Via, via.clone());
                for header in &request.headers {
                    headers.push(header.name.clone(), header.value.clone());
                }
                request.headers = headers;
                (branch, via)
            }
        };
        let _ = branch_reply.send((branch, via));
        let Ok(key) = TransactionKey::for_request(&request) else {
            let _ = events.try_send(ClientOutcome::TransportError);
            return;
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.ids.insert(id, (true, key.clone()));
        self.clients.insert(
            key.clone(),
            ClientEntry {
                id,
                tx: ClientTransaction::new(request, tx_transport, self.timers_config, now),
                destination,
                scheduled: None,
                events,
            },
        );
        self.drive_client(&key, now);
    }

    fn on_response(&mut self, response: Response) {
        let now = now();
        let Ok(key) = TransactionKey::for_response(&response) else {
            bump(&self.counters.dropped);
            return;
        };
        match self.clients.get_mut(&key) {
            Some(entry) => {
                entry.tx.handle(now, ClientEvent::Response(response));
                self.drive_client(&key, now);
            }
            // A response that matches nothing is dropped (RFC 3261 §18.1.2).
            None => bump(&self.counters.dropped),
        }
    }

    fn drive_client(&mut self, key: &TransactionKey, now: Instant) {
        loop {
            let Some(entry) = self.clients.get_mut(key) else {
                return;
            };
            let Some(action) = entry.tx.poll(now) else {
                break;
            };
            let (destination, id) = (entry.destination, entry.id);
            let events = entry.events.clone();
            // The TU's queue is bounded; a TU that does not read loses
            // events rather than stalling the core.
            match action {
                Action::Send(message) => {
                    if !self.send(destination, &message)
                        && let Some(entry) = self.clients.get_mut(key)
                    {
                        entry.tx.handle(now, ClientEvent::TransportError);
                    }
                }
                Action::PassToTu(Message::Response(response)) => {
                    let _ = events.try_send(ClientOutcome::Response(response));
                }
                Action::PassToTu(Message::Request(_)) => {}
                Action::Timeout => {
                    let _ = events.try_send(ClientOutcome::Timeout);
                }
                Action::TransportError => {
                    let _ = events.try_send(ClientOutcome::TransportError);
                }
                Action::Terminated => {
                    self.clients.remove(key);
                    self.ids.remove(&id);
                    return;
                }
            }
        }
        if let Some(entry) = self.clients.get_mut(key) {
            let next = entry.tx.next_deadline();
            if next != entry.scheduled {
                entry.scheduled = next;
                if let Some(at) = next {
                    self.timers.push(Reverse((at, entry.id)));
                }
            }
        }
    }

    fn respond_now(&mut self, key: &TransactionKey, response: Response, now: Instant) {
        if let Some(entry) = self.transactions.get_mut(key) {
            entry.tx.handle(now, ServerEvent::Respond(response));
        }
    }

    /// A new request, through its transaction, to whoever handles it.
    fn dispatch(
        &mut self,
        key: &TransactionKey,
        request: Request,
        source: SocketAddr,
        transport: TransportKind,
        now: Instant,
    ) {
        let Some(entry) = self.transactions.get(key) else {
            return;
        };
        let to_tag = entry.to_tag.clone();
        match request.method {
            Method::Options => {
                // Trunk keep-alives and capability queries (RFC 3261 §11.2).
                let mut ok = request.response(StatusCode::OK, &to_tag);
                ok.headers.push(HeaderName::Allow, self.allow.clone());
                ok.headers.push(
                    HeaderName::Accept,
                    self.policy.accepted_body_types.join(", "),
                );
                ok.headers
                    .push(HeaderName::Server, self.config.server_name.clone());
                self.respond_now(key, ok, now);
            }
            Method::Cancel => self.on_cancel(key, &request, now),
            ref method => {
                let handle = ServerTxHandle {
                    key: Some(key.clone()),
                    to_tag: to_tag.clone(),
                    core: self.core_tx.clone(),
                    cancelled: entry.cancelled.clone(),
                };
                let queue = if *method == Method::Register {
                    &self.registrar
                } else {
                    &self.tu
                };
                let incoming = IncomingRequest {
                    request,
                    source,
                    transport,
                    handle,
                };
                if let Err(e) = queue.try_send(incoming) {
                    let incoming = match e {
                        mpsc::error::TrySendError::Full(i)
                        | mpsc::error::TrySendError::Closed(i) => i,
                    };
                    let busy = incoming
                        .request
                        .response(StatusCode::SERVICE_UNAVAILABLE, &to_tag);
                    self.respond_now(key, busy, now);
                }
            }
        }
    }

    /// CANCEL (RFC 3261 §9.2): `200` to the CANCEL and `487` to its INVITE
    /// if that is still unanswered, `481` if there is no such INVITE.
    fn on_cancel(&mut self, key: &TransactionKey, cancel: &Request, now: Instant) {
        let invite_key = match key.clone() {
            TransactionKey::Rfc3261 {
                branch, sent_by, ..
            } => TransactionKey::Rfc3261 {
                branch,
                sent_by,
                method: Method::Invite.as_str().to_owned(),
            },
            TransactionKey::Rfc2543 {
                call_id,
                cseq,
                from_tag,
                top_via,
                ..
            } => TransactionKey::Rfc2543 {
                call_id,
                cseq,
                method: Method::Invite.as_str().to_owned(),
                from_tag,
                top_via,
            },
        };
        let answer = match self.transactions.get_mut(&invite_key) {
            Some(invite) if invite.tx.state() == ServerState::Proceeding => {
                let terminated = invite
                    .tx
                    .request()
                    .response(StatusCode::REQUEST_TERMINATED, &invite.to_tag);
                invite.tx.handle(now, ServerEvent::Respond(terminated));
                invite.cancelled.cancel();
                let tag = invite.to_tag.clone();
                self.drive(&invite_key, now);
                cancel.response(StatusCode::OK, &tag)
            }
            Some(invite) => cancel.response(StatusCode::OK, &invite.to_tag.clone()),
            None => cancel.response(StatusCode::CALL_DOES_NOT_EXIST, &self.tags.next()),
        };
        self.respond_now(key, answer, now);
    }

    /// Sends without waiting; `false` when the message could not be handed
    /// to the transport.
    fn send(&mut self, destination: Destination, message: &Message) -> bool {
        let bytes = message.to_bytes();
        let sent = match destination {
            Destination::Udp(addr) => match self.udp_sender.send_to(&bytes, addr) {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "sip udp send");
                    false
                }
            },
            Destination::Tcp(conn) => self
                .connections
                .get(&conn)
                .is_some_and(|writer| writer.try_send(bytes).is_ok()),
        };
        bump(if sent {
            &self.counters.messages_sent
        } else {
            &self.counters.send_failures
        });
        sent
    }
}

/// What the accept loop and its connections share.
struct AcceptContext {
    core: mpsc::Sender<CoreInput>,
    policy: Arc<Policy>,
    connections: Arc<Semaphore>,
    idle_timeout: Duration,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
}

async fn accept_loop(listener: TcpListener, cx: AcceptContext) {
    let cx = Arc::new(cx);
    let mut next_conn: ConnId = 0;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = cx.shutdown.cancelled() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = cx.connections.clone().try_acquire_owned() else {
                        bump(&cx.counters.tcp_connections_refused);
                        drop(stream);
                        continue;
                    };
                    next_conn = next_conn.wrapping_add(1);
                    let conn = next_conn;
                    let cx = cx.clone();
                    connections.spawn(async move {
                        connection(stream, peer, conn, &cx).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin.
                    tracing::warn!(error = %e, "sip tcp accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    while connections.join_next().await.is_some() {}
}

/// One TCP connection: frames requests out of the stream, writes what the
/// core sends. Ends on EOF, a framing error (after the reply, RFC 3261
/// §18.3), idleness, or shutdown.
async fn connection(stream: TcpStream, peer: SocketAddr, conn: ConnId, cx: &AcceptContext) {
    let (writer_tx, mut writer_rx) = mpsc::channel::<Vec<u8>>(64);
    if cx
        .core
        .send(CoreInput::Opened {
            conn,
            peer,
            writer: writer_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut writer) = stream.into_split();
    let mut buffer: Vec<u8> = Vec::with_capacity(4_096);
    let mut chunk = vec![0_u8; 16_384];
    'connection: loop {
        tokio::select! {
            () = cx.shutdown.cancelled() => break,
            out = writer_rx.recv() => match out {
                Some(bytes) => if writer.write_all(&bytes).await.is_err() { break },
                None => break,
            },
            read = tokio::time::timeout(cx.idle_timeout, reader.read(&mut chunk)) => {
                let len = match read {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(len)) => len,
                };
                buffer.extend_from_slice(chunk.get(..len).unwrap_or_default());
                loop {
                    // Keep-alive: a double CRLF "ping" gets a CRLF "pong"
                    // (RFC 5626 §4.4.1); lone CRLFs are dropped.
                    if buffer.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                        if buffer.windows(4).any(|w| w == b"\r\n\r\n")
                            && writer.write_all(b"\r\n").await.is_err()
                        {
                            break 'connection;
                        }
                        buffer.clear();
                        break;
                    }
                    match receive_stream(&buffer, &cx.policy, "tcp") {
                        StreamInbound::NeedMore => break,
                        StreamInbound::Message { inbound, consumed } => {
                            buffer.drain(..consumed.min(buffer.len()));
                            match inbound {
                                Inbound::Reply(reply) => {
                                    bump(&cx.counters.rejected);
                                    if writer.write_all(&reply.to_bytes()).await.is_err() {
                                        break 'connection;
                                    }
                                }
                                Inbound::Drop(_) => bump(&cx.counters.dropped),
                                inbound => {
                                    let input = CoreInput::Stream { conn, peer, inbound };
                                    if cx.core.send(input).await.is_err() {
                                        break 'connection;
                                    }
                                }
                            }
                        }
                        StreamInbound::Close { reply, error } => {
                            tracing::debug!(%peer, %error, "sip tcp framing error");
                            bump(&cx.counters.rejected);
                            if let Some(reply) = reply {
                                let _ = writer.write_all(&reply.to_bytes()).await;
                            }
                            break 'connection;
                        }
                    }
                }
            }
        }
    }
    let _ = writer.shutdown().await;
    let _ = cx.core.send(CoreInput::Closed { conn }).await;
}

/// REGISTERs: look the user up (async, in the store), then let the sans-IO
/// registrar decide. One short task per REGISTER so that a slow store
/// query does not hold up the others; the rate limiter and the transaction
/// limit bound how many there are.
async fn registrar_loop<C: SipCredentials>(
    mut requests: mpsc::Receiver<IncomingRequest>,
    registrar: Arc<Mutex<Registrar>>,
    credentials: Arc<C>,
    shutdown: CancellationToken,
) {
    let mut purge = tokio::time::interval(Duration::from_secs(60));
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = purge.tick() => lock(&registrar).purge(now(), wall_clock()),
            incoming = requests.recv() => {
                let Some(incoming) = incoming else { break };
                let registrar = registrar.clone();
                let credentials = credentials.clone();
                running.spawn(async move {
                    let username = lock(&registrar).username_to_look_up(&incoming.request);
                    let credential = match username {
                        Some(username) => credentials.lookup(&username).await,
                        None => None,
                    };
                    let response = lock(&registrar).register(
                        RegisterContext {
                            request: &incoming.request,
                            source: incoming.source,
                            transport: incoming.transport,
                            now: now(),
                            wall_clock: wall_clock(),
                            to_tag: incoming.handle.to_tag(),
                        },
                        credential.as_ref(),
                    );
                    let _ = incoming.handle.respond(response).await;
                });
            }
        }
    }
    running.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_deserializes_with_defaults_and_refuses_unknown_keys() {
        let config: SipConfig = serde_json::from_str(
            r#"{"t1_ms": 250, "rate_limit": {"burst": 10},
                "registrar": {"realm": "comune.example", "algorithms": ["SHA-256", "md5"]}}"#,
        )
        .unwrap();
        assert_eq!(config.t1_ms, 250);
        assert_eq!(config.t2_ms, 4_000);
        assert_eq!(config.rate_limit.burst, 10);
        assert_eq!(config.rate_limit.requests_per_second, 50);
        assert_eq!(config.registrar.realm, "comune.example");
        assert_eq!(
            config.registrar.algorithms,
            [
                crate::sip::digest::Algorithm::Sha256,
                crate::sip::digest::Algorithm::Md5
            ]
        );
        assert_eq!(config.registrar.min_expires, 60);
        assert!(serde_json::from_str::<SipConfig>(r#"{"t1": 250}"#).is_err());
        assert!(
            serde_json::from_str::<SipConfig>(r#"{"registrar": {"algorithms": ["SHA-1"]}}"#)
                .is_err()
        );
    }

    #[test]
    fn tags_are_16_hex_digits_and_differ() {
        let mut tags = TagSource(42);
        let a = tags.next();
        let b = tags.next();
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

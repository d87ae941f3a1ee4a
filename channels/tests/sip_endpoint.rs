#![allow(clippy::unwrap_used)]
//! The SIP endpoint over real UDP and TCP sockets on 127.0.0.1, with a
//! plain Rust peer. Timer behaviour runs on tokio's paused clock.

use std::net::SocketAddr;
use std::time::Duration;

use ccu_channels::sip::digest::{self, Algorithm};
use ccu_channels::sip::endpoint::{ClientOutcome, IncomingRequest, SipConfig, SipEndpoint, Target};
use ccu_channels::sip::message::{HeaderName, Message, Method, Response, StatusCode};
use ccu_channels::sip::parse::{parse, parse_stream};
use ccu_channels::sip::rate::RateLimitConfig;
use ccu_channels::sip::registrar::{OperatorId, StaticCredentials, StoredCredential};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REALM: &str = "ccu.test";

struct TestEndpoint {
    endpoint: SipEndpoint,
    requests: mpsc::Receiver<IncomingRequest>,
    shutdown: CancellationToken,
}

async fn spawn_endpoint(configure: impl FnOnce(&mut SipConfig)) -> TestEndpoint {
    let mut config = SipConfig::default();
    config.registrar.realm = REALM.into();
    configure(&mut config);
    let (udp, tcp) = SipEndpoint::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut users = StaticCredentials::default();
    users.0.insert(
        "1001".into(),
        StoredCredential::from_password(OperatorId(1), "1001", REALM, "right"),
    );
    let shutdown = CancellationToken::new();
    let (endpoint, requests) =
        SipEndpoint::start(config, udp, Some(tcp), users, shutdown.clone()).unwrap();
    TestEndpoint {
        endpoint,
        requests,
        shutdown,
    }
}

/// A UDP peer.
struct Peer {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Peer {
    async fn new(server: SocketAddr) -> Peer {
        Peer {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    async fn send(&self, text: &str) {
        self.socket
            .send_to(text.as_bytes(), self.server)
            .await
            .unwrap();
    }

    /// The next response, or `None` after `wait` (virtual time when
    /// paused).
    async fn recv_within(&self, wait: Duration) -> Option<Response> {
        let mut buf = vec![0_u8; 65_536];
        let (len, _) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        match parse(&buf[..len]).unwrap() {
            Message::Response(r) => Some(r),
            Message::Request(r) => panic!("unexpected request {r:?}"),
        }
    }

    async fn recv(&self) -> Response {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("a response within 5 s")
    }
}

fn request(method: &str, branch: &str, port: u16, extra: &str) -> String {
    format!(
        "{method} sip:{REALM} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1001@{REALM}>;tag=peer{branch}\r\n\
         To: <sip:1001@{REALM}>\r\n\
         Call-ID: call-{branch}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:1001@127.0.0.1:{port}>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn options_get_200_with_allow_and_the_via_records_received_and_rport() {
    let ep = spawn_endpoint(|_| {}).await;
    let peer = Peer::new(ep.endpoint.udp_addr()).await;
    peer.send(&request("OPTIONS", "opt1", 5999, "")).await;
    let ok = peer.recv().await;
    assert_eq!(ok.status, StatusCode::OK);
    let allow = ok.headers.allow().unwrap();
    assert!(allow.contains(&Method::Invite) && allow.contains(&Method::Register));
    assert!(
        ok.headers
            .get(&HeaderName::Accept)
            .unwrap()
            .contains("application/sdp")
    );
    // Sent-by said port 5999, but the response came to the real source port.
    let via = ok.headers.top_via().unwrap();
    assert_eq!(via.rport(), Some(Some(peer.port())));
    assert_eq!(ok.headers.to().unwrap().tag().map(str::len), Some(16));
}

#[tokio::test]
async fn malformed_and_oversized_datagrams_are_answered_and_the_endpoint_keeps_going() {
    let ep = spawn_endpoint(|c| c.max_message_size = 2_000).await;
    let peer = Peer::new(ep.endpoint.udp_addr()).await;
    let bad =
        request("OPTIONS", "bad1", peer.port(), "").replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS");
    peer.send(&bad).await;
    let response = peer.recv().await;
    assert_eq!(response.status, StatusCode::BAD_REQUEST);
    assert!(response.reason.contains("CSeq"), "{}", response.reason);

    let padding = format!("X-Padding: {}\r\n", "a".repeat(3_000));
    peer.send(&request("OPTIONS", "big1", peer.port(), &padding))
        .await;
    assert_eq!(peer.recv().await.status, StatusCode::MESSAGE_TOO_LARGE);

    peer.send(&request("FROB", "unk1", peer.port(), "")).await;
    let unknown = peer.recv().await;
    assert_eq!(unknown.status, StatusCode::NOT_IMPLEMENTED);
    assert!(unknown.headers.get(&HeaderName::Allow).is_some());

    // Pure garbage: no answer possible, and nothing breaks.
    peer.send("\u{0}\u{1}garbage\r\n\r\n").await;
    peer.send(&request("OPTIONS", "opt2", peer.port(), ""))
        .await;
    assert_eq!(peer.recv().await.status, StatusCode::OK);
    let stats = ep.endpoint.stats();
    assert_eq!(stats.rejected, 3, "{stats:?}");
    assert_eq!(stats.dropped, 1, "{stats:?}");
}

#[tokio::test]
async fn a_retransmitted_register_gets_the_same_401_from_the_transaction() {
    let ep = spawn_endpoint(|_| {}).await;
    let peer = Peer::new(ep.endpoint.udp_addr()).await;
    let register = request("REGISTER", "reg1", peer.port(), "");
    peer.send(&register).await;
    let first = peer.recv().await;
    assert_eq!(first.status, StatusCode::UNAUTHORIZED);
    peer.send(&register).await;
    let again = peer.recv().await;
    // Same nonce: the transaction answered, the registrar was not asked twice.
    assert_eq!(first, again);
    assert_eq!(ep.endpoint.stats().retransmissions_absorbed, 1);
}

/// The Authorization answering `challenge` with `algorithm`.
fn authorization(challenge: &Response, algorithm: Algorithm, password: &str, nc: u32) -> String {
    let offer = challenge
        .headers
        .auth_values(&HeaderName::WwwAuthenticate)
        .unwrap()
        .into_iter()
        .find(|v| v.param("algorithm") == Some(algorithm.as_str()))
        .unwrap();
    let nonce = offer.param("nonce").unwrap();
    let ha1 = digest::ha1(algorithm, "1001", REALM, password);
    let uri = format!("sip:{REALM}");
    let answer = digest::response(
        algorithm,
        &ha1,
        nonce,
        Some((nc, "abc123")),
        "REGISTER",
        &uri,
    );
    format!(
        "Authorization: Digest username=\"1001\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{answer}\", algorithm={}, qop=auth, nc={nc:08x}, cnonce=\"abc123\"\r\n",
        algorithm.as_str()
    )
}

#[tokio::test]
async fn a_phone_registers_with_sha256_over_udp_and_unregisters() {
    let ep = spawn_endpoint(|_| {}).await;
    let peer = Peer::new(ep.endpoint.udp_addr()).await;
    peer.send(&request("REGISTER", "r1", peer.port(), "Expires: 300\r\n"))
        .await;
    let challenge = peer.recv().await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    let auth = authorization(&challenge, Algorithm::Sha256, "right", 1);
    let second = request(
        "REGISTER",
        "r2",
        peer.port(),
        &format!("Expires: 300\r\n{auth}"),
    )
    .replace("CSeq: 1", "CSeq: 2")
    .replace("call-r2", "call-r1");
    peer.send(&second).await;
    let ok = peer.recv().await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let bindings = ep.endpoint.bindings(OperatorId(1));
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].source.port(), peer.port());
    assert!(bindings[0].expires_in(tokio::time::Instant::now().into_std()) <= 300);

    let auth = authorization(&challenge, Algorithm::Sha256, "right", 2);
    let unregister = request(
        "REGISTER",
        "r3",
        peer.port(),
        &format!("Expires: 0\r\n{auth}"),
    )
    .replace("CSeq: 1", "CSeq: 3")
    .replace("call-r3", "call-r1");
    peer.send(&unregister).await;
    assert_eq!(peer.recv().await.status, StatusCode::OK);
    assert!(ep.endpoint.bindings(OperatorId(1)).is_empty());
}

#[tokio::test]
async fn a_flood_from_one_address_gets_one_503_then_silence_while_others_are_served() {
    let ep = spawn_endpoint(|c| {
        c.rate_limit = RateLimitConfig {
            requests_per_second: 1,
            burst: 5,
            refusals_per_second: 1,
            ..RateLimitConfig::default()
        }
    })
    .await;
    let flooder = Peer::new(ep.endpoint.udp_addr()).await;
    for i in 0..20 {
        flooder
            .send(&request("OPTIONS", &format!("f{i}"), flooder.port(), ""))
            .await;
    }
    let mut statuses = Vec::new();
    while let Some(r) = flooder.recv_within(Duration::from_millis(500)).await {
        statuses.push(r.status.as_u16());
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(r.headers.get(&HeaderName::RetryAfter).is_some());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503]);
    let stats = ep.endpoint.stats();
    assert_eq!(stats.rate_limited_refused, 1);
    assert_eq!(stats.rate_limited_dropped, 14);

    // Another address is not affected (127.0.0.2 is loopback too on Linux).
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let port = other.local_addr().unwrap().port();
    other
        .send_to(
            request("OPTIONS", "o1", port, "").as_bytes(),
            ep.endpoint.udp_addr(),
        )
        .await
        .unwrap();
    let other = Peer {
        socket: other,
        server: ep.endpoint.udp_addr(),
    };
    assert_eq!(other.recv().await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_invite_gets_100_trying_and_its_failure_is_retransmitted_until_the_ack() {
    let mut ep = spawn_endpoint(|_| {}).await;
    let peer = Peer::new(ep.endpoint.udp_addr()).await;
    let invite = request("INVITE", "inv1", peer.port(), "");
    peer.send(&invite).await;
    let incoming = ep.requests.recv().await.unwrap();
    assert_eq!(incoming.request.method, Method::Invite);
    let started = tokio::time::Instant::now();
    // The TU has not answered: 100 Trying after 200 ms (RFC 3261 §17.2.1).
    let trying = peer.recv().await;
    assert_eq!(trying.status, StatusCode::TRYING);
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    // A retransmitted INVITE gets the 100 again and is not passed up.
    peer.send(&invite).await;
    assert_eq!(peer.recv().await.status, StatusCode::TRYING);

    let busy = incoming
        .request
        .response(StatusCode::BUSY_HERE, incoming.handle.to_tag());
    incoming.handle.respond(busy).await.unwrap();
    let answered = tokio::time::Instant::now();
    assert_eq!(peer.recv().await.status, StatusCode::BUSY_HERE);
    // Timer G: 500 ms, then 1 s, then 2 s.
    let mut at = Vec::new();
    for _ in 0..3 {
        let again = peer.recv().await;
        assert_eq!(again.status, StatusCode::BUSY_HERE);
        at.push(answered.elapsed().as_millis());
    }
    assert_eq!(at, [500, 1_500, 3_500]);
    // The ACK stops the retransmissions.
    let to_tag = incoming.handle.to_tag();
    let ack = invite
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK")
        .replace(
            &format!("To: <sip:1001@{REALM}>"),
            &format!("To: <sip:1001@{REALM}>;tag={to_tag}"),
        );
    peer.send(&ack).await;
    assert!(peer.recv_within(Duration::from_secs(40)).await.is_none());
    assert!(
        ep.requests.try_recv().is_err(),
        "the ACK of a failure stays in the transaction"
    );
}

#[tokio::test]
async fn cancel_terminates_a_pending_invite_with_487() {
    let mut ep = spawn_endpoint(|_| {}).await;
    let peer = Peer::new(ep.endpoint.udp_addr()).await;
    let invite = request("INVITE", "c1", peer.port(), "");
    peer.send(&invite).await;
    let incoming = ep.requests.recv().await.unwrap();
    let cancel = invite
        .replace("INVITE sip", "CANCEL sip")
        .replace("1 INVITE", "1 CANCEL");
    peer.send(&cancel).await;
    let mut statuses = [peer.recv().await, peer.recv().await];
    statuses.sort_by_key(|r| r.status);
    assert_eq!(statuses[0].status, StatusCode::OK);
    assert_eq!(statuses[0].headers.cseq().unwrap().method, Method::Cancel);
    assert_eq!(statuses[1].status, StatusCode::REQUEST_TERMINATED);
    tokio::time::timeout(
        Duration::from_secs(5),
        incoming.handle.cancelled().cancelled(),
    )
    .await
    .unwrap();
    // A CANCEL for nothing: 481.
    peer.send(&cancel.replace("z9hG4bKc1", "z9hG4bKnothing"))
        .await;
    assert_eq!(peer.recv().await.status, StatusCode::CALL_DOES_NOT_EXIST);
}

async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Response> {
    loop {
        if let Ok((message, used)) = parse_stream(buffer) {
            buffer.drain(..used);
            return match message {
                Message::Response(r) => Some(r),
                Message::Request(_) => panic!("request on the stream"),
            };
        }
        let mut chunk = [0_u8; 4096];
        let len = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if len == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..len]);
    }
}

#[tokio::test]
async fn tcp_frames_pipelined_and_split_messages_and_closes_after_a_framing_error() {
    let ep = spawn_endpoint(|_| {}).await;
    let mut stream = TcpStream::connect(ep.endpoint.tcp_addr().unwrap())
        .await
        .unwrap();
    let port = stream.local_addr().unwrap().port();
    let tcp = |m: &str, b: &str| request(m, b, port, "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    // Two requests in one write, and a keep-alive ping between them.
    let both = format!("{}\r\n\r\n{}", tcp("OPTIONS", "t1"), tcp("REGISTER", "t2"));
    stream.write_all(both.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    let first = read_response(&mut stream, &mut buffer).await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    // The pong of the ping may come before or after; skip CRLFs.
    let second = loop {
        let start = buffer
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        buffer.drain(..start);
        if let Some(r) = read_response(&mut stream, &mut buffer).await {
            break r;
        }
    };
    assert_eq!(second.status, StatusCode::UNAUTHORIZED);
    // One request split over two writes.
    let third = tcp("OPTIONS", "t3");
    let (a, b) = third.split_at(40);
    stream.write_all(a.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    tokio::task::yield_now().await;
    stream.write_all(b.as_bytes()).await.unwrap();
    assert_eq!(
        read_response(&mut stream, &mut buffer)
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    // A bad Content-Length cannot be re-framed: 400, then the connection closes.
    let broken = tcp("OPTIONS", "t4").replace("Content-Length: 0", "Content-Length: abc");
    stream.write_all(broken.as_bytes()).await.unwrap();
    let reply = read_response(&mut stream, &mut buffer).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        read_response(&mut stream, &mut buffer).await.is_none(),
        "closed"
    );
}

#[tokio::test]
async fn tcp_connections_over_the_limit_are_closed_at_once() {
    let ep = spawn_endpoint(|c| c.max_tcp_connections = 1).await;
    let addr = ep.endpoint.tcp_addr().unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let options = request("OPTIONS", "l1", port, "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    first.write_all(options.as_bytes()).await.unwrap();
    let mut buffer = Vec::new();
    assert_eq!(
        read_response(&mut first, &mut buffer).await.unwrap().status,
        StatusCode::OK
    );
    let mut second = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0_u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(ep.endpoint.stats().tcp_connections_refused, 1);
}

#[tokio::test]
async fn shutdown_stops_every_task() {
    let ep = spawn_endpoint(|_| {}).await;
    ep.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), ep.endpoint.wait())
        .await
        .unwrap();
}

/// A request from ccu, without Via: the endpoint adds it.
fn outgoing_options(peer_port: u16) -> ccu_channels::sip::Request {
    let text = format!(
        "OPTIONS sip:1001@127.0.0.1:{peer_port} SIP/2.0\r\nMax-Forwards: 70\r\n\
         From: <sip:ccu@{REALM}>;tag=ccu1\r\nTo: <sip:1001@{REALM}>\r\nCall-ID: out-1\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    match parse(text.as_bytes()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!(),
    }
}

impl Peer {
    async fn recv_request_within(&self, wait: Duration) -> Option<ccu_channels::sip::Request> {
        let mut buf = vec![0_u8; 65_536];
        let (len, _) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        match parse(&buf[..len]).unwrap() {
            Message::Request(r) => Some(r),
            Message::Response(r) => panic!("unexpected response {r:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_from_ccu_is_retransmitted_until_answered_and_the_answer_reported() {
    let ep = spawn_endpoint(|_| {}).await;
    let phone = Peer::new(ep.endpoint.udp_addr()).await;
    let target = Target::Udp(phone.socket.local_addr().unwrap());
    let mut tx = ep
        .endpoint
        .send_request(outgoing_options(phone.port()), target)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    // Regression: the first datagram of a fresh endpoint used to be lost
    // (tokio's try_send_to says WouldBlock before the reactor has seen the
    // socket writable).
    let first = phone
        .recv_request_within(Duration::from_secs(1))
        .await
        .expect("the first request, not only its retransmission");
    let via = first.headers.top_via().unwrap();
    assert_eq!(via.branch(), Some(tx.branch()));
    assert_eq!(via.port, Some(ep.endpoint.udp_addr().port()));
    // Timer E: the phone stays silent, ccu sends again after T1.
    let again = phone
        .recv_request_within(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert_eq!(again, first);
    let ok = first.response(StatusCode::OK, "phone1");
    phone
        .send(std::str::from_utf8(&ok.to_bytes()).unwrap())
        .await;
    match tx.next().await {
        Some(ClientOutcome::Response(r)) => {
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.headers.to().unwrap().tag(), Some("phone1"));
        }
        other => panic!("{other:?}"),
    }
    // A retransmitted 200 is absorbed; after Timer K the transaction ends.
    phone
        .send(std::str::from_utf8(&ok.to_bytes()).unwrap())
        .await;
    assert_eq!(tx.next().await, None);
    assert!(
        phone
            .recv_request_within(Duration::from_secs(40))
            .await
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_request_from_ccu_times_out_after_64_t1() {
    let ep = spawn_endpoint(|_| {}).await;
    let phone = Peer::new(ep.endpoint.udp_addr()).await;
    let target = Target::Udp(phone.socket.local_addr().unwrap());
    let mut tx = ep
        .endpoint
        .send_request(outgoing_options(phone.port()), target)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut sent_at = Vec::new();
    while phone
        .recv_request_within(Duration::from_secs(5))
        .await
        .is_some()
    {
        sent_at.push(started.elapsed().as_millis());
    }
    // T1 doubling up to T2 = 4 s (RFC 3261 §17.1.2.2).
    assert_eq!(
        sent_at,
        [
            0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ]
    );
    assert_eq!(tx.next().await, Some(ClientOutcome::Timeout));
    assert_eq!(tx.next().await, None);
}

#[tokio::test]
async fn a_request_to_a_tcp_peer_without_a_connection_is_a_transport_error() {
    let ep = spawn_endpoint(|_| {}).await;
    let mut tx = ep
        .endpoint
        .send_request(
            outgoing_options(5060),
            Target::Tcp("127.0.0.1:9".parse().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(tx.next().await, Some(ClientOutcome::TransportError));
}

#[tokio::test]
async fn a_cancel_keeps_the_via_of_its_invite_and_other_requests_get_a_fresh_one() {
    let ep = spawn_endpoint(|_| {}).await;
    let phone = Peer::new(ep.endpoint.udp_addr()).await;
    let target = Target::Udp(phone.socket.local_addr().unwrap());
    let invite_text = format!(
        "INVITE sip:1001@127.0.0.1:{p} SIP/2.0\r\nMax-Forwards: 70\r\n\
         From: <sip:ccu@{REALM}>;tag=ccu1\r\nTo: <sip:1001@{REALM}>\r\nCall-ID: out-2\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        p = phone.port()
    );
    let Message::Request(invite) = parse(invite_text.as_bytes()).unwrap() else {
        panic!()
    };
    let invite_tx = ep.endpoint.send_request(invite, target).await.unwrap();
    let sent = phone
        .recv_request_within(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(sent.headers.get(&HeaderName::Via), Some(invite_tx.via()));
    assert!(invite_tx.via().contains(invite_tx.branch()));

    // RFC 3261 §9.1: the CANCEL carries the INVITE's Via, so the phone
    // matches it to the INVITE; the endpoint keeps the one it is given.
    let cancel_text = format!(
        "CANCEL sip:1001@127.0.0.1:{p} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
         From: <sip:ccu@{REALM}>;tag=ccu1\r\nTo: <sip:1001@{REALM}>\r\nCall-ID: out-2\r\n\
         CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        p = phone.port(),
        via = invite_tx.via()
    );
    let Message::Request(cancel) = parse(cancel_text.as_bytes()).unwrap() else {
        panic!()
    };
    let cancel_tx = ep.endpoint.send_request(cancel, target).await.unwrap();
    assert_eq!(cancel_tx.branch(), invite_tx.branch());
    let sent = phone
        .recv_request_within(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(sent.method, Method::Cancel);
    let vias: Vec<&str> = sent.headers.get_all(&HeaderName::Via).collect();
    assert_eq!(vias, [invite_tx.via()], "one Via, the INVITE's");

    // Any other request with a Via of its own still gets ours on top.
    let mut options = outgoing_options(phone.port());
    options.headers = {
        let mut headers = ccu_channels::sip::Headers::new();
        headers.push(HeaderName::Via, invite_tx.via());
        for h in &options.headers {
            headers.push(h.name.clone(), h.value.clone());
        }
        headers
    };
    let options_tx = ep.endpoint.send_request(options, target).await.unwrap();
    assert_ne!(options_tx.branch(), invite_tx.branch());
}

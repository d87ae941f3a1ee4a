//! The registrar for operators' SIP phones (RFC 3261 §10.3), sans-IO.
//!
//! [`Registrar::register`] takes a REGISTER, where it came from, `now`, and
//! the caller's credential as the store returned it, and returns the
//! response; on success it updates the [`Registrations`] table, which the
//! call offer will read through [`Registrations::lookup`]. The async shell
//! (the endpoint) asks the store for the credential first, by the username
//! that [`Registrar::username_to_look_up`] reads from the Authorization
//! header.
//!
//! # Authentication
//!
//! Digest (RFC 3261 §22.4, RFC 8760) with the [`NonceManager`]: a REGISTER
//! without credentials for our realm gets `401` with one challenge per
//! configured algorithm (SHA-256 first, then MD5). The store keeps one HA1
//! per algorithm ([`StoredCredential`], computed by [`ha1_for`] when an
//! admin sets the password), never the password.
//!
//! An unknown user and a wrong password get the same answer, after the
//! same work (a digest is verified against a dummy HA1), so the answer does
//! not reveal whether the user exists. After `max_auth_failures` failures
//! from one address for one username within `auth_failure_window_secs`,
//! REGISTERs for it from there get `403` until the window has passed.
//!
//! # Bindings (§10.3 steps 6–8)
//!
//! Several Contacts per operator (one per device), each with its expiry:
//! the Contact's `expires` parameter, else the Expires header, else
//! `default_expires`; a non-zero value under `min_expires` fails the whole
//! request with `423` and `Min-Expires`, one over `max_expires` is lowered
//! to it. `Expires: 0` removes a binding, `Contact: *` with `Expires: 0`
//! removes them all. A binding is changed only by a request with another
//! Call-ID or a higher CSeq than the one that last changed it; updates are
//! all-or-nothing. The `200` lists every current binding with its
//! remaining `expires`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ccu_channels::sip::registrar::{Registrar, RegistrarConfig, Registrations, OperatorId};
//!
//! let registrar = Registrar::new(RegistrarConfig::default(), [9; 32]);
//! assert!(registrar.registrations().lookup(OperatorId(7), Instant::now()).is_empty());
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::sip::digest::{
    self, Algorithm, AuthOutcome, DigestCredentials, NonceConfig, NonceManager,
};
use crate::sip::header::{Address, Contacts};
use crate::sip::message::{HeaderName, Method, Request, Response, StatusCode};
use crate::sip::transport::TransportKind;
use crate::sip::uri::Uri;

/// The id of an operator (a ccu user) in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorId(pub i64);

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the store keeps of an operator's SIP password: the HA1 of each
/// digest algorithm for the realm, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub operator: OperatorId,
    /// `(algorithm, lower-case hex HA1)`; an algorithm missing here cannot
    /// be used by this user.
    pub ha1: Vec<(Algorithm, String)>,
}

impl StoredCredential {
    /// The credential for `password`, with the HA1 of MD5, SHA-256 and
    /// SHA-512-256. For demos and tests: a server stores the HA1 values.
    pub fn from_password(
        operator: OperatorId,
        username: &str,
        realm: &str,
        password: &str,
    ) -> StoredCredential {
        StoredCredential {
            operator,
            ha1: [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
                .into_iter()
                .map(|a| (a, ha1_for(username, realm, password, a)))
                .collect(),
        }
    }

    pub fn ha1(&self, algorithm: Algorithm) -> Option<&str> {
        self.ha1
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, h)| h.as_str())
    }
}

/// `HA1 = H(username ":" realm ":" password)` for `algorithm` (RFC 7616
/// §3.4.2): what the server stores when an admin sets an operator's SIP
/// password, one per algorithm. The realm is part of it, so changing the
/// realm needs the passwords set again.
pub fn ha1_for(username: &str, realm: &str, password: &str, algorithm: Algorithm) -> String {
    digest::ha1(algorithm, username, realm, password)
}

/// Where the registrar finds credentials: the server implements it over
/// its store. `lookup` returns `None` for an unknown user (or one without
/// a SIP password).
pub trait SipCredentials: Send + Sync + 'static {
    fn lookup(&self, username: &str) -> impl Future<Output = Option<StoredCredential>> + Send;
}

/// Credentials in memory, by username: for tests and demos.
#[derive(Debug, Clone, Default)]
pub struct StaticCredentials(pub HashMap<String, StoredCredential>);

impl SipCredentials for StaticCredentials {
    fn lookup(&self, username: &str) -> impl Future<Output = Option<StoredCredential>> + Send {
        std::future::ready(self.0.get(username).cloned())
    }
}

/// Registrar settings (`[sip.registrar]` in the server's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// The digest realm. HA1 values depend on it.
    pub realm: String,
    /// Challenge algorithms, in the order offered (RFC 8760 §2.4: the
    /// strongest first). `["SHA-256", "MD5"]` by default.
    pub algorithms: Vec<Algorithm>,
    pub min_expires: u32,
    pub max_expires: u32,
    /// When neither the Contact nor the request says.
    pub default_expires: u32,
    /// Devices per operator.
    pub max_bindings_per_operator: usize,
    /// How long a nonce may be used.
    pub nonce_ttl_secs: u64,
    /// Nonces tracked for replay detection (memory bound).
    pub max_tracked_nonces: usize,
    /// Failed authentications from one address for one username before
    /// `403`.
    pub max_auth_failures: u32,
    pub auth_failure_window_secs: u64,
}

impl Default for RegistrarConfig {
    fn default() -> RegistrarConfig {
        RegistrarConfig {
            realm: "ccu".into(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_operator: 10,
            nonce_ttl_secs: 300,
            max_tracked_nonces: 100_000,
            max_auth_failures: 5,
            auth_failure_window_secs: 300,
        }
    }
}

/// One registered device of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub operator: OperatorId,
    /// The address-of-record (the To URI of the REGISTER).
    pub aor: String,
    /// The Contact as registered, without its `expires` parameter.
    pub contact: Address,
    pub expires_at: Instant,
    /// Where the REGISTER came from: an INVITE to a phone behind NAT goes
    /// there rather than to the private Contact address.
    pub source: SocketAddr,
    pub transport: TransportKind,
    call_id: String,
    cseq: u32,
    key: String,
}

impl Binding {
    /// Seconds left, rounded up.
    pub fn expires_in(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }
}

/// The bindings of every operator. `now` is an input: nothing here reads
/// the clock.
#[derive(Debug, Default)]
pub struct Registrations {
    by_operator: HashMap<OperatorId, Vec<Binding>>,
}

impl Registrations {
    /// The operator's current (unexpired) bindings, oldest first.
    pub fn lookup(&self, operator: OperatorId, now: Instant) -> Vec<Binding> {
        self.by_operator
            .get(&operator)
            .map(|list| {
                list.iter()
                    .filter(|b| b.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes expired bindings; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        self.by_operator.retain(|_, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            removed += before - list.len();
            !list.is_empty()
        });
        removed
    }

    /// Removes every binding of `operator` (their SIP credentials were
    /// removed, or they were deactivated); returns how many.
    pub fn remove_operator(&mut self, operator: OperatorId) -> usize {
        self.by_operator
            .remove(&operator)
            .map_or(0, |list| list.len())
    }

    /// Bindings held (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.by_operator.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_operator.is_empty()
    }
}

/// The request and its circumstances, for [`Registrar::register`].
#[derive(Debug, Clone, Copy)]
pub struct RegisterContext<'a> {
    pub request: &'a Request,
    pub source: SocketAddr,
    pub transport: TransportKind,
    /// Monotonic time, for binding expiry and failure windows.
    pub now: Instant,
    /// Time since the UNIX epoch, for nonces (which any node of a cluster
    /// must be able to date).
    pub wall_clock: Duration,
    /// The To tag of the responses (random, drawn by the shell).
    pub to_tag: &'a str,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
}

/// Registrar state: nonces, bindings, authentication failures.
pub struct Registrar {
    config: RegistrarConfig,
    nonces: NonceManager,
    registrations: Registrations,
    failures: HashMap<(IpAddr, String), Failures>,
}

/// Bounds the failure table under a flood of random usernames.
const MAX_FAILURE_ENTRIES: usize = 100_000;

/// A binding change worked out before any is applied (§10.3 step 7: all
/// or nothing).
enum Change {
    Upsert {
        key: String,
        contact: Address,
        expires: u32,
    },
    Remove {
        key: String,
    },
}

impl Registrar {
    /// `secret` keys the nonce MACs: random per process, or shared by the
    /// nodes of a cluster.
    pub fn new(config: RegistrarConfig, secret: [u8; 32]) -> Registrar {
        let nonces = NonceManager::new(
            secret,
            NonceConfig {
                ttl: Duration::from_secs(config.nonce_ttl_secs),
                max_tracked: config.max_tracked_nonces,
            },
        );
        Registrar {
            config,
            nonces,
            registrations: Registrations::default(),
            failures: HashMap::new(),
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    pub fn registrations(&self) -> &Registrations {
        &self.registrations
    }

    pub fn registrations_mut(&mut self) -> &mut Registrations {
        &mut self.registrations
    }

    /// The digest credentials of `request` for our realm, if any.
    fn credentials(&self, request: &Request) -> Option<DigestCredentials> {
        let values = request
            .headers
            .auth_values(&HeaderName::Authorization)
            .ok()?;
        values
            .iter()
            .filter_map(|v| DigestCredentials::from_auth_value(v).ok())
            .find(|c| c.realm == self.config.realm)
    }

    /// The username to look up in the store before calling
    /// [`Registrar::register`]: the one in the Authorization for our realm.
    pub fn username_to_look_up(&self, request: &Request) -> Option<String> {
        self.credentials(request).map(|c| c.username)
    }

    /// Housekeeping: expired bindings, nonces and failure records. Call
    /// now and then; correctness does not depend on it.
    pub fn purge(&mut self, now: Instant, wall_clock: Duration) {
        self.registrations.expire(now);
        self.nonces.purge(wall_clock);
        let window = Duration::from_secs(self.config.auth_failure_window_secs);
        self.failures
            .retain(|_, f| now.saturating_duration_since(f.since) < window);
    }

    fn challenge(&mut self, cx: &RegisterContext<'_>, stale: bool) -> Response {
        let nonce = self.nonces.issue(cx.wall_clock);
        let mut response = cx.request.response(StatusCode::UNAUTHORIZED, cx.to_tag);
        for header in digest::challenge_headers(
            HeaderName::WwwAuthenticate,
            &self.config.realm,
            &nonce,
            &self.config.algorithms,
            stale,
        ) {
            response.headers.push(header.name, header.value);
        }
        response
    }

    fn refuse(cx: &RegisterContext<'_>, status: StatusCode, reason: &str) -> Response {
        let mut response = cx.request.response(status, cx.to_tag);
        reason.clone_into(&mut response.reason);
        response
    }

    fn locked_out(&self, key: &(IpAddr, String), now: Instant) -> bool {
        let window = Duration::from_secs(self.config.auth_failure_window_secs);
        self.failures.get(key).is_some_and(|f| {
            f.count >= self.config.max_auth_failures
                && now.saturating_duration_since(f.since) < window
        })
    }

    /// Counts a failure; `true` when the source is now locked out.
    fn fail(&mut self, key: (IpAddr, String), now: Instant) -> bool {
        let window = Duration::from_secs(self.config.auth_failure_window_secs);
        if !self.failures.contains_key(&key) && self.failures.len() >= MAX_FAILURE_ENTRIES {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.since) < window);
        }
        let entry = self.failures.entry(key).or_insert(Failures {
            count: 0,
            since: now,
        });
        if now.saturating_duration_since(entry.since) >= window {
            *entry = Failures {
                count: 0,
                since: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
        entry.count >= self.config.max_auth_failures
    }

    /// Handles one REGISTER. `credential` is what the store returned for
    /// [`Registrar::username_to_look_up`] (`None` for an unknown user or no
    /// username).
    pub fn register(
        &mut self,
        cx: RegisterContext<'_>,
        credential: Option<&StoredCredential>,
    ) -> Response {
        let request = cx.request;
        if request.method != Method::Register {
            return Self::refuse(&cx, StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        let Some(digest) = self.credentials(request) else {
            return self.challenge(&cx, false);
        };
        let failure_key = (cx.source.ip(), digest.username.clone());
        if self.locked_out(&failure_key, cx.now) {
            return Self::refuse(&cx, StatusCode::FORBIDDEN, "Forbidden");
        }

        // The digest-uri must be the Request-URI (RFC 7616 §3.4.6), or a
        // captured Authorization could be replayed against another target.
        let uri_matches = digest.uri == request.uri.to_string()
            || Uri::parse(&digest.uri).is_ok_and(|u| u == request.uri);
        // Unknown user or algorithm: verify against a dummy HA1 anyway, so
        // that the time taken does not tell whether the user exists.
        let ha1 = credential.and_then(|c| c.ha1(digest.algorithm));
        let outcome = match ha1 {
            Some(ha1) if uri_matches => {
                self.nonces
                    .authenticate(&digest, "REGISTER", ha1, cx.wall_clock)
            }
            _ => {
                let dummy = ha1_for(&digest.username, &self.config.realm, "", digest.algorithm);
                let _ = digest.verify("REGISTER", &dummy);
                AuthOutcome::Rejected
            }
        };
        match outcome {
            AuthOutcome::Authenticated => {}
            AuthOutcome::Stale => return self.challenge(&cx, true),
            AuthOutcome::Replayed | AuthOutcome::Rejected => {
                return if self.fail(failure_key, cx.now) {
                    Self::refuse(&cx, StatusCode::FORBIDDEN, "Forbidden")
                } else {
                    self.challenge(&cx, false)
                };
            }
        }
        self.failures.remove(&failure_key);
        let Some(credential) = credential else {
            // Unreachable: Authenticated needs a stored HA1.
            return self.challenge(&cx, false);
        };

        // §10.3 step 3: the authenticated user may change only its own
        // address-of-record.
        let Ok(to) = request.headers.to() else {
            return Self::refuse(&cx, StatusCode::BAD_REQUEST, "Malformed To");
        };
        let aor_user = to
            .uri
            .as_sip()
            .and_then(|u| u.user_bytes())
            .map(|u| String::from_utf8_lossy(&u).into_owned());
        if aor_user.as_deref() != Some(digest.username.as_str()) {
            return Self::refuse(
                &cx,
                StatusCode::FORBIDDEN,
                "Address-of-record does not match the authenticated user",
            );
        }
        self.update_bindings(&cx, credential.operator, &to)
    }

    fn update_bindings(
        &mut self,
        cx: &RegisterContext<'_>,
        operator: OperatorId,
        to: &Address,
    ) -> Response {
        let request = cx.request;
        let (Ok(contacts), Ok(expires_header), Ok(call_id), Ok(cseq)) = (
            request.headers.contacts(),
            request.headers.expires(),
            request.headers.call_id(),
            request.headers.cseq(),
        ) else {
            return Self::refuse(cx, StatusCode::BAD_REQUEST, "Malformed REGISTER");
        };
        let cseq = cseq.seq;
        let existing = self.registrations.lookup(operator, cx.now);
        // §10.3 step 7: a binding is changed only by a newer request of its
        // own registration (same Call-ID), or by any other registration.
        let out_of_order = |key: &str| {
            existing
                .iter()
                .any(|b| b.key == key && b.call_id == call_id && cseq <= b.cseq)
        };

        let mut changes = Vec::new();
        match contacts {
            Contacts::Wildcard => {
                // §10.3 step 6: "*" only with Expires: 0.
                if expires_header != Some(0) {
                    return Self::refuse(cx, StatusCode::BAD_REQUEST, "Contact * needs Expires: 0");
                }
                for b in &existing {
                    if out_of_order(&b.key) {
                        return Self::refuse(cx, StatusCode::BAD_REQUEST, "CSeq out of order");
                    }
                    changes.push(Change::Remove { key: b.key.clone() });
                }
            }
            Contacts::List(list) => {
                for contact in list {
                    let expires = contact
                        .param("expires")
                        .and_then(|e| e.parse::<u64>().ok())
                        .map(|e| u32::try_from(e).unwrap_or(u32::MAX))
                        .or(expires_header)
                        .unwrap_or(self.config.default_expires);
                    if expires != 0 && expires < self.config.min_expires {
                        let mut response =
                            Self::refuse(cx, StatusCode::INTERVAL_TOO_BRIEF, "Interval Too Brief");
                        response
                            .headers
                            .push(HeaderName::MinExpires, self.config.min_expires.to_string());
                        return response;
                    }
                    let key = contact_key(&contact.uri);
                    if out_of_order(&key) {
                        return Self::refuse(cx, StatusCode::BAD_REQUEST, "CSeq out of order");
                    }
                    let mut contact = contact;
                    contact
                        .params
                        .retain(|p| !p.name.eq_ignore_ascii_case("expires"));
                    changes.push(if expires == 0 {
                        Change::Remove { key }
                    } else {
                        Change::Upsert {
                            key,
                            contact,
                            expires: expires.min(self.config.max_expires),
                        }
                    });
                }
            }
        }

        // Work out the new list, then commit it.
        let mut list = existing;
        for change in changes {
            match change {
                Change::Remove { key } => list.retain(|b| b.key != key),
                Change::Upsert {
                    key,
                    contact,
                    expires,
                } => {
                    let binding = Binding {
                        operator,
                        aor: to.uri.to_string(),
                        contact,
                        expires_at: cx.now + Duration::from_secs(u64::from(expires)),
                        source: cx.source,
                        transport: cx.transport,
                        call_id: call_id.to_owned(),
                        cseq,
                        key,
                    };
                    match list.iter_mut().find(|b| b.key == binding.key) {
                        Some(slot) => *slot = binding,
                        None => list.push(binding),
                    }
                }
            }
        }
        if list.len() > self.config.max_bindings_per_operator {
            return Self::refuse(cx, StatusCode::FORBIDDEN, "Too many registered contacts");
        }

        let mut response = cx.request.response(StatusCode::OK, cx.to_tag);
        for b in &list {
            let mut contact = b.contact.clone();
            contact.set_param("expires", Some(b.expires_in(cx.now).to_string()));
            response
                .headers
                .push(HeaderName::Contact, contact.to_string());
        }
        if list.is_empty() {
            self.registrations.by_operator.remove(&operator);
        } else {
            self.registrations.by_operator.insert(operator, list);
        }
        response
    }
}

/// What identifies a binding: the Contact URI compared as RFC 3261 §19.1.4
/// mostly does (scheme, user, lower-cased host, port, transport), ignoring
/// the other parameters a phone may vary between refreshes.
fn contact_key(uri: &Uri) -> String {
    match uri {
        Uri::Sip(u) => format!(
            "{}:{}@{}:{}|{}",
            if u.secure { "sips" } else { "sip" },
            u.user_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            u.host.to_string().to_ascii_lowercase(),
            u.port.unwrap_or(0),
            u.param("transport")
                .flatten()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::AuthValue;
    use crate::sip::message::Message;
    use crate::sip::parse::parse;

    const REALM: &str = "ccu.test";
    const WALL: Duration = Duration::from_secs(1_800_000_000);

    struct Phone {
        user: &'static str,
        password: &'static str,
        contact: String,
        call_id: String,
        cseq: u32,
        nc: u32,
    }

    impl Phone {
        fn new(user: &'static str, password: &'static str, device: &str) -> Phone {
            Phone {
                user,
                password,
                contact: format!("<sip:{user}@{device}:5060>"),
                call_id: format!("reg-{user}-{device}"),
                cseq: 0,
                nc: 0,
            }
        }

        fn request(&mut self, extra: &str) -> Request {
            self.cseq += 1;
            let text = format!(
                "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK{}{}\r\n\
                 From: <sip:{u}@{REALM}>;tag=f1\r\nTo: <sip:{u}@{REALM}>\r\nCall-ID: {}\r\n\
                 CSeq: {} REGISTER\r\nContact: {}\r\n{extra}Content-Length: 0\r\n\r\n",
                self.call_id,
                self.cseq,
                self.call_id,
                self.cseq,
                self.contact,
                u = self.user,
            );
            match parse(text.as_bytes()).unwrap() {
                Message::Request(r) => r,
                Message::Response(_) => panic!(),
            }
        }

        /// The Authorization answering the first challenge in `challenge`
        /// with `algorithm`.
        fn answer(&mut self, challenge: &Response, algorithm: Algorithm) -> String {
            let offer = challenge
                .headers
                .auth_values(&HeaderName::WwwAuthenticate)
                .unwrap()
                .into_iter()
                .find(|v| v.param("algorithm") == Some(algorithm.as_str()))
                .unwrap();
            let nonce = offer.param("nonce").unwrap().to_owned();
            self.nc += 1;
            let key = ha1_for(self.user, REALM, self.password, algorithm);
            let uri = format!("sip:{REALM}");
            let answer = digest::response(
                algorithm,
                &key,
                &nonce,
                Some((self.nc, "c0ffee")),
                "REGISTER",
                &uri,
            );
            format!(
                "Authorization: Digest username=\"{}\", realm=\"{REALM}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{answer}\", algorithm={}, qop=auth, nc={:08x}, cnonce=\"c0ffee\"\r\n",
                self.user,
                algorithm.as_str(),
                self.nc
            )
        }
    }

    fn registrar() -> Registrar {
        Registrar::new(
            RegistrarConfig {
                realm: REALM.into(),
                max_auth_failures: 3,
                ..RegistrarConfig::default()
            },
            [3; 32],
        )
    }

    fn store() -> StaticCredentials {
        let mut map = HashMap::new();
        map.insert(
            "1001".to_owned(),
            StoredCredential::from_password(OperatorId(1), "1001", REALM, "right"),
        );
        StaticCredentials(map)
    }

    fn send(reg: &mut Registrar, request: &Request, now: Instant) -> Response {
        let store = store();
        let credential = reg
            .username_to_look_up(request)
            .and_then(|u| store.0.get(&u).cloned());
        reg.register(
            RegisterContext {
                request,
                source: "10.1.1.1:5060".parse().unwrap(),
                transport: TransportKind::Udp,
                now,
                wall_clock: WALL + now.saturating_duration_since(t0()),
                to_tag: "reg1",
            },
            credential.as_ref(),
        )
    }

    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

    fn t0() -> Instant {
        *T0.get_or_init(Instant::now)
    }

    /// Registers with a challenge round; returns the final response.
    fn register(
        reg: &mut Registrar,
        phone: &mut Phone,
        extra: &str,
        algorithm: Algorithm,
        now: Instant,
    ) -> Response {
        let challenge = send(reg, &phone.request(extra), now);
        assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
        let auth = phone.answer(&challenge, algorithm);
        send(reg, &phone.request(&format!("{extra}{auth}")), now)
    }

    fn contacts(response: &Response) -> Vec<(String, String)> {
        match response.headers.contacts().unwrap() {
            Contacts::List(list) => list
                .into_iter()
                .map(|a| {
                    let e = a.param("expires").unwrap_or("").to_owned();
                    (a.uri.to_string(), e)
                })
                .collect(),
            Contacts::Wildcard => panic!(),
        }
    }

    #[test]
    fn challenges_offer_sha256_then_md5_and_both_work() {
        let mut reg = registrar();
        let now = t0();
        let mut phone = Phone::new("1001", "right", "10.1.1.1");
        let first = send(&mut reg, &phone.request(""), now);
        assert_eq!(first.status, StatusCode::UNAUTHORIZED);
        let offers: Vec<AuthValue> = first
            .headers
            .auth_values(&HeaderName::WwwAuthenticate)
            .unwrap();
        let algorithms: Vec<_> = offers.iter().map(|o| o.param("algorithm")).collect();
        assert_eq!(algorithms, [Some("SHA-256"), Some("MD5")]);
        assert_eq!(offers[0].param("realm"), Some(REALM));

        let ok = register(&mut reg, &mut phone, "", Algorithm::Sha256, now);
        assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
        let ok = register(&mut reg, &mut phone, "", Algorithm::Md5, now);
        assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
        assert_eq!(
            contacts(&ok),
            [("sip:1001@10.1.1.1:5060".to_owned(), "3600".to_owned())]
        );
        let bindings = reg.registrations().lookup(OperatorId(1), now);
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].aor, format!("sip:1001@{REALM}"));
    }

    #[test]
    fn an_unknown_user_and_a_wrong_password_get_the_same_answers_then_403() {
        let now = t0();
        let mut answers = Vec::new();
        for (user, password) in [("1001", "wrong"), ("9999", "whatever")] {
            let mut reg = registrar();
            let mut phone = Phone::new(user, password, "10.1.1.1");
            let mut statuses = Vec::new();
            for _ in 0..4 {
                let response = register_once_more(&mut reg, &mut phone, now);
                statuses.push(response.status.as_u16());
            }
            answers.push(statuses);
            assert!(reg.registrations().is_empty());
        }
        assert_eq!(answers[0], [401, 401, 403, 403]);
        assert_eq!(answers[0], answers[1]);
    }

    /// One challenged attempt that may fail at the second step.
    fn register_once_more(reg: &mut Registrar, phone: &mut Phone, now: Instant) -> Response {
        let challenge = send(reg, &phone.request(""), now);
        if challenge.status != StatusCode::UNAUTHORIZED {
            return challenge;
        }
        let auth = phone.answer(&challenge, Algorithm::Md5);
        send(reg, &phone.request(&auth), now)
    }

    #[test]
    fn a_replayed_register_is_challenged_again() {
        let mut reg = registrar();
        let now = t0();
        let mut phone = Phone::new("1001", "right", "10.1.1.1");
        let challenge = send(&mut reg, &phone.request(""), now);
        let auth = phone.answer(&challenge, Algorithm::Md5);
        let request = phone.request(&auth);
        assert_eq!(send(&mut reg, &request, now).status, StatusCode::OK);
        let again = send(&mut reg, &request, now);
        assert_eq!(again.status, StatusCode::UNAUTHORIZED);
        assert!(
            !again
                .headers
                .get(&HeaderName::WwwAuthenticate)
                .unwrap()
                .contains("stale")
        );
    }

    #[test]
    fn an_expired_nonce_gets_stale_true() {
        let mut reg = registrar();
        let now = t0();
        let mut phone = Phone::new("1001", "right", "10.1.1.1");
        let challenge = send(&mut reg, &phone.request(""), now);
        let auth = phone.answer(&challenge, Algorithm::Sha256);
        let later = now + Duration::from_secs(301);
        let response = send(&mut reg, &phone.request(&auth), later);
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert!(
            response
                .headers
                .get(&HeaderName::WwwAuthenticate)
                .unwrap()
                .ends_with("stale=true")
        );
    }

    #[test]
    fn several_devices_refresh_expire_and_unregister() {
        let mut reg = registrar();
        let now = t0();
        let mut desk = Phone::new("1001", "right", "10.1.1.1");
        let mut soft = Phone::new("1001", "right", "10.1.1.2");
        let ok = register(&mut reg, &mut desk, "Expires: 600\r\n", Algorithm::Md5, now);
        assert_eq!(ok.status, StatusCode::OK);
        let ok = register(&mut reg, &mut soft, "Expires: 120\r\n", Algorithm::Md5, now);
        assert_eq!(
            contacts(&ok),
            [
                ("sip:1001@10.1.1.1:5060".to_owned(), "600".to_owned()),
                ("sip:1001@10.1.1.2:5060".to_owned(), "120".to_owned())
            ]
        );
        // The soft phone expires on time; the desk phone stays.
        let later = now + Duration::from_secs(120);
        let left = reg.registrations().lookup(OperatorId(1), later);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].contact.uri.to_string(), "sip:1001@10.1.1.1:5060");
        // A refresh with a contact parameter overrides the header.
        desk.contact = "<sip:1001@10.1.1.1:5060>;expires=900".into();
        let ok = register(
            &mut reg,
            &mut desk,
            "Expires: 600\r\n",
            Algorithm::Md5,
            later,
        );
        assert_eq!(
            contacts(&ok),
            [("sip:1001@10.1.1.1:5060".to_owned(), "900".to_owned())]
        );
        // Unregister that one device.
        desk.contact = "<sip:1001@10.1.1.1:5060>".into();
        let ok = register(&mut reg, &mut desk, "Expires: 0\r\n", Algorithm::Md5, later);
        assert_eq!(ok.status, StatusCode::OK);
        assert!(ok.headers.get(&HeaderName::Contact).is_none());
        assert!(reg.registrations().lookup(OperatorId(1), later).is_empty());
        reg.purge(later, WALL);
        assert!(reg.registrations().is_empty());
    }

    #[test]
    fn star_with_expires_zero_removes_every_binding_and_star_alone_is_refused() {
        let mut reg = registrar();
        let now = t0();
        let mut desk = Phone::new("1001", "right", "10.1.1.1");
        let mut soft = Phone::new("1001", "right", "10.1.1.2");
        register(&mut reg, &mut desk, "", Algorithm::Md5, now);
        register(&mut reg, &mut soft, "", Algorithm::Md5, now);
        assert_eq!(reg.registrations().lookup(OperatorId(1), now).len(), 2);
        desk.contact = "*".into();
        let refused = register(&mut reg, &mut desk, "Expires: 60\r\n", Algorithm::Md5, now);
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        let ok = register(&mut reg, &mut desk, "Expires: 0\r\n", Algorithm::Md5, now);
        assert_eq!(ok.status, StatusCode::OK);
        assert!(reg.registrations().lookup(OperatorId(1), now).is_empty());
    }

    #[test]
    fn too_brief_is_423_with_min_expires_and_too_long_is_capped() {
        let mut reg = registrar();
        let now = t0();
        let mut phone = Phone::new("1001", "right", "10.1.1.1");
        let brief = register(&mut reg, &mut phone, "Expires: 30\r\n", Algorithm::Md5, now);
        assert_eq!(brief.status, StatusCode::INTERVAL_TOO_BRIEF);
        assert_eq!(brief.headers.get(&HeaderName::MinExpires), Some("60"));
        assert!(reg.registrations().is_empty());
        let long = register(
            &mut reg,
            &mut phone,
            "Expires: 99999\r\n",
            Algorithm::Md5,
            now,
        );
        assert_eq!(
            contacts(&long),
            [("sip:1001@10.1.1.1:5060".to_owned(), "3600".to_owned())]
        );
    }

    #[test]
    fn an_older_cseq_of_the_same_registration_changes_nothing() {
        let mut reg = registrar();
        let now = t0();
        let mut phone = Phone::new("1001", "right", "10.1.1.1");
        assert_eq!(
            register(&mut reg, &mut phone, "", Algorithm::Md5, now).status,
            StatusCode::OK
        );
        // Jump back: the next requests carry lower CSeqs than the binding's.
        phone.cseq = 0;
        let stale = register(&mut reg, &mut phone, "Expires: 0\r\n", Algorithm::Md5, now);
        assert_eq!(stale.status, StatusCode::BAD_REQUEST);
        assert_eq!(reg.registrations().lookup(OperatorId(1), now).len(), 1);
    }

    #[test]
    fn a_user_cannot_register_someone_elses_address_of_record() {
        let mut reg = registrar();
        let now = t0();
        let mut phone = Phone::new("1001", "right", "10.1.1.1");
        let challenge = send(&mut reg, &phone.request(""), now);
        let auth = phone.answer(&challenge, Algorithm::Md5);
        let mut request = phone.request(&auth);
        request
            .headers
            .set(HeaderName::To, format!("<sip:1002@{REALM}>"));
        assert_eq!(send(&mut reg, &request, now).status, StatusCode::FORBIDDEN);
        assert!(reg.registrations().is_empty());
    }
}

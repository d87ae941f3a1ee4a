//! Trunks and the unified number: which incoming calls ccu takes, sans-IO.
//!
//! Citizens dial one number (or a few: the city's and a company's). The
//! carrier delivers those calls over a SIP trunk, and only from its own
//! addresses or with its own digest credentials. [`TrunkGate::admit`]
//! takes an INVITE and where it came from and answers:
//!
//! 1. **who is calling us**: the trunks whose `sources` (addresses or CIDR
//!    blocks) contain the source address, plus those with no `sources`
//!    (credentials only). None: `403` (unknown source). A trunk with
//!    credentials must also authenticate: `407` with a
//!    `Proxy-Authenticate` challenge (RFC 3261 §22.3, the INVITE is then
//!    repeated with `Proxy-Authorization`), a wrong digest, a replayed
//!    nonce-count or an unknown username `403`, a right digest on an
//!    expired nonce `407` with `stale=true`; after the registrar's
//!    `max_auth_failures` refusals within `auth_failure_window_secs` an
//!    address gets `403` even with the right password;
//! 2. **what is called**: the Request-URI's user part as an E.164 number
//!    ([`PhoneNumber`]). Not one of `numbers`: `404`; one of ours that this
//!    trunk may not deliver: `403`;
//! 3. **who the caller is**: the first P-Asserted-Identity (RFC 3325, set
//!    by the carrier) that is a number, else the From.
//!
//! The number is checked only after the trunk is known, so that an
//! unknown source learns nothing about which numbers exist.
//!
//! ```
//! use std::time::Duration;
//! use ccu_channels::sip::endpoint::SipConfig;
//! use ccu_channels::sip::parse::parse;
//! use ccu_channels::sip::message::Message;
//! use ccu_channels::sip::trunk::{Admission, NumberConfig, TrunkConfig, TrunkGate};
//!
//! let mut config = SipConfig::default();
//! config.numbers.insert("+390612345678".into(), NumberConfig { queue: "urp".into(), ivr: None });
//! config.trunks.push(TrunkConfig {
//!     name: "carrier".into(),
//!     sources: vec!["192.0.2.0/24".into()],
//!     numbers: vec!["+390612345678".into()],
//!     ..TrunkConfig::default()
//! });
//! let mut gate = TrunkGate::new(&config, [7; 32]).unwrap();
//! let invite = b"INVITE sip:0612345678@ccu.example SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
//! From: <sip:3331234567@carrier.example>;tag=a\r\nTo: <sip:0612345678@ccu.example>\r\n\
//! Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
//! let Ok(Message::Request(request)) = parse(invite) else { panic!() };
//! let source = "192.0.2.10:5060".parse().unwrap();
//! let Admission::Accept(call) = gate.admit(&request, source, Duration::from_secs(1), "t") else { panic!() };
//! assert_eq!(call.called.queue, "urp");
//! assert_eq!(call.caller.unwrap().as_str(), "+393331234567");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sip::digest::{
    self, Algorithm, AuthOutcome, DigestCredentials, NonceConfig, NonceManager,
};
use crate::sip::endpoint::SipConfig;
use crate::sip::message::{HeaderName, Request, Response, StatusCode};
use crate::sip::phone::PhoneNumber;
use crate::sip::uri::Uri;

/// One carrier trunk (`[[sip.trunks]]`). It needs `sources`, credentials,
/// or both (then both must hold).
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkConfig {
    /// For logs and conversation records.
    pub name: String,
    /// Addresses (`198.51.100.7`) or CIDR blocks (`192.0.2.0/24`,
    /// `2001:db8::/32`) the trunk's INVITEs come from.
    pub sources: Vec<String>,
    /// Digest credentials the trunk answers a `407` with.
    pub username: Option<String>,
    /// Never logged: the `Debug` impl leaves it out.
    pub password: Option<String>,
    /// The unified numbers (keys of `[sip.numbers]`) this trunk may
    /// deliver calls for.
    pub numbers: Vec<String>,
    /// Where ccu sends its own calls through this trunk (callbacks):
    /// `"sip:host:port"` (UDP). None: the trunk takes no calls from ccu.
    pub outbound: Option<String>,
    /// The account ccu answers the carrier's `401`/`407` to its calls
    /// with (RFC 3261 §22.2); set with `outbound_password`.
    pub outbound_username: Option<String>,
    /// Never logged: the `Debug` impl leaves it out.
    pub outbound_password: Option<String>,
}

impl fmt::Debug for TrunkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkConfig")
            .field("name", &self.name)
            .field("sources", &self.sources)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("numbers", &self.numbers)
            .field("outbound", &self.outbound)
            .field("outbound_username", &self.outbound_username)
            .field(
                "outbound_password",
                &self.outbound_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where calls to one unified number go (`[sip.numbers."+39…"]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    /// The queue calls to this number land in (after the IVR, if any).
    pub queue: String,
    /// The IVR menu that answers the number first; none: straight to the
    /// queue.
    #[serde(default)]
    pub ivr: Option<String>,
}

/// A configuration error, with the key under `[sip]` that causes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SipConfigError {
    /// Relative to `sip`, e.g. `trunks[0].sources`.
    pub key: String,
    pub reason: String,
}

fn config_error(key: impl Into<String>, reason: impl Into<String>) -> SipConfigError {
    SipConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// An address block: an IP address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceNet {
    network: IpAddr,
    prefix: u8,
}

impl SourceNet {
    /// `192.0.2.7` (one address), `192.0.2.0/24`, `2001:db8::/32`. Host
    /// bits below the prefix are ignored.
    pub fn parse(text: &str) -> Option<SourceNet> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
        };
        Some(SourceNet { network, prefix })
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 peer on a dual-stack socket shows up as ::ffff:a.b.c.d.
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

struct Trunk {
    name: String,
    sources: Vec<SourceNet>,
    /// Username and the HA1 per algorithm.
    credential: Option<(String, Vec<(Algorithm, String)>)>,
    numbers: Vec<PhoneNumber>,
}

impl Trunk {
    fn accepts_source(&self, ip: IpAddr) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|n| n.contains(ip))
    }
}

/// A unified number and where its calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRoute {
    pub number: PhoneNumber,
    pub queue: String,
    pub ivr: Option<String>,
}

/// An INVITE that passed the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkCall {
    /// The trunk's `name`.
    pub trunk: String,
    pub called: NumberRoute,
    /// `None` when neither P-Asserted-Identity nor From is a number
    /// (anonymous calls).
    pub caller: Option<PhoneNumber>,
    /// The display name that came with the caller's number.
    pub caller_name: Option<String>,
}

/// What [`TrunkGate::admit`] decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Hand the call to the call layer.
    Accept(TrunkCall),
    /// Send this final response (403, 404, 407).
    Refuse(Response),
}

/// The trunks and numbers of `[sip]`, with the nonces of their digest
/// challenges.
pub struct TrunkGate {
    realm: String,
    algorithms: Vec<Algorithm>,
    country_code: String,
    trunks: Vec<Trunk>,
    numbers: HashMap<PhoneNumber, NumberRoute>,
    nonces: NonceManager,
    /// Digest refusals per source address: (count, since).
    failures: HashMap<IpAddr, (u32, Duration)>,
    max_failures: u32,
    failure_window: Duration,
}

/// Bounds the failure table under a flood from many addresses.
const MAX_FAILURE_ENTRIES: usize = 100_000;

/// The host and port of a trunk's `outbound` (`sip:host[:port]`, port 5060
/// by default); over UDP only (connecting out over TCP is not done yet).
pub fn outbound_proxy(outbound: &str) -> Result<(String, u16), String> {
    let uri = Uri::parse(outbound.trim()).map_err(|e| format!("{outbound:?}: {e}"))?;
    let sip = uri
        .as_sip()
        .filter(|u| !u.secure)
        .ok_or_else(|| format!("{outbound:?} is not a sip: URI"))?;
    if sip
        .param("transport")
        .flatten()
        .is_some_and(|t| !t.eq_ignore_ascii_case("udp"))
    {
        return Err(format!("{outbound:?}: only UDP is supported"));
    }
    let host = match &sip.host {
        crate::sip::uri::Host::Domain(d) => d.clone(),
        crate::sip::uri::Host::Ipv4(ip) => ip.to_string(),
        crate::sip::uri::Host::Ipv6(ip) => ip.to_string(),
    };
    Ok((host, sip.port.unwrap_or(5060)))
}

impl TrunkGate {
    /// Parses and checks `trunks`, `numbers` and `default_country_code` of
    /// `config`; the error names the key. `secret` keys the nonces.
    pub fn new(config: &SipConfig, secret: [u8; 32]) -> Result<TrunkGate, SipConfigError> {
        let country_code = config.default_country_code.clone();
        if PhoneNumber::parse_in("0612345678", &country_code).is_none() {
            return Err(config_error(
                "default_country_code",
                "a calling code of 1-3 digits, e.g. \"39\"",
            ));
        }
        let mut numbers = HashMap::new();
        for (text, target) in &config.numbers {
            let key = format!("numbers.{text:?}");
            let number = PhoneNumber::parse_in(text, &country_code)
                .ok_or_else(|| config_error(&key, "not a telephone number"))?;
            if target.queue.trim().is_empty() {
                return Err(config_error(format!("{key}.queue"), "must name a queue"));
            }
            let route = NumberRoute {
                number: number.clone(),
                queue: target.queue.clone(),
                ivr: target.ivr.clone(),
            };
            if numbers.insert(number, route).is_some() {
                return Err(config_error(&key, "the same number is listed twice"));
            }
        }
        let realm = config.registrar.realm.clone();
        let mut trunks: Vec<Trunk> = Vec::new();
        for (i, trunk) in config.trunks.iter().enumerate() {
            let key = format!("trunks[{i}]");
            if trunk.name.trim().is_empty() {
                return Err(config_error(format!("{key}.name"), "must not be empty"));
            }
            if trunks.iter().any(|t| t.name == trunk.name) {
                return Err(config_error(format!("{key}.name"), "names must be unique"));
            }
            let sources = trunk
                .sources
                .iter()
                .map(|s| {
                    SourceNet::parse(s).ok_or_else(|| {
                        config_error(
                            format!("{key}.sources"),
                            format!("{s:?} is not an IP address or CIDR block"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let credential = match (&trunk.username, &trunk.password) {
                (Some(username), Some(password)) => {
                    if username.is_empty() || username.contains(['"', '\\']) {
                        return Err(config_error(
                            format!("{key}.username"),
                            "must not be empty or contain quotes",
                        ));
                    }
                    if password.len() < 12 {
                        return Err(config_error(
                            format!("{key}.password"),
                            "at least 12 characters",
                        ));
                    }
                    let ha1 = [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
                        .into_iter()
                        .map(|a| (a, digest::ha1(a, username, &realm, password)))
                        .collect();
                    Some((username.clone(), ha1))
                }
                (None, None) => None,
                _ => {
                    return Err(config_error(
                        format!("{key}.password"),
                        "username and password go together",
                    ));
                }
            };
            if sources.is_empty() && credential.is_none() {
                return Err(config_error(
                    &key,
                    "a trunk needs sources, a username and password, or both",
                ));
            }
            if trunk.numbers.is_empty() {
                return Err(config_error(
                    format!("{key}.numbers"),
                    "list the numbers this trunk may deliver",
                ));
            }
            let mut allowed = Vec::new();
            for text in &trunk.numbers {
                let number = PhoneNumber::parse_in(text, &country_code)
                    .filter(|n| numbers.contains_key(n))
                    .ok_or_else(|| {
                        config_error(
                            format!("{key}.numbers"),
                            format!("{text:?} is not one of sip.numbers"),
                        )
                    })?;
                allowed.push(number);
            }
            if let Some(outbound) = &trunk.outbound {
                outbound_proxy(outbound).map_err(|e| config_error(format!("{key}.outbound"), e))?;
            }
            match (&trunk.outbound_username, &trunk.outbound_password) {
                (None, None) => {}
                (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                    if trunk.outbound.is_none() {
                        return Err(config_error(
                            format!("{key}.outbound_username"),
                            "credentials for calls out need an outbound",
                        ));
                    }
                }
                _ => {
                    return Err(config_error(
                        format!("{key}.outbound_password"),
                        "set both outbound_username and outbound_password, neither empty",
                    ));
                }
            }
            trunks.push(Trunk {
                name: trunk.name.clone(),
                sources,
                credential,
                numbers: allowed,
            });
        }
        let nonces = NonceManager::new(
            secret,
            NonceConfig {
                ttl: Duration::from_secs(config.registrar.nonce_ttl_secs),
                max_tracked: config.registrar.max_tracked_nonces,
            },
        );
        Ok(TrunkGate {
            realm,
            algorithms: config.registrar.algorithms.clone(),
            country_code,
            trunks,
            numbers,
            nonces,
            failures: HashMap::new(),
            max_failures: config.registrar.max_auth_failures.max(1),
            failure_window: Duration::from_secs(config.registrar.auth_failure_window_secs),
        })
    }

    /// The unified numbers.
    pub fn numbers(&self) -> impl Iterator<Item = &NumberRoute> {
        self.numbers.values()
    }

    /// Decides on an INVITE from `source`; `wall_clock` is the time since
    /// the UNIX epoch (for nonces), `to_tag` the tag of the response.
    pub fn admit(
        &mut self,
        request: &Request,
        source: SocketAddr,
        wall_clock: Duration,
        to_tag: &str,
    ) -> Admission {
        let refuse = |status: StatusCode, reason: &str| {
            let mut response = request.response(status, to_tag);
            reason.clone_into(&mut response.reason);
            Admission::Refuse(response)
        };
        let ip = source.ip();
        let candidates: Vec<usize> = (0..self.trunks.len())
            .filter(|&i| self.trunks.get(i).is_some_and(|t| t.accepts_source(ip)))
            .collect();
        if candidates.is_empty() {
            return refuse(StatusCode::FORBIDDEN, "Unknown Source");
        }
        let open = candidates
            .iter()
            .copied()
            .find(|&i| self.trunks.get(i).is_some_and(|t| t.credential.is_none()));
        let index = match open {
            Some(i) => i,
            None => match self.authenticate(request, &candidates, ip, wall_clock) {
                Ok(i) => i,
                Err(Challenge::Ask { stale }) => {
                    return self.challenge(request, to_tag, wall_clock, stale);
                }
                Err(Challenge::Refuse) => return refuse(StatusCode::FORBIDDEN, "Forbidden"),
            },
        };
        let Some(trunk) = self.trunks.get(index) else {
            return refuse(StatusCode::FORBIDDEN, "Forbidden");
        };

        let called = request
            .uri
            .as_sip()
            .and_then(|u| u.user_bytes())
            .and_then(|user| String::from_utf8(user).ok())
            .and_then(|user| PhoneNumber::parse_in(&user, &self.country_code));
        let Some(route) = called.and_then(|n| self.numbers.get(&n)) else {
            return refuse(StatusCode::NOT_FOUND, "Not Found");
        };
        if !trunk.numbers.contains(&route.number) {
            return refuse(StatusCode::FORBIDDEN, "Number Not Allowed On This Trunk");
        }

        // RFC 3325 §9.1: the asserted identity, from the trusted carrier;
        // a tel: URI and a sip: URI may both be there. Then the From.
        let asserted = request.headers.asserted_identities().unwrap_or_default();
        let from = request.headers.from().ok();
        let caller = asserted.iter().chain(from.iter()).find_map(|address| {
            let number = match &address.uri {
                Uri::Sip(sip) => sip
                    .user_bytes()
                    .and_then(|user| String::from_utf8(user).ok())
                    .and_then(|user| PhoneNumber::parse_in(&user, &self.country_code)),
                other => PhoneNumber::parse_in(&other.to_string(), &self.country_code),
            };
            number.map(|n| (n, address.display_name.clone()))
        });
        let (caller, caller_name) = match caller {
            Some((number, name)) => (Some(number), name),
            None => (None, None),
        };
        Admission::Accept(TrunkCall {
            trunk: trunk.name.clone(),
            called: route.clone(),
            caller,
            caller_name,
        })
    }

    /// Digest for the trunks among `candidates` that need it, with a
    /// lock-out: after `max_auth_failures` refusals from one address within
    /// `auth_failure_window_secs`, that address gets `403` whatever it
    /// sends, so a password cannot be guessed at the rate limit's pace.
    fn authenticate(
        &mut self,
        request: &Request,
        candidates: &[usize],
        ip: IpAddr,
        wall_clock: Duration,
    ) -> Result<usize, Challenge> {
        let window = self.failure_window;
        if self.failures.get(&ip).is_some_and(|(count, since)| {
            *count >= self.max_failures && wall_clock.saturating_sub(*since) < window
        }) {
            return Err(Challenge::Refuse);
        }
        let outcome = self.check_digest(request, candidates, wall_clock);
        match outcome {
            Ok(_) => {
                self.failures.remove(&ip);
            }
            Err(Challenge::Refuse) => {
                if !self.failures.contains_key(&ip) && self.failures.len() >= MAX_FAILURE_ENTRIES {
                    self.failures
                        .retain(|_, (_, since)| wall_clock.saturating_sub(*since) < window);
                    // Still full of live entries (a spread of addresses):
                    // the cap holds; this address is refused, not tracked.
                    if self.failures.len() >= MAX_FAILURE_ENTRIES {
                        return outcome;
                    }
                }
                let entry = self.failures.entry(ip).or_insert((0, wall_clock));
                if wall_clock.saturating_sub(entry.1) >= window {
                    *entry = (0, wall_clock);
                }
                entry.0 = entry.0.saturating_add(1);
            }
            Err(Challenge::Ask { .. }) => {}
        }
        outcome
    }

    /// Checks the Proxy-Authorization against the credential trunks among
    /// `candidates`; the index of the trunk that authenticated.
    fn check_digest(
        &mut self,
        request: &Request,
        candidates: &[usize],
        wall_clock: Duration,
    ) -> Result<usize, Challenge> {
        let ours: Vec<DigestCredentials> = request
            .headers
            .auth_values(&HeaderName::ProxyAuthorization)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| DigestCredentials::from_auth_value(v).ok())
            .filter(|c| c.realm == self.realm)
            .collect();
        let Some(digest) = ours.first() else {
            return Err(Challenge::Ask { stale: false });
        };
        let found = candidates.iter().copied().find_map(|i| {
            let trunk = self.trunks.get(i)?;
            let (username, ha1) = trunk.credential.as_ref()?;
            (*username == digest.username).then_some((i, ha1))
        });
        let Some((index, ha1)) = found else {
            return Err(Challenge::Refuse);
        };
        if !self.algorithms.contains(&digest.algorithm) {
            return Err(Challenge::Ask { stale: false });
        }
        // The digest-uri must be the Request-URI (RFC 7616 §3.4.6).
        let uri_matches = digest.uri == request.uri.to_string()
            || Uri::parse(&digest.uri).is_ok_and(|u| u == request.uri);
        let Some(ha1) = ha1
            .iter()
            .find(|(a, _)| *a == digest.algorithm)
            .map(|(_, h)| h.clone())
        else {
            return Err(Challenge::Refuse);
        };
        if !uri_matches {
            return Err(Challenge::Refuse);
        }
        match self
            .nonces
            .authenticate(digest, request.method.as_str(), &ha1, wall_clock)
        {
            AuthOutcome::Authenticated => Ok(index),
            AuthOutcome::Stale => Err(Challenge::Ask { stale: true }),
            AuthOutcome::Replayed | AuthOutcome::Rejected => Err(Challenge::Refuse),
        }
    }

    fn challenge(
        &mut self,
        request: &Request,
        to_tag: &str,
        wall_clock: Duration,
        stale: bool,
    ) -> Admission {
        let nonce = self.nonces.issue(wall_clock);
        let mut response = request.response(StatusCode::PROXY_AUTHENTICATION_REQUIRED, to_tag);
        for header in digest::challenge_headers(
            HeaderName::ProxyAuthenticate,
            &self.realm,
            &nonce,
            &self.algorithms,
            stale,
        ) {
            response.headers.push(header.name, header.value);
        }
        Admission::Refuse(response)
    }

    /// Forgets expired nonces and failure records; call now and then.
    pub fn purge(&mut self, wall_clock: Duration) {
        self.nonces.purge(wall_clock);
        let window = self.failure_window;
        self.failures
            .retain(|_, (_, since)| wall_clock.saturating_sub(*since) < window);
    }
}

enum Challenge {
    Ask { stale: bool },
    Refuse,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::parse;

    const NUMBER: &str = "+390612345678";
    const REALM: &str = "ccu.test";
    const WALL: Duration = Duration::from_secs(1_800_000_000);
    const PASSWORD: &str = "segreto del gestore";

    fn config() -> SipConfig {
        let mut config = SipConfig::default();
        config.registrar.realm = REALM.into();
        config.numbers.insert(
            NUMBER.into(),
            NumberConfig {
                queue: "urp".into(),
                ivr: Some("principale".into()),
            },
        );
        config.numbers.insert(
            "0039 0612345600".into(),
            NumberConfig {
                queue: "acqua_rifiuti".into(),
                ivr: None,
            },
        );
        config.trunks = vec![
            TrunkConfig {
                name: "carrier".into(),
                sources: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
                numbers: vec!["0612345678".into()],
                ..TrunkConfig::default()
            },
            TrunkConfig {
                name: "backup".into(),
                username: Some("trunk-backup".into()),
                password: Some(PASSWORD.into()),
                numbers: vec![NUMBER.into(), "+390612345600".into()],
                ..TrunkConfig::default()
            },
        ];
        config
    }

    fn gate() -> TrunkGate {
        TrunkGate::new(&config(), [5; 32]).unwrap()
    }

    #[test]
    fn an_outbound_proxy_is_a_udp_sip_uri_and_anything_else_is_refused_by_key() {
        assert_eq!(
            outbound_proxy("sip:198.51.100.7:5070"),
            Ok(("198.51.100.7".into(), 5070))
        );
        assert_eq!(
            outbound_proxy("sip:sbc.carrier.example"),
            Ok(("sbc.carrier.example".into(), 5060))
        );
        assert_eq!(
            outbound_proxy("sip:[2001:db8::7]:5080;transport=udp"),
            Ok(("2001:db8::7".into(), 5080))
        );
        for bad in [
            "198.51.100.7",
            "sips:sbc.example",
            "sip:sbc.example;transport=tcp",
            "tel:+39",
        ] {
            assert!(outbound_proxy(bad).is_err(), "{bad}");
        }
        let mut config = config();
        config.trunks[0].outbound = Some("http://sbc".into());
        let error = TrunkGate::new(&config, [5; 32]).err().unwrap();
        assert_eq!(error.key, "trunks[0].outbound");
    }

    #[test]
    fn outbound_credentials_come_in_pairs_and_need_an_outbound() {
        let with = |user: Option<&str>, password: Option<&str>, outbound: bool| {
            let mut config = config();
            config.trunks[0].outbound = outbound.then(|| "sip:198.51.100.7".into());
            config.trunks[0].outbound_username = user.map(Into::into);
            config.trunks[0].outbound_password = password.map(Into::into);
            TrunkGate::new(&config, [5; 32]).err().map(|e| e.key)
        };
        assert_eq!(with(Some("ccu"), Some("pw"), true), None);
        assert_eq!(with(None, None, false), None);
        assert_eq!(
            with(Some("ccu"), None, true).as_deref(),
            Some("trunks[0].outbound_password")
        );
        assert_eq!(
            with(Some("ccu"), Some(""), true).as_deref(),
            Some("trunks[0].outbound_password")
        );
        assert_eq!(
            with(Some("ccu"), Some("pw"), false).as_deref(),
            Some("trunks[0].outbound_username")
        );
        let mut config = config();
        config.trunks[0].outbound_password = Some("hunter2".into());
        assert!(!format!("{:?}", config.trunks[0]).contains("hunter2"));
    }

    fn invite(to: &str, from: &str, extra: &str) -> Request {
        let text = format!(
            "INVITE sip:{to}@ccu.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: {from};tag=a\r\nTo: <sip:{to}@ccu.example>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("not a request"),
        }
    }

    fn from(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    fn accepted(admission: Admission) -> TrunkCall {
        match admission {
            Admission::Accept(call) => call,
            Admission::Refuse(r) => panic!("refused: {} {}", r.status.as_u16(), r.reason),
        }
    }

    fn refused(admission: Admission) -> Response {
        match admission {
            Admission::Refuse(r) => r,
            Admission::Accept(call) => panic!("accepted: {call:?}"),
        }
    }

    #[test]
    fn a_call_from_a_trunk_address_to_a_unified_number_is_accepted_with_the_asserted_caller() {
        let mut gate = gate();
        let request = invite(
            "0612345678",
            "<sip:anonymous@anonymous.invalid>",
            "P-Asserted-Identity: \"Mario Rossi\" <sip:+39%20333%201234567@carrier.example;user=phone>, <tel:+393331234567>\r\n",
        );
        let call = accepted(gate.admit(&request, from("192.0.2.10:5060"), WALL, "t"));
        assert_eq!(call.trunk, "carrier");
        assert_eq!(call.called.number.as_str(), NUMBER);
        assert_eq!(call.called.queue, "urp");
        assert_eq!(call.called.ivr.as_deref(), Some("principale"));
        assert_eq!(call.caller.unwrap().as_str(), "+393331234567");
        assert_eq!(call.caller_name.as_deref(), Some("Mario Rossi"));
        // Over IPv6 too, and the caller from the From without PAI.
        let request = invite(NUMBER, "<sip:0039061111111@carrier.example>", "");
        let call = accepted(gate.admit(&request, from("[2001:db8::5]:5060"), WALL, "t"));
        assert_eq!(call.caller.unwrap().as_str(), "+39061111111");
        // An anonymous caller is still a call, without a number.
        let request = invite(
            NUMBER,
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>",
            "",
        );
        let call = accepted(gate.admit(&request, from("192.0.2.10:5060"), WALL, "t"));
        assert_eq!(call.caller, None);
    }

    #[test]
    fn an_unknown_source_gets_403_before_the_number_is_looked_at() {
        let mut gate = TrunkGate::new(
            &SipConfig {
                trunks: config().trunks.into_iter().take(1).collect(),
                ..config()
            },
            [5; 32],
        )
        .unwrap();
        for to in [NUMBER, "+390699999999"] {
            let response = refused(gate.admit(
                &invite(to, "<sip:1@x.example>", ""),
                from("198.51.100.1:5060"),
                WALL,
                "t",
            ));
            assert_eq!(response.status, StatusCode::FORBIDDEN, "{to}");
            assert_eq!(response.reason, "Unknown Source");
        }
    }

    #[test]
    fn an_unknown_number_gets_404_and_another_trunks_number_403() {
        let mut gate = gate();
        let source = from("192.0.2.10:5060");
        for to in ["+390699999999", "operatore", "sip"] {
            let response =
                refused(gate.admit(&invite(to, "<sip:1@x.example>", ""), source, WALL, "t"));
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{to}");
        }
        // One of ours, but the carrier trunk may not deliver it.
        let response = refused(gate.admit(
            &invite("0612345600", "<sip:1@x.example>", ""),
            source,
            WALL,
            "t",
        ));
        assert_eq!(response.status, StatusCode::FORBIDDEN);
    }

    /// The Proxy-Authorization answering `challenge` (its first offer).
    fn answer(challenge: &Response, password: &str, nc: u32, uri: &str) -> String {
        let offer = challenge
            .headers
            .auth_values(&HeaderName::ProxyAuthenticate)
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let algorithm = Algorithm::parse(offer.param("algorithm").unwrap()).unwrap();
        let nonce = offer.param("nonce").unwrap().to_owned();
        let ha1 = digest::ha1(algorithm, "trunk-backup", REALM, password);
        let response =
            digest::response(algorithm, &ha1, &nonce, Some((nc, "c0ffee")), "INVITE", uri);
        format!(
            "Proxy-Authorization: Digest username=\"trunk-backup\", realm=\"{REALM}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc={nc:08x}, cnonce=\"c0ffee\"\r\n",
            algorithm.as_str()
        )
    }

    #[test]
    fn a_trunk_with_credentials_is_challenged_with_407_and_accepted_with_the_right_digest() {
        let mut gate = gate();
        let source = from("203.0.113.9:5060");
        let uri = format!("sip:{NUMBER}@ccu.example");
        let first = refused(gate.admit(
            &invite(NUMBER, "<sip:0612@x.example>", ""),
            source,
            WALL,
            "t",
        ));
        assert_eq!(first.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        let offers = first
            .headers
            .auth_values(&HeaderName::ProxyAuthenticate)
            .unwrap();
        assert_eq!(offers.len(), 2, "SHA-256 and MD5");
        assert_eq!(offers[0].param("algorithm"), Some("SHA-256"));

        let auth = answer(&first, PASSWORD, 1, &uri);
        let call = accepted(gate.admit(
            &invite(NUMBER, "<sip:0612222222@x.example>", &auth),
            source,
            WALL,
            "t",
        ));
        assert_eq!(call.trunk, "backup");
        // The same nonce-count again is a replay.
        let again = refused(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &auth),
            source,
            WALL,
            "t",
        ));
        assert_eq!(again.status, StatusCode::FORBIDDEN);
        // A higher one on the same nonce is fine.
        let next = answer(&first, PASSWORD, 2, &uri);
        accepted(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &next),
            source,
            WALL,
            "t",
        ));

        // Wrong password, or a digest for another Request-URI: 403.
        let wrong = answer(&first, "not the password", 3, &uri);
        let response = refused(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &wrong),
            source,
            WALL,
            "t",
        ));
        assert_eq!(response.status, StatusCode::FORBIDDEN);
        let elsewhere = answer(&first, PASSWORD, 4, "sip:+390612345600@ccu.example");
        let response = refused(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &elsewhere),
            source,
            WALL,
            "t",
        ));
        assert_eq!(response.status, StatusCode::FORBIDDEN);

        // An expired nonce with the right digest: 407 stale.
        let later = WALL + Duration::from_secs(3_600);
        let stale_auth = answer(&first, PASSWORD, 5, &uri);
        let response = refused(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &stale_auth),
            source,
            later,
            "t",
        ));
        assert_eq!(response.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        assert!(
            response
                .headers
                .get(&HeaderName::ProxyAuthenticate)
                .unwrap()
                .contains("stale=true")
        );
    }

    #[test]
    fn repeated_wrong_digests_lock_the_address_out_for_the_window() {
        let mut config = config();
        config.registrar.max_auth_failures = 3;
        config.registrar.auth_failure_window_secs = 300;
        let mut gate = TrunkGate::new(&config, [5; 32]).unwrap();
        let uri = format!("sip:{NUMBER}@ccu.example");
        let guesser = from("203.0.113.66:5060");
        let first =
            refused(gate.admit(&invite(NUMBER, "<sip:1@x.example>", ""), guesser, WALL, "t"));
        for nc in 1..=3 {
            let wrong = answer(&first, "a guess at the password", nc, &uri);
            let r = refused(gate.admit(
                &invite(NUMBER, "<sip:1@x.example>", &wrong),
                guesser,
                WALL,
                "t",
            ));
            assert_eq!(r.status, StatusCode::FORBIDDEN);
        }
        // Locked out: even the right password, even a fresh challenge round.
        let right = answer(&first, PASSWORD, 4, &uri);
        let r = refused(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &right),
            guesser,
            WALL,
            "t",
        ));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = refused(gate.admit(&invite(NUMBER, "<sip:1@x.example>", ""), guesser, WALL, "t"));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        // Another address is not affected.
        let right = answer(&first, PASSWORD, 5, &uri);
        accepted(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &right),
            from("203.0.113.7:5060"),
            WALL,
            "t",
        ));
        // After the window, a new challenge and the right password work.
        let later = WALL + Duration::from_secs(301);
        gate.purge(later);
        let challenge = refused(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", ""),
            guesser,
            later,
            "t",
        ));
        assert_eq!(challenge.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        let right = answer(&challenge, PASSWORD, 1, &uri);
        accepted(gate.admit(
            &invite(NUMBER, "<sip:1@x.example>", &right),
            guesser,
            later,
            "t",
        ));
    }

    #[test]
    fn source_blocks_match_by_prefix() {
        let net = SourceNet::parse("192.0.2.77/24").unwrap();
        assert!(net.contains("192.0.2.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.200".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let one = SourceNet::parse("198.51.100.7").unwrap();
        assert!(one.contains("198.51.100.7".parse().unwrap()));
        assert!(!one.contains("198.51.100.8".parse().unwrap()));
        let all = SourceNet::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6 = SourceNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        for bad in [
            "192.0.2.0/33",
            "2001:db8::/129",
            "carrier.example",
            "192.0.2.0/",
            "",
        ] {
            assert_eq!(SourceNet::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn configuration_mistakes_name_their_key() {
        let key = |change: &dyn Fn(&mut SipConfig)| {
            let mut config = config();
            change(&mut config);
            TrunkGate::new(&config, [0; 32])
                .map(|_| ())
                .unwrap_err()
                .key
        };
        assert_eq!(
            key(&|c| c.trunks[0].sources = vec!["10.0.0.0/40".into()]),
            "trunks[0].sources"
        );
        assert_eq!(
            key(&|c| {
                c.trunks[0].sources.clear();
            }),
            "trunks[0]"
        );
        assert_eq!(key(&|c| c.trunks[1].password = None), "trunks[1].password");
        assert_eq!(
            key(&|c| c.trunks[1].password = Some("corta".into())),
            "trunks[1].password"
        );
        assert_eq!(
            key(&|c| c.trunks[0].numbers = vec!["+390600000000".into()]),
            "trunks[0].numbers"
        );
        assert_eq!(key(&|c| c.trunks[0].numbers.clear()), "trunks[0].numbers");
        assert_eq!(
            key(&|c| c.trunks[1].name = "carrier".into()),
            "trunks[1].name"
        );
        assert_eq!(
            key(&|c| {
                c.numbers.insert(
                    "centralino".into(),
                    NumberConfig {
                        queue: "urp".into(),
                        ivr: None,
                    },
                );
            }),
            "numbers.\"centralino\""
        );
        assert_eq!(
            key(&|c| c.default_country_code = "abc".into()),
            "default_country_code"
        );
        // The password stays out of Debug.
        let shown = format!("{:?}", config().trunks[1]);
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
}

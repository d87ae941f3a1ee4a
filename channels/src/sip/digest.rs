//! Digest authentication for the registrar and trunks: RFC 3261 §22 with
//! the algorithms of RFC 7616 / RFC 8760 (MD5, SHA-256, SHA-512-256), and
//! a sans-IO nonce manager.
//!
//! The registrar challenges with [`challenge_headers`], reads the answer
//! with [`DigestCredentials::from_auth_value`] and decides with
//! [`NonceManager::authenticate`]. It stores per user the `HA1` of each
//! algorithm ([`ha1`]), never the password.
//!
//! Nonces are `timestamp || counter || HMAC-SHA-256(secret, timestamp ||
//! counter)`: the server can tell, without state, that it issued a nonce
//! and when. It keeps, per nonce in use, the highest nonce-count seen, so a
//! captured request cannot be replayed; a nonce used without `qop` (RFC
//! 2069 style) is single-use. Expired nonces get `stale=true` when the
//! digest itself was right (RFC 7616 §3.3), so phones retry silently.
//!
//! ```
//! use std::time::Duration;
//! use ccu_channels::sip::digest::{Algorithm, DigestCredentials, NonceConfig, NonceManager, AuthOutcome, ha1, response};
//! use ccu_channels::sip::header::AuthValue;
//!
//! let mut nonces = NonceManager::new([7; 32], NonceConfig::default());
//! let now = Duration::from_secs(1_700_000_000);
//! let nonce = nonces.issue(now);
//! // The phone computes its answer...
//! let key = ha1(Algorithm::Sha256, "1001", "ccu.example", "s3cret");
//! let answer = response(Algorithm::Sha256, &key, &nonce, Some((1, "0a4f113b")), "REGISTER", "sip:ccu.example");
//! let header = format!(
//!     "Digest username=\"1001\", realm=\"ccu.example\", nonce=\"{nonce}\", uri=\"sip:ccu.example\", \
//!      response=\"{answer}\", algorithm=SHA-256, qop=auth, nc=00000001, cnonce=\"0a4f113b\""
//! );
//! let credentials = DigestCredentials::from_auth_value(&AuthValue::parse(&header, "Authorization").unwrap()).unwrap();
//! // ...and the registrar checks it, once.
//! assert_eq!(nonces.authenticate(&credentials, "REGISTER", &key, now), AuthOutcome::Authenticated);
//! assert_eq!(nonces.authenticate(&credentials, "REGISTER", &key, now), AuthOutcome::Replayed);
//! ```

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha2::{Sha256, Sha512_256};

use crate::sip::header::AuthValue;
use crate::sip::message::{Header, HeaderName};
use crate::sip::scan::quote;

/// A digest algorithm. The `-sess` variants are not offered: SIP phones
/// rarely implement them and they add nothing for REGISTER. In
/// configuration it is written as in `algorithm=` (`"SHA-256"`, `"MD5"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum Algorithm {
    Md5,
    Sha256,
    /// RFC 8760 §2.1 `SHA-512-256`
    Sha512_256,
}

impl Algorithm {
    /// The token used in `algorithm=` (case-insensitive on input).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        [Algorithm::Md5, Algorithm::Sha256, Algorithm::Sha512_256]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// Lower-case hex of the hash of `data`.
    pub fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
            Algorithm::Sha512_256 => hex(&Sha512_256::digest(data)),
        }
    }
}

/// An `algorithm` name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown digest algorithm {0:?} (expected MD5, SHA-256 or SHA-512-256)")]
pub struct UnknownAlgorithm(pub String);

impl From<Algorithm> for String {
    fn from(algorithm: Algorithm) -> String {
        algorithm.as_str().to_owned()
    }
}

impl TryFrom<String> for Algorithm {
    type Error = UnknownAlgorithm;

    fn try_from(name: String) -> Result<Algorithm, UnknownAlgorithm> {
        Algorithm::parse(&name).ok_or(UnknownAlgorithm(name))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// `HA1 = H(username ":" realm ":" password)` (RFC 7616 §3.4.2).
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hex(format!("{username}:{realm}:{password}").as_bytes())
}

/// The `response` value for `qop=auth` (with `Some((nc, cnonce))`) or for
/// the RFC 2069 form without qop (`None`), RFC 7616 §3.4.1.
pub fn response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    qop_auth: Option<(u32, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hex(format!("{method}:{uri}").as_bytes());
    let data = match qop_auth {
        Some((nc, cnonce)) => format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"),
        None => format!("{ha1}:{nonce}:{ha2}"),
    };
    algorithm.hex(data.as_bytes())
}

/// Why an Authorization header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// RFC 4475 §3.3.7: answer with a fresh challenge.
    #[error("authorization scheme {0:?} is not Digest")]
    NotDigest(String),
    #[error("missing digest parameter {0}")]
    Missing(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    #[error("unsupported qop {0:?}")]
    Qop(String),
    #[error("nonce-count is not 8 hex digits")]
    NonceCount,
}

/// The digest parameters of an Authorization / Proxy-Authorization value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    /// `Some((nc, cnonce))` for `qop=auth`.
    pub qop_auth: Option<(u32, String)>,
    pub opaque: Option<String>,
}

impl DigestCredentials {
    pub fn from_auth_value(value: &AuthValue) -> Result<DigestCredentials, CredentialsError> {
        if !value.scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest(value.scheme.clone()));
        }
        let get = |name: &'static str| value.param(name).ok_or(CredentialsError::Missing(name));
        let algorithm = match value.param("algorithm") {
            // Absent means MD5 (RFC 7616 §3.4).
            None => Algorithm::Md5,
            Some(a) => {
                Algorithm::parse(a).ok_or_else(|| CredentialsError::Algorithm(a.to_owned()))?
            }
        };
        let qop_auth = match value.param("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = get("nc")?;
                if nc.len() != 8 {
                    return Err(CredentialsError::NonceCount);
                }
                let nc = u32::from_str_radix(nc, 16).map_err(|_| CredentialsError::NonceCount)?;
                Some((nc, get("cnonce")?.to_owned()))
            }
            Some(q) => return Err(CredentialsError::Qop(q.to_owned())),
        };
        Ok(DigestCredentials {
            username: get("username")?.to_owned(),
            realm: get("realm")?.to_owned(),
            nonce: get("nonce")?.to_owned(),
            uri: get("uri")?.to_owned(),
            response: get("response")?.to_owned(),
            algorithm,
            qop_auth,
            opaque: value.param("opaque").map(str::to_owned),
        })
    }

    /// Whether `response` is right for this HA1 and method. Compares in
    /// constant time.
    pub fn verify(&self, method: &str, ha1: &str) -> bool {
        let expected = response(
            self.algorithm,
            ha1,
            &self.nonce,
            self.qop_auth
                .as_ref()
                .map(|(nc, cnonce)| (*nc, cnonce.as_str())),
            method,
            &self.uri,
        );
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// WWW-Authenticate (or Proxy-Authenticate) values offering each
/// algorithm, strongest first: RFC 8760 §2.4 has the server list SHA-256
/// before MD5 so a capable client picks it.
pub fn challenge_headers(
    name: HeaderName,
    realm: &str,
    nonce: &str,
    algorithms: &[Algorithm],
    stale: bool,
) -> Vec<Header> {
    algorithms
        .iter()
        .map(|a| {
            let mut value = format!(
                "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"",
                quote(realm),
                quote(nonce),
                a.as_str()
            );
            if stale {
                value.push_str(", stale=true");
            }
            Header::new(name.clone(), value)
        })
        .collect()
}

/// The account ccu answers a carrier's challenge with (RFC 3261 §22.2:
/// the UAC side of digest). The password is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("no Digest challenge with an algorithm and qop we support")]
    Unsupported,
}

/// A challenge we can answer: the strongest of the offered ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    /// The challenge offers `qop=auth` (otherwise the RFC 2069 form).
    pub qop_auth: bool,
    pub opaque: Option<String>,
    /// `stale=true`: the credentials were right, the nonce old (RFC 7616
    /// §3.3), so one more try with the new nonce is due.
    pub stale: bool,
}

impl Challenge {
    /// Picks from WWW-Authenticate (or Proxy-Authenticate) values: Digest
    /// only, SHA-256 (RFC 8760) before MD5, `qop=auth` or none (a challenge
    /// offering only `auth-int` is skipped).
    pub fn pick<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Challenge, ChallengeError> {
        let mut best: Option<Challenge> = None;
        for value in values {
            let Ok(value) = AuthValue::parse(value, "WWW-Authenticate") else {
                continue;
            };
            if !value.scheme.eq_ignore_ascii_case("Digest") {
                continue;
            }
            let (Some(realm), Some(nonce)) = (value.param("realm"), value.param("nonce")) else {
                continue;
            };
            let Some(algorithm) = value
                .param("algorithm")
                .map_or(Some(Algorithm::Md5), Algorithm::parse)
            else {
                continue;
            };
            let qop_auth = match value.param("qop") {
                None => false,
                Some(qop)
                    if qop
                        .split(',')
                        .any(|q| q.trim().eq_ignore_ascii_case("auth")) =>
                {
                    true
                }
                Some(_) => continue,
            };
            let challenge = Challenge {
                realm: realm.to_owned(),
                nonce: nonce.to_owned(),
                algorithm,
                qop_auth,
                opaque: value.param("opaque").map(str::to_owned),
                stale: value
                    .param("stale")
                    .is_some_and(|s| s.eq_ignore_ascii_case("true")),
            };
            let rank = |a: Algorithm| match a {
                Algorithm::Md5 => 0,
                Algorithm::Sha256 => 2,
                Algorithm::Sha512_256 => 1,
            };
            if best
                .as_ref()
                .is_none_or(|b| rank(algorithm) > rank(b.algorithm))
            {
                best = Some(challenge);
            }
        }
        best.ok_or(ChallengeError::Unsupported)
    }

    /// The Authorization (or Proxy-Authorization) value for a request:
    /// `nc` 1 (each challenge is answered once), `cnonce` from the caller.
    pub fn authorize(
        &self,
        credentials: &ClientCredentials,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let ha1 = ha1(
            self.algorithm,
            &credentials.username,
            &self.realm,
            &credentials.password,
        );
        let qop = self.qop_auth.then_some((1, cnonce));
        let response = response(self.algorithm, &ha1, &self.nonce, qop, method, uri);
        let mut value = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&credentials.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            quote(&response),
            self.algorithm.as_str(),
        );
        if self.qop_auth {
            value.push_str(&format!(
                ", qop=auth, nc=00000001, cnonce={}",
                quote(cnonce)
            ));
        }
        if let Some(opaque) = &self.opaque {
            value.push_str(&format!(", opaque={}", quote(opaque)));
        }
        value
    }
}

/// Nonce lifetime and bookkeeping limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceConfig {
    /// How long a nonce may be used after it was issued.
    pub ttl: Duration,
    /// Nonces tracked at once (for replay detection). When full of live
    /// entries, further new nonces are answered as stale rather than
    /// tracked, which bounds memory under a flood.
    pub max_tracked: usize,
}

impl Default for NonceConfig {
    fn default() -> NonceConfig {
        NonceConfig {
            ttl: Duration::from_secs(300),
            max_tracked: 100_000,
        }
    }
}

/// What the registrar does with a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Authenticated,
    /// Right digest on an expired nonce: challenge again with
    /// `stale=true`.
    Stale,
    /// The nonce-count did not increase, or a qop-less nonce came back: a
    /// replay. Challenge again (without stale).
    Replayed,
    /// Wrong password, a nonce we did not issue, or a realm mismatch:
    /// challenge again (and count it for rate limiting).
    Rejected,
}

struct Tracked {
    expires_at: Duration,
    /// Highest nonce-count accepted; `None` after a qop-less use.
    last_nc: Option<u32>,
}

/// Issues and checks nonces. `now` is the time since the UNIX epoch,
/// supplied by the caller; the secret too (random per process, or shared
/// by the nodes of a cluster so that any node can check any nonce).
pub struct NonceManager {
    secret: [u8; 32],
    config: NonceConfig,
    counter: u64,
    tracked: HashMap<String, Tracked>,
}

impl NonceManager {
    pub fn new(secret: [u8; 32], config: NonceConfig) -> NonceManager {
        NonceManager {
            secret,
            config,
            counter: 0,
            tracked: HashMap::new(),
        }
    }

    fn mac(&self, issued_at: u64, counter: u64) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            // HMAC takes keys of any length; this cannot happen.
            Err(_) => return String::new(),
        };
        mac.update(&issued_at.to_be_bytes());
        mac.update(&counter.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        hex(tag.get(..16).unwrap_or_default())
    }

    /// A fresh nonce (64 hex digits).
    pub fn issue(&mut self, now: Duration) -> String {
        self.counter = self.counter.wrapping_add(1);
        let issued_at = now.as_secs();
        format!(
            "{issued_at:016x}{:016x}{}",
            self.counter,
            self.mac(issued_at, self.counter)
        )
    }

    /// When a nonce we issued was issued; `None` for anything else.
    fn issued_at(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return None;
        }
        let issued_at = u64::from_str_radix(nonce.get(..16)?, 16).ok()?;
        let counter = u64::from_str_radix(nonce.get(16..32)?, 16).ok()?;
        constant_time_eq(
            self.mac(issued_at, counter).as_bytes(),
            nonce.get(32..)?.as_bytes(),
        )
        .then_some(issued_at)
    }

    /// Checks credentials against the user's HA1 for their algorithm, the
    /// nonce's age and its use so far. Records the use when it succeeds.
    pub fn authenticate(
        &mut self,
        credentials: &DigestCredentials,
        method: &str,
        ha1: &str,
        now: Duration,
    ) -> AuthOutcome {
        let Some(issued_at) = self.issued_at(&credentials.nonce) else {
            return AuthOutcome::Rejected;
        };
        // Verify the digest before touching any state, so that garbage
        // cannot burn nonce-counts.
        if !credentials.verify(method, ha1) {
            return AuthOutcome::Rejected;
        }
        let expires_at = Duration::from_secs(issued_at).saturating_add(self.config.ttl);
        if now >= expires_at {
            return AuthOutcome::Stale;
        }
        let nc = credentials.qop_auth.as_ref().map(|(nc, _)| *nc);
        if let Some(entry) = self.tracked.get_mut(&credentials.nonce) {
            return match (entry.last_nc, nc) {
                (Some(last), Some(nc)) if nc > last => {
                    entry.last_nc = Some(nc);
                    AuthOutcome::Authenticated
                }
                _ => AuthOutcome::Replayed,
            };
        }
        if nc == Some(0) {
            // nc starts at 00000001 (RFC 7616 §3.4).
            return AuthOutcome::Rejected;
        }
        if self.tracked.len() >= self.config.max_tracked {
            self.tracked.retain(|_, t| t.expires_at > now);
            if self.tracked.len() >= self.config.max_tracked {
                return AuthOutcome::Stale;
            }
        }
        self.tracked.insert(
            credentials.nonce.clone(),
            Tracked {
                expires_at,
                last_nc: nc,
            },
        );
        AuthOutcome::Authenticated
    }

    /// Forgets expired nonces; call now and then (e.g. on each timer tick).
    pub fn purge(&mut self, now: Duration) {
        self.tracked.retain(|_, t| t.expires_at > now);
    }

    /// Nonces currently tracked.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1.
    const REALM: &str = "http-auth@example.org";
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    /// Our answer to a carrier's challenge: the RFC 7616 §3.9.1 example
    /// (SHA-256 picked over MD5, opaque echoed), and what the verifying side
    /// of this module accepts.
    #[test]
    fn a_challenge_is_answered_with_the_strongest_algorithm_and_verifies() {
        let challenge = Challenge::pick([
            "Basic realm=\"x\"",
            &format!("Digest realm=\"{REALM}\", qop=\"auth, auth-int\", algorithm=MD5, nonce=\"{NONCE}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""),
            &format!("Digest realm=\"{REALM}\", qop=\"auth, auth-int\", algorithm=SHA-256, nonce=\"{NONCE}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""),
        ])
        .unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        assert!(challenge.qop_auth && !challenge.stale);
        let credentials = ClientCredentials {
            username: "Mufasa".into(),
            password: "Circle of Life".into(),
        };
        let value = challenge.authorize(&credentials, "GET", "/dir/index.html", CNONCE);
        assert!(
            value.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{value}"
        );
        assert!(value.contains("opaque=\"FQhe/"), "{value}");
        let parsed = AuthValue::parse(&value, "Authorization").unwrap();
        let back = DigestCredentials::from_auth_value(&parsed).unwrap();
        let key = ha1(Algorithm::Sha256, "Mufasa", REALM, "Circle of Life");
        assert!(back.verify("GET", &key));
        assert!(!back.verify("POST", &key));
        assert!(!format!("{credentials:?}").contains("Circle"));
    }

    #[test]
    fn challenges_we_cannot_answer_are_refused_and_rfc_2069_is_answered() {
        for values in [
            vec!["Basic realm=\"x\""],
            vec!["Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""],
            vec!["Digest realm=\"x\", nonce=\"n\", algorithm=SHA-1"],
            vec!["Digest nonce=\"n\""],
            vec!["Digest realm=\"x"],
            vec![],
        ] {
            assert_eq!(
                Challenge::pick(values.clone()),
                Err(ChallengeError::Unsupported),
                "{values:?}"
            );
        }
        let old = Challenge::pick(["Digest realm=\"r\", nonce=\"n\", stale=TRUE"]).unwrap();
        assert!(old.stale && !old.qop_auth);
        assert_eq!(old.algorithm, Algorithm::Md5);
        let credentials = ClientCredentials {
            username: "u".into(),
            password: "p".into(),
        };
        let value = old.authorize(&credentials, "INVITE", "sip:+39333@sbc", "c");
        assert!(
            !value.contains("qop") && !value.contains("cnonce"),
            "{value}"
        );
        let back =
            DigestCredentials::from_auth_value(&AuthValue::parse(&value, "Authorization").unwrap())
                .unwrap();
        assert!(back.verify("INVITE", &ha1(Algorithm::Md5, "u", "r", "p")));
    }

    #[test]
    fn rfc_7616_example_md5_and_sha256() {
        for (algorithm, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let key = ha1(algorithm, "Mufasa", REALM, "Circle of Life");
            let got = response(
                algorithm,
                &key,
                NONCE,
                Some((1, CNONCE)),
                "GET",
                "/dir/index.html",
            );
            assert_eq!(got, expected, "{algorithm:?}");
        }
    }

    #[test]
    fn rfc_2617_example() {
        let key = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let got = response(
            Algorithm::Md5,
            &key,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some((1, "0a4f113b")),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(got, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn credentials_parse_and_verify_from_the_rfc_7616_header() {
        let header = format!(
            "Digest username=\"Mufasa\", realm=\"{REALM}\", uri=\"/dir/index.html\", algorithm=SHA-256, \
             nonce=\"{NONCE}\", nc=00000001, cnonce=\"{CNONCE}\", qop=auth, \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        );
        let value = AuthValue::parse(&header, "Authorization").unwrap();
        let credentials = DigestCredentials::from_auth_value(&value).unwrap();
        assert_eq!(credentials.algorithm, Algorithm::Sha256);
        assert_eq!(credentials.qop_auth, Some((1, CNONCE.to_owned())));
        let key = ha1(Algorithm::Sha256, "Mufasa", REALM, "Circle of Life");
        assert!(credentials.verify("GET", &key));
        assert!(!credentials.verify("POST", &key));
        let wrong = ha1(Algorithm::Sha256, "Mufasa", REALM, "circle of life");
        assert!(!credentials.verify("GET", &wrong));
    }

    #[test]
    fn unknown_schemes_algorithms_and_qops_are_refused() {
        let parse = |s: &str| {
            DigestCredentials::from_auth_value(&AuthValue::parse(s, "Authorization").unwrap())
        };
        assert_eq!(
            parse("NoOneKnowsThisScheme opaque-data=here"),
            Err(CredentialsError::NotDigest("NoOneKnowsThisScheme".into()))
        );
        assert!(matches!(
            parse(
                "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", algorithm=SHA-1"
            ),
            Err(CredentialsError::Algorithm(_))
        ));
        assert!(matches!(
            parse(
                "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth-int, nc=00000001, cnonce=\"c\""
            ),
            Err(CredentialsError::Qop(_))
        ));
        assert_eq!(
            parse(
                "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", qop=auth, nc=1, cnonce=\"c\""
            ),
            Err(CredentialsError::NonceCount)
        );
        assert_eq!(
            parse("Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\""),
            Err(CredentialsError::Missing("username"))
        );
    }

    #[test]
    fn challenges_list_sha256_first_and_mark_stale() {
        let headers = challenge_headers(
            HeaderName::WwwAuthenticate,
            "ccu.example",
            "abc",
            &[Algorithm::Sha256, Algorithm::Md5],
            true,
        );
        assert_eq!(
            headers[0].value,
            "Digest realm=\"ccu.example\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
        assert!(headers[1].value.contains("algorithm=MD5"));
        let parsed = AuthValue::parse(&headers[0].value, "WWW-Authenticate").unwrap();
        assert_eq!(parsed.param("nonce"), Some("abc"));
    }

    const T0: Duration = Duration::from_secs(1_700_000_000);

    fn credentials(
        nonce: &str,
        algorithm: Algorithm,
        password: &str,
        qop: Option<u32>,
    ) -> DigestCredentials {
        let key = ha1(algorithm, "1001", "ccu.example", password);
        let cnonce = "8f3a";
        DigestCredentials {
            username: "1001".into(),
            realm: "ccu.example".into(),
            nonce: nonce.into(),
            uri: "sip:ccu.example".into(),
            response: response(
                algorithm,
                &key,
                nonce,
                qop.map(|nc| (nc, cnonce)),
                "REGISTER",
                "sip:ccu.example",
            ),
            algorithm,
            qop_auth: qop.map(|nc| (nc, cnonce.to_owned())),
            opaque: None,
        }
    }

    fn key(algorithm: Algorithm) -> String {
        ha1(algorithm, "1001", "ccu.example", "right")
    }

    #[test]
    fn a_nonce_count_must_increase() {
        let mut nonces = NonceManager::new([1; 32], NonceConfig::default());
        let nonce = nonces.issue(T0);
        let md5 = key(Algorithm::Md5);
        let first = credentials(&nonce, Algorithm::Md5, "right", Some(1));
        assert_eq!(
            nonces.authenticate(&first, "REGISTER", &md5, T0),
            AuthOutcome::Authenticated
        );
        assert_eq!(
            nonces.authenticate(&first, "REGISTER", &md5, T0),
            AuthOutcome::Replayed
        );
        let third = credentials(&nonce, Algorithm::Md5, "right", Some(3));
        assert_eq!(
            nonces.authenticate(&third, "REGISTER", &md5, T0),
            AuthOutcome::Authenticated
        );
        let second = credentials(&nonce, Algorithm::Md5, "right", Some(2));
        assert_eq!(
            nonces.authenticate(&second, "REGISTER", &md5, T0),
            AuthOutcome::Replayed
        );
    }

    #[test]
    fn a_nonce_without_qop_is_single_use() {
        let mut nonces = NonceManager::new([1; 32], NonceConfig::default());
        let nonce = nonces.issue(T0);
        let sha = key(Algorithm::Sha256);
        let c = credentials(&nonce, Algorithm::Sha256, "right", None);
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &sha, T0),
            AuthOutcome::Authenticated
        );
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &sha, T0),
            AuthOutcome::Replayed
        );
    }

    #[test]
    fn an_expired_nonce_is_stale_only_when_the_password_was_right() {
        let config = NonceConfig {
            ttl: Duration::from_secs(60),
            ..NonceConfig::default()
        };
        let mut nonces = NonceManager::new([1; 32], config);
        let nonce = nonces.issue(T0);
        let sha = key(Algorithm::Sha256);
        let later = T0 + Duration::from_secs(60);
        let right = credentials(&nonce, Algorithm::Sha256, "right", Some(1));
        let wrong = credentials(&nonce, Algorithm::Sha256, "wrong", Some(1));
        assert_eq!(
            nonces.authenticate(&wrong, "REGISTER", &sha, later),
            AuthOutcome::Rejected
        );
        assert_eq!(
            nonces.authenticate(&right, "REGISTER", &sha, later),
            AuthOutcome::Stale
        );
        let just_in_time = T0 + Duration::from_secs(59);
        assert_eq!(
            nonces.authenticate(&right, "REGISTER", &sha, just_in_time),
            AuthOutcome::Authenticated
        );
    }

    #[test]
    fn forged_and_foreign_nonces_are_rejected() {
        let mut nonces = NonceManager::new([1; 32], NonceConfig::default());
        let mut other = NonceManager::new([2; 32], NonceConfig::default());
        let md5 = key(Algorithm::Md5);
        let foreign = other.issue(T0);
        let c = credentials(&foreign, Algorithm::Md5, "right", Some(1));
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &md5, T0),
            AuthOutcome::Rejected
        );
        // Moving the timestamp forward breaks the MAC.
        let mine = nonces.issue(T0);
        let forged = format!("{:016x}{}", T0.as_secs() + 3600, &mine[16..]);
        let c = credentials(&forged, Algorithm::Md5, "right", Some(1));
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &md5, T0),
            AuthOutcome::Rejected
        );
        let c = credentials("short", Algorithm::Md5, "right", Some(1));
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &md5, T0),
            AuthOutcome::Rejected
        );
    }

    #[test]
    fn tracking_is_bounded_and_purged() {
        let config = NonceConfig {
            ttl: Duration::from_secs(60),
            max_tracked: 2,
        };
        let mut nonces = NonceManager::new([1; 32], config);
        let md5 = key(Algorithm::Md5);
        for _ in 0..2 {
            let n = nonces.issue(T0);
            let c = credentials(&n, Algorithm::Md5, "right", Some(1));
            assert_eq!(
                nonces.authenticate(&c, "REGISTER", &md5, T0),
                AuthOutcome::Authenticated
            );
        }
        let n = nonces.issue(T0);
        let c = credentials(&n, Algorithm::Md5, "right", Some(1));
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &md5, T0),
            AuthOutcome::Stale
        );
        // Once the old ones expire there is room again.
        let later = T0 + Duration::from_secs(61);
        let n = nonces.issue(later);
        let c = credentials(&n, Algorithm::Md5, "right", Some(1));
        assert_eq!(
            nonces.authenticate(&c, "REGISTER", &md5, later),
            AuthOutcome::Authenticated
        );
        nonces.purge(later + Duration::from_secs(61));
        assert_eq!(nonces.tracked(), 0);
    }
}

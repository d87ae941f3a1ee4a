//! Authentication and authorization: argon2id password hashes, opaque
//! session tokens, and extractors that admit a request only with a live
//! session and a sufficient role.
//!
//! A session token is 32 random bytes. The browser gets it in an HttpOnly,
//! SameSite=Strict cookie (so page scripts cannot read it and other sites
//! cannot send it); scripts send the same token as `Authorization: Bearer`.
//! The store keeps only its SHA-256, so a leaked database holds no usable
//! session. Tokens are opaque rather than JWTs so logout and deactivation
//! take effect at once.

use std::marker::PhantomData;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::store::{Role, Scope, User};

pub const SESSION_COOKIE: &str = "ccu_session";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes with argon2id and the crate's default (OWASP-recommended)
/// parameters. CPU-heavy on purpose: run it on the [`PasswordPool`].
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let fail = |e: &dyn std::fmt::Display| PasswordError::Hash(e.to_string());
    let mut salt = [0_u8; 16];
    getrandom::fill(&mut salt).map_err(|e| fail(&e))?;
    let params = Params::default();
    let mut out = [0_u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        &salt,
        &mut out,
    )
    .map_err(|e| fail(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(hash.to_string())
}

/// Constant-time verification against a stored PHC string; a malformed
/// stored hash verifies nothing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut out = vec![0_u8; expected.len()];
    if argon2_into(
        algorithm,
        version,
        params,
        password.as_bytes(),
        salt,
        &mut out,
    )
    .is_err()
    {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Stored hashes asking for more memory than this (256 MiB) verify nothing.
const MAX_ARGON2_BLOCKS: usize = 256 * 1024;

fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if blocks > MAX_ARGON2_BLOCKS {
        return Err(argon2::Error::MemoryTooMuch);
    }
    let argon2 = Argon2::new(algorithm, version, params);
    // argon2's working memory (19 MiB with the default parameters), with a
    // capacity above glibc's largest dynamic mmap threshold (32 MiB on
    // 64-bit): such a block is always mapped on its own and unmapped when
    // dropped, and only the pages argon2 touches count in RSS. A block the
    // exact size made glibc raise its threshold after the first free and
    // serve every later one from the heap, which it kept: a burst of
    // logins left hundreds of MiB behind (docs/performance.md).
    const ALWAYS_MAPPED: usize = (32 << 20) / Block::SIZE + 1;
    let mut memory: Vec<Block> = Vec::with_capacity(blocks.max(ALWAYS_MAPPED));
    memory.resize(blocks, Block::default());
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory)
}

/// A few dedicated threads for argon2. Each hash takes ~19 MiB; run on
/// tokio's blocking pool, every new pool thread would keep such a block in
/// its own malloc arena, and a burst of logins grew the process by hundreds
/// of MiB that it never gave back. A fixed pool bounds both the memory and
/// the CPU that password checks can take.
pub struct PasswordPool {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

impl PasswordPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(threads * 4);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("ccu-argon2-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking a job, not while running it.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on the pool; `None` if the pool is saturated or gone.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .try_send(Box::new(move || {
                let _ = reply.send(work());
            }))
            .ok()?;
        answer.await.ok()
    }
}

/// Random bytes from the operating system, base64url-encoded.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The OS generator failing is not something to limp along without.
    getrandom::fill(&mut buf).expect("the operating system's random generator failed");
    URL_SAFE_NO_PAD.encode(buf)
}

/// A password for people to type: no look-alike characters.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).expect("the operating system's random generator failed");
    // 256 % 56 != 0 leaves a tiny bias; with 24 characters the password
    // still carries well over 128 bits.
    buf.iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which organizations a user sees. The city's supervisors and admins see
/// everything; everyone else sees their organization and explicit grants,
/// and operators also whatever is assigned to them.
pub fn scope_for(user: &User, city_organization: &str) -> Scope {
    if user.organization_id == city_organization && user.role >= Role::Supervisor {
        return Scope::All;
    }
    let mut organizations = vec![user.organization_id.clone()];
    organizations.extend(user.grants.iter().cloned());
    Scope::Organizations {
        organizations,
        assigned_to: Some(user.id),
    }
}

/// The token a request carries: a bearer header first, then the cookie.
pub fn request_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|t| !t.is_empty())
}

/// A live session: who is asking and what they may see.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub scope: Scope,
    pub token_hash: String,
    pub expires_at: i64,
}

/// The least role a route needs.
pub trait MinRole: Send + Sync + 'static {
    const ROLE: Role;
}

pub struct AnyRole;
impl MinRole for AnyRole {
    const ROLE: Role = Role::Operator;
}

pub struct SupervisorRole;
impl MinRole for SupervisorRole {
    const ROLE: Role = Role::Supervisor;
}

pub struct AdminRole;
impl MinRole for AdminRole {
    const ROLE: Role = Role::Admin;
}

/// Extractor: a request with a live session whose role is at least `R`.
/// Missing or dead credentials give 401, a lesser role 403. Put it first in
/// a handler's arguments so authorization is decided before the body is read.
pub struct Auth<R: MinRole = AnyRole> {
    pub session: Session,
    _role: PhantomData<R>,
}

pub type AdminAuth = Auth<AdminRole>;
pub type SupervisorAuth = Auth<SupervisorRole>;

impl<R: MinRole> std::ops::Deref for Auth<R> {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl<R: MinRole> FromRequestParts<AppState> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = request_token(parts).ok_or(ApiError::Unauthorized)?;
        let hash = token_hash(&token);
        let (user, expires_at) = state
            .store
            .session_user(&hash, crate::now_ms())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if user.role < R::ROLE {
            return Err(ApiError::Forbidden);
        }
        let scope = scope_for(&user, state.settings.city_organization());
        Ok(Self {
            session: Session {
                user,
                scope,
                token_hash: hash,
                expires_at,
            },
            _role: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("corretto cavallo batteria").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("corretto cavallo batteria", &hash));
        assert!(!verify_password("corretto cavallo batterie", &hash));
        assert!(!verify_password("anything", "not a phc string"));
    }

    /// Hashes stored before the reusable memory (by the crate's own
    /// `PasswordHasher`, any parameters) still verify, and ours verify with it.
    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let password = "corretto cavallo batteria";
        let theirs = Argon2::default()
            .hash_password(password.as_bytes())
            .unwrap()
            .to_string();
        assert!(verify_password(password, &theirs));
        assert!(!verify_password("sbagliata", &theirs));
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(password.as_bytes())
        .unwrap()
        .to_string();
        assert!(verify_password(password, &small));
        let ours = hash_password(password).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        );
        // A stored hash asking for 1 GiB of memory verifies nothing.
        let greedy = small.replace("m=4096", "m=1048576");
        assert!(!verify_password(password, &greedy));
    }

    #[test]
    fn tokens_are_random_and_hashes_are_hex() {
        let (a, b) = (random_token(32), random_token(32));
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
        let password = random_password(24);
        assert_eq!(password.chars().count(), 24);
        assert!(!password.contains(['0', 'O', 'l', '1', 'I']));
    }
}

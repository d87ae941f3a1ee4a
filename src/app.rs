//! Start-up: [`Application::build`] opens the store, applies migrations,
//! synchronises the configured organizations and queues, creates the first
//! admin when there is nobody, connects the bus and binds every listener,
//! exposing the bound addresses (tests bind port 0). [`Application::run`]
//! serves until the shutdown token is cancelled, then lets in-flight
//! requests finish within the configured grace period.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::bus::Bus;
use crate::config::Settings;
use crate::hub::Hub;
use crate::ratelimit::RateLimiter;
use crate::router::RouterHandle;
use crate::store::{NewUser, Role, Store, StoreError};

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub store: Store,
    pub bus: Bus,
    pub hub: Hub,
    pub login_per_user: RateLimiter,
    pub login_per_address: RateLimiter,
    /// Failures per username from any address: a looser cap that stops a
    /// distributed guess at one account without letting one address lock
    /// a user out (that key is username and address).
    pub login_per_username: RateLimiter,
    /// argon2 takes ~19 MiB and tens of ms per hash: at most this many at
    /// once, so a flood of logins cannot exhaust memory...
    pub hashing: tokio::sync::Semaphore,
    /// ...on these threads (see [`auth::PasswordPool`]).
    pub passwords: auth::PasswordPool,
    /// The e-mail outbox, once the e-mail channel has started: web-form
    /// acknowledgements and chat transcripts go through it.
    pub outbox: std::sync::OnceLock<Arc<crate::email::EmailChannel>>,
    /// The SIP endpoint, once the voice channel has started: the API lists
    /// registrations through it, `/metrics` reads its counters.
    pub sip: std::sync::OnceLock<ccu_channels::sip::endpoint::SipHandle>,
    pub chat_starts: RateLimiter,
    pub chat_messages: RateLimiter,
    pub forms: RateLimiter,
    /// A real argon2 hash to verify against when the username is unknown,
    /// so a failed login takes as long whether or not the user exists.
    pub dummy_hash: String,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Runs one argon2 hash or verification on the password pool: waits a
    /// little for a turn, then answers 503 rather than queueing without bound.
    pub async fn with_password_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, crate::api::error::ApiError> {
        let _permit =
            match tokio::time::timeout(Duration::from_secs(3), self.hashing.acquire()).await {
                Ok(Ok(permit)) => permit,
                _ => return Err(crate::api::error::ApiError::Busy),
            };
        self.passwords
            .run(work)
            .await
            .ok_or(crate::api::error::ApiError::Busy)
    }

    pub fn new(
        settings: Settings,
        store: Store,
        bus: Bus,
        router: RouterHandle,
    ) -> anyhow::Result<Self> {
        let hub = Hub::new(
            store.clone(),
            bus.clone(),
            router,
            Arc::new(settings.clone()),
        );
        let window = Duration::from_secs(settings.auth.login_window_seconds);
        let public_window = Duration::from_secs(settings.public.window_seconds);
        let hash_threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let dummy_hash = auth::hash_password(&auth::random_password(24))?;
        Ok(Self(Arc::new(Inner {
            login_per_user: RateLimiter::new(settings.auth.login_failures_per_user, window),
            login_per_address: RateLimiter::new(settings.auth.login_attempts_per_address, window),
            login_per_username: RateLimiter::new(
                settings.auth.login_failures_per_user.saturating_mul(10),
                window,
            ),
            hashing: tokio::sync::Semaphore::new(hash_threads),
            passwords: auth::PasswordPool::new(hash_threads)?,
            outbox: std::sync::OnceLock::new(),
            sip: std::sync::OnceLock::new(),
            chat_starts: RateLimiter::new(settings.public.chat_starts_per_address, public_window),
            chat_messages: RateLimiter::new(
                settings.public.chat_messages_per_address,
                public_window,
            ),
            forms: RateLimiter::new(settings.public.forms_per_address, public_window),
            dummy_hash,
            hub,
            settings,
            store,
            bus,
        })))
    }
}

pub struct Application {
    http: TcpListener,
    http_addr: SocketAddr,
    // e-mail channel (issue 6): the SMTP door and the outbox worker.
    smtp_addr: SocketAddr,
    email: crate::email::Running,
    // voice channel (issue 5): the SIP endpoint, UDP and TCP on one port.
    sip_addr: SocketAddr,
    sip: crate::sip::Running,
    state: AppState,
    shutdown: CancellationToken,
}

/// Where the generated first admin password is written.
pub fn initial_password_path(settings: &Settings) -> PathBuf {
    settings.data_dir.join("initial-admin-password")
}

impl Application {
    /// Everything that can fail at start fails here, before anything is served.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        crate::api::health::metrics_handle();
        crate::cli::create_data_dir(&settings.data_dir)
            .with_context(|| format!("creating data_dir {}", settings.data_dir.display()))?;
        let store = Store::connect(&settings.database_url)
            .await
            .context("opening the store (database_url)")?;
        store.migrate().await.context("applying migrations")?;
        if let Some(path) = settings.sqlite_path() {
            restrict_to_owner(std::path::Path::new(path));
        }
        sync_config(&settings, &store).await?;
        bootstrap_admin(&settings, &store).await?;
        let bus = match &settings.redis_url {
            Some(url) => Bus::redis(url, &settings.redis_prefix, shutdown.child_token())
                .await
                .context("connecting the event bus (redis_url)")?,
            None => Bus::in_process(),
        };
        let http = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("binding http_addr {}", settings.http_addr))?;
        let http_addr = http.local_addr()?;
        let (smtp, smtp_addr) = crate::email::bind(settings.smtp_addr).await?;
        let sip_sockets = crate::sip::bind(settings.sip_addr).await?;
        let sip_addr = sip_sockets.addr();
        let router = crate::router::start(
            &settings,
            store.clone(),
            bus.clone(),
            shutdown.child_token(),
        )
        .await
        .context("starting the router")?;
        let state =
            tokio::task::spawn_blocking(move || AppState::new(settings, store, bus, router))
                .await??;
        let email = crate::email::start(&state, smtp, shutdown.child_token())
            .context("starting the e-mail channel")?;
        let sip = crate::sip::start(&state, sip_sockets, shutdown.child_token())
            .context("starting the voice channel (SIP)")?;
        tracing::info!(
            %http_addr,
            %smtp_addr,
            %sip_addr,
            store = state.store.backend(),
            bus = state.bus.kind(),
            "ccu is ready"
        );
        Ok(Self {
            http,
            http_addr,
            smtp_addr,
            email,
            sip_addr,
            sip,
            state,
            shutdown,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp_addr
    }

    /// The SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token is cancelled, then waits for
    /// in-flight requests (at most `http.shutdown_grace_seconds`).
    pub async fn run(self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.state.settings.http.shutdown_grace_seconds);
        let housekeeping = tokio::spawn(housekeeping(
            self.state.clone(),
            self.shutdown.child_token(),
        ));
        let router = crate::api::router(self.state.clone());
        let http = &self.state.settings.http;
        serve_http(
            self.http,
            router,
            Duration::from_secs(http.header_read_timeout_seconds),
            http.max_connections,
            grace,
            self.shutdown.clone(),
        )
        .await;
        housekeeping.abort();
        // SMTP sessions finish their message, the outbox its attempt.
        if tokio::time::timeout(grace, self.email.stopped())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; e-mail tasks still running");
        }
        // Pending SIP requests got 503 when the token was cancelled.
        if tokio::time::timeout(grace, self.sip.stopped())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; SIP tasks still running");
        }
        self.state.store.close().await;
        tracing::info!("ccu stopped");
        Ok(())
    }
}

/// The HTTP accept loop. axum's own `serve` has no header-read timeout,
/// so a client trickling headers (slowloris) would hold a connection for
/// ever: this loop sets one, caps open connections, hands each connection
/// its peer address, and on shutdown stops accepting, lets in-flight
/// requests finish within `grace`, then drops the rest.
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    max_connections: usize,
    grace: Duration,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("ccu_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                router.clone().oneshot(request)
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; dropping the remaining connections");
    }
}

/// Periodic chores: expired sessions and idle rate-limit buckets.
async fn housekeeping(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = std::time::Instant::now();
        state.login_per_user.prune(now);
        state.login_per_address.prune(now);
        state.login_per_username.prune(now);
        state.chat_starts.prune(now);
        state.chat_messages.prune(now);
        state.forms.prune(now);
        if let Err(err) = state.store.purge_expired_sessions(crate::now_ms()).await {
            tracing::warn!(%err, "purging expired sessions failed");
        }
    }
}

/// Config is the source of truth for organizations and queues; the store
/// keeps a copy so rows can reference them and history survives a rename.
pub async fn sync_config(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    let now = crate::now_ms();
    for (id, org) in &settings.organizations {
        store
            .upsert_organization(id, &org.name, org.city, now)
            .await?;
    }
    for (id, queue) in &settings.queues {
        store.upsert_queue(id, queue, now).await?;
    }
    Ok(())
}

/// No default passwords: with no users at all, create `admin` in the city's
/// organization with a random password written once, mode 0600, to
/// `data_dir/initial-admin-password`.
async fn bootstrap_admin(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    if store.count_users().await? > 0 {
        return Ok(());
    }
    let password = auth::random_password(24);
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || auth::hash_password(&password)).await??
    };
    let admin = NewUser {
        username: "admin".into(),
        display_name: "Amministratore".into(),
        password_hash: hash,
        role: Role::Admin,
        organization_id: settings.city_organization().to_owned(),
        grants: Vec::new(),
        skills: Default::default(),
        languages: vec!["it".into()],
        capacity: Default::default(),
    };
    match store.create_user(&admin, crate::now_ms()).await {
        Ok(_) => {}
        // Another node sharing the database got there first.
        Err(StoreError::Conflict(_)) => return Ok(()),
        Err(err) => return Err(err.into()),
    }
    let path = initial_password_path(settings);
    write_secret(&path, &format!("{password}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "no users existed: created user \"admin\"; its password is in this file (read it, log in, change it, delete the file)"
    );
    Ok(())
}

/// The SQLite files hold password hashes and citizens' data: owner only.
fn restrict_to_owner(db: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = std::path::PathBuf::from(name);
        if path.exists()
            && let Err(err) =
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(%err, path = %path.display(), "cannot restrict the database file to its owner");
        }
    }
}

fn write_secret(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only when the file is created; an old file keeps its
    // permissions unless we set them.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

//! The tokio shell around [`Session`]: accepts connections, enforces the
//! connection limits, moves bytes, arms the timers, calls the sink, runs
//! the STARTTLS handshake and shuts down gracefully.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Action, MailSink, Reply, Session, SessionInfo, SinkError, SmtpConfig};

/// Why a TLS acceptor could not be built from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("reading the PEM data: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the STARTTLS acceptor from a PEM certificate chain and key.
///
/// The `ring` provider is named explicitly rather than installed as the
/// process default: rustls panics when two providers are linked and none is
/// chosen, and this way no other crate's features can change ours.
pub fn tls_acceptor_from_pem(cert_chain: &[u8], key: &[u8]) -> Result<TlsAcceptor, TlsSetupError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves SMTP on `listener` until `shutdown` is cancelled, then stops
/// accepting, sends 421 to every session waiting for a command, lets
/// sessions inside DATA finish their message (bounded by the DATA and sink
/// timeouts), and returns once every session has ended.
pub async fn serve<S: MailSink>(
    listener: TcpListener,
    config: SmtpConfig,
    sink: Arc<S>,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let total = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let counter = AtomicU64::new(0);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{started:x}{n:04x}");
        let slot = ConnectionSlot::take(&per_ip, peer.ip(), config.max_connections_per_ip);
        let permit = total.clone().try_acquire_owned().ok();
        let (config, sink, shutdown) = (config.clone(), sink.clone(), shutdown.clone());
        let span = tracing::info_span!("smtp", session = %id, %peer);
        tracker.spawn(
            async move {
                let (Some(_slot), Some(_permit)) = (slot, permit) else {
                    refuse(stream, &config).await;
                    return;
                };
                if let Err(e) = connection(stream, peer, id, &config, &*sink, &shutdown).await {
                    tracing::debug!(error = %e, "SMTP session ended with an error");
                }
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
}

/// Too many connections: 421 at once (RFC 5321 §3.1 lets a server refuse
/// with 421 instead of the greeting).
async fn refuse(mut stream: TcpStream, config: &SmtpConfig) {
    let reply = Reply::new(
        421,
        "4.7.0",
        format!("{} too many connections, try again later", config.hostname),
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&reply.to_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Holds one of the per-IP connection slots; gives it back when dropped.
struct ConnectionSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl ConnectionSlot {
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, limit: usize) -> Option<Self> {
        // A std mutex: held for a map lookup, never across an await.
        let mut guard = map.lock().unwrap_or_else(|poison| poison.into_inner());
        let count = guard.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut guard = self.map.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = guard.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                guard.remove(&self.ip);
            }
        }
    }
}

enum Next {
    Close,
    StartTls,
}

async fn connection<S: MailSink>(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: String,
    config: &Arc<SmtpConfig>,
    sink: &S,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let info = SessionInfo {
        id,
        peer,
        starttls_available: config.tls.is_some(),
    };
    let mut session = Session::new(config.clone(), info);
    write(&mut stream, &session.greeting().to_bytes(), config).await?;
    match drive(&mut stream, &mut session, config, sink, shutdown).await? {
        Next::Close => {
            let _ = stream.shutdown().await;
        }
        Next::StartTls => {
            let Some(acceptor) = &config.tls else {
                return Ok(());
            };
            let handshake = tokio::time::timeout(config.command_timeout, acceptor.accept(stream));
            let mut tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            };
            session.tls_established();
            // After TLS no second upgrade is possible: the session refuses it.
            drive(&mut tls, &mut session, config, sink, shutdown).await?;
            let _ = tls.shutdown().await;
        }
    }
    Ok(())
}

async fn write<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    bytes: &[u8],
    config: &SmtpConfig,
) -> std::io::Result<()> {
    // A client that stops reading must not pin the session forever.
    match tokio::time::timeout(config.command_timeout, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Moves bytes between the socket and the session until it closes or asks
/// for TLS.
async fn drive<IO, S>(
    io: &mut IO,
    session: &mut Session,
    config: &SmtpConfig,
    sink: &S,
    shutdown: &CancellationToken,
) -> std::io::Result<Next>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    S: MailSink,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        while let Some(action) = session.poll(unix_now(), sink) {
            match action {
                Action::Send(reply) => reply.write_to(&mut out),
                Action::SendAndClose(reply) => {
                    reply.write_to(&mut out);
                    write(io, &out, config).await?;
                    return Ok(Next::Close);
                }
                Action::StartTls(reply) => {
                    reply.write_to(&mut out);
                    write(io, &out, config).await?;
                    return Ok(Next::StartTls);
                }
                Action::Deliver(delivery) => {
                    // Replies to the pipelined commands before DATA go out
                    // now; the client is waiting for them anyway.
                    if !out.is_empty() {
                        write(io, &out, config).await?;
                        out.clear();
                    }
                    let id = delivery.envelope.id.clone();
                    let size = delivery.raw.len();
                    let result = match tokio::time::timeout(
                        config.data_end_timeout,
                        sink.accept(delivery.envelope, delivery.raw),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(SinkError::TimedOut(config.data_end_timeout)),
                    };
                    if result.is_ok() {
                        tracing::info!(message = %id, size, "message accepted");
                    }
                    session.delivered(result).write_to(&mut out);
                }
            }
        }
        // RFC 2920 §3: flush when no more input is waiting.
        if !out.is_empty() {
            write(io, &out, config).await?;
            out.clear();
        }
        let idle = session.is_idle();
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if idle => {
                let reply = session.shutdown_reply();
                write(io, &reply.to_bytes(), config).await?;
                return Ok(Next::Close);
            }
            read = tokio::time::timeout(session.timeout(), io.read(&mut buf)) => match read {
                Err(_) => {
                    let reply = session.timeout_reply();
                    write(io, &reply.to_bytes(), config).await?;
                    return Ok(Next::Close);
                }
                Ok(Ok(0)) => return Ok(Next::Close),
                Ok(Ok(n)) => session.receive(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            },
        }
    }
}

//! IMAP polling (issue 6 point 1, for cities whose mail lives on another
//! server): a small IMAP4rev1 client (RFC 3501) for the few commands a
//! poller needs: LOGIN, SELECT, UID SEARCH UNSEEN, UID FETCH BODY.PEEK[],
//! UID STORE +FLAGS (\Seen), UID MOVE (RFC 6851) or COPY + \Deleted +
//! EXPUNGE, LOGOUT. Responses are parsed by the sans-IO [`proto`]; this
//! file is the socket side, every read bounded by a timeout.
//!
//! Why our own: async-imap pulls an async-std-era stack (futures adapters,
//! nom parsers, channels) for a protocol surface of six commands; the parser
//! here is a few hundred lines, fuzzed by the same proptest as the rest.
//!
//! `BODY.PEEK[]` (§6.4.5) fetches without setting `\Seen`: the server
//! marks or moves a message only after ccu has committed it, so a crash in
//! between fetches it again and the store's Message-ID dedupe keeps one copy.

pub mod proto;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::pki_types::pem::PemObject;

pub use proto::{Fetch, ParseError, Response, Status};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapSecurity {
    /// Plain text: only for a server on loopback or a trusted network.
    None,
    /// TLS from the first byte (port 993, RFC 8314).
    Implicit,
    /// Plain, then `STARTTLS` (RFC 3501 §6.2.1) before LOGIN.
    StartTls,
}

/// Where and how to connect. The password is not printed by `Debug`.
#[derive(Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub security: ImapSecurity,
    pub username: String,
    pub password: String,
    /// PEM file of extra trusted roots (a city's own CA); the public roots
    /// (webpki-roots) are always trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// For every read and write.
    pub timeout: Duration,
}

impl std::fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server said BYE: {0}")]
    Bye(String),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{command} refused: {status:?} {text}")]
    Refused {
        command: &'static str,
        status: Status,
        text: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid {0}: {1}")]
    Argument(&'static str, String),
}

/// The connection, plain or TLS (an enum, not a trait object, so STARTTLS
/// can take the plain stream back to wrap it).
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.shutdown().await,
            Conn::Tls(s) => s.shutdown().await,
        }
    }
}

/// A logged-in IMAP session.
pub struct ImapClient {
    stream: Conn,
    buffer: Vec<u8>,
    next_tag: u32,
    timeout: Duration,
    capabilities: Vec<String>,
}

/// A command argument: sent as an atom as it is, or as an `astring`
/// (quoted, or a literal when it is not printable ASCII).
enum Arg<'a> {
    Atom(&'a str),
    Text(&'a str),
}

impl ImapClient {
    /// Connects, protects the connection as configured and logs in.
    pub async fn connect(config: &ImapConfig) -> Result<Self, ImapError> {
        let timeout = config.timeout;
        let tcp = within(
            timeout,
            TcpStream::connect((config.host.as_str(), config.port)),
        )
        .await??;
        let mut client = match config.security {
            ImapSecurity::Implicit => {
                Self::new(Conn::Tls(Box::new(tls(config, tcp).await?)), timeout)
            }
            ImapSecurity::None | ImapSecurity::StartTls => Self::new(Conn::Plain(tcp), timeout),
        };
        client.greeting().await?;
        if config.security == ImapSecurity::StartTls {
            client.command("STARTTLS", &[Arg::Atom("STARTTLS")]).await?;
            let ImapClient { stream, buffer, .. } = client;
            // Bytes sent before the handshake would be read as if they
            // came protected (the injection of CVE-2011-0411).
            if !buffer.is_empty() {
                return Err(ImapError::Tls("data pipelined after STARTTLS".into()));
            }
            let Conn::Plain(tcp) = stream else {
                return Err(ImapError::Tls("STARTTLS on a TLS connection".into()));
            };
            client = Self::new(Conn::Tls(Box::new(tls(config, tcp).await?)), timeout);
        }
        client
            .command(
                "LOGIN",
                &[
                    Arg::Atom("LOGIN"),
                    Arg::Text(&config.username),
                    Arg::Text(&config.password),
                ],
            )
            .await?;
        let responses = client
            .command("CAPABILITY", &[Arg::Atom("CAPABILITY")])
            .await?;
        client.capabilities = responses
            .into_iter()
            .find_map(|r| match r {
                Response::Capabilities(c) => Some(c),
                _ => None,
            })
            .unwrap_or_default();
        Ok(client)
    }

    fn new(stream: Conn, timeout: Duration) -> Self {
        Self {
            stream,
            buffer: Vec::with_capacity(8192),
            next_tag: 1,
            timeout,
            capabilities: Vec::new(),
        }
    }

    /// Selects a mailbox read-write; its UIDVALIDITY (§2.3.1.1), if sent.
    pub async fn select(&mut self, mailbox: &str) -> Result<Option<u32>, ImapError> {
        let mailbox = mailbox_name(mailbox)?;
        let responses = self
            .command("SELECT", &[Arg::Atom("SELECT"), Arg::Text(mailbox)])
            .await?;
        Ok(responses.into_iter().find_map(|r| match r {
            Response::UidValidity(v) => Some(v),
            _ => None,
        }))
    }

    /// The UIDs of the messages without `\Seen`, ascending.
    pub async fn unseen(&mut self) -> Result<Vec<u32>, ImapError> {
        let responses = self
            .command(
                "UID SEARCH",
                &[Arg::Atom("UID"), Arg::Atom("SEARCH"), Arg::Atom("UNSEEN")],
            )
            .await?;
        let mut uids: Vec<u32> = responses
            .into_iter()
            .flat_map(|r| match r {
                Response::Search(ids) => ids,
                _ => Vec::new(),
            })
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// The raw message with this UID, without marking it seen; `None` if it
    /// is gone (expunged by another client).
    pub async fn fetch(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ImapError> {
        let uid_text = uid.to_string();
        let responses = self
            .command(
                "UID FETCH",
                &[
                    Arg::Atom("UID"),
                    Arg::Atom("FETCH"),
                    Arg::Atom(&uid_text),
                    Arg::Atom("(UID BODY.PEEK[])"),
                ],
            )
            .await?;
        Ok(responses.into_iter().find_map(|r| match r {
            Response::Fetch(f) if f.uid == Some(uid) || f.uid.is_none() => f.body,
            _ => None,
        }))
    }

    /// Sets `\Seen` on the message.
    pub async fn mark_seen(&mut self, uid: u32) -> Result<(), ImapError> {
        let uid_text = uid.to_string();
        self.command(
            "UID STORE",
            &[
                Arg::Atom("UID"),
                Arg::Atom("STORE"),
                Arg::Atom(&uid_text),
                Arg::Atom("+FLAGS.SILENT"),
                Arg::Atom("(\\Seen)"),
            ],
        )
        .await?;
        Ok(())
    }

    /// Moves the message to `folder`: `UID MOVE` where the server has it
    /// (RFC 6851), else copy, flag `\Seen \Deleted` and expunge.
    pub async fn move_to(&mut self, uid: u32, folder: &str) -> Result<(), ImapError> {
        let folder = mailbox_name(folder)?;
        let uid_text = uid.to_string();
        if self.capabilities.iter().any(|c| c == "MOVE") {
            self.command(
                "UID MOVE",
                &[
                    Arg::Atom("UID"),
                    Arg::Atom("MOVE"),
                    Arg::Atom(&uid_text),
                    Arg::Text(folder),
                ],
            )
            .await?;
            return Ok(());
        }
        self.command(
            "UID COPY",
            &[
                Arg::Atom("UID"),
                Arg::Atom("COPY"),
                Arg::Atom(&uid_text),
                Arg::Text(folder),
            ],
        )
        .await?;
        self.command(
            "UID STORE",
            &[
                Arg::Atom("UID"),
                Arg::Atom("STORE"),
                Arg::Atom(&uid_text),
                Arg::Atom("+FLAGS.SILENT"),
                Arg::Atom("(\\Seen \\Deleted)"),
            ],
        )
        .await?;
        // Without UIDPLUS's UID EXPUNGE this also removes other messages
        // flagged \Deleted, as any client's EXPUNGE would.
        if self.capabilities.iter().any(|c| c == "UIDPLUS") {
            self.command(
                "UID EXPUNGE",
                &[Arg::Atom("UID"), Arg::Atom("EXPUNGE"), Arg::Atom(&uid_text)],
            )
            .await?;
        } else {
            self.command("EXPUNGE", &[Arg::Atom("EXPUNGE")]).await?;
        }
        Ok(())
    }

    /// Ends the session politely (errors ignored: we are leaving).
    pub async fn logout(mut self) {
        let _ = self.command("LOGOUT", &[Arg::Atom("LOGOUT")]).await;
        let _ = self.stream.shutdown().await;
    }

    async fn greeting(&mut self) -> Result<(), ImapError> {
        match self.read_response().await? {
            Response::Bye(text) => Err(ImapError::Bye(text)),
            _ => Ok(()),
        }
    }

    /// Sends one command and collects the untagged responses until its
    /// tagged one; `NO`/`BAD` become [`ImapError::Refused`].
    async fn command(
        &mut self,
        name: &'static str,
        args: &[Arg<'_>],
    ) -> Result<Vec<Response>, ImapError> {
        let tag = format!("c{}", self.next_tag);
        self.next_tag += 1;
        let mut line = tag.clone().into_bytes();
        let mut untagged = Vec::new();
        for arg in args {
            line.push(b' ');
            match arg {
                Arg::Atom(a) => line.extend_from_slice(a.as_bytes()),
                Arg::Text(t) => match proto::quoted(t) {
                    Some(q) => line.extend_from_slice(q.as_bytes()),
                    None => {
                        if t.contains(['\r', '\n', '\0']) {
                            return Err(ImapError::Argument(name, "line break or NUL".into()));
                        }
                        // A synchronising literal (§4.3): announce, wait
                        // for "+", then the bytes.
                        line.extend_from_slice(format!("{{{}}}\r\n", t.len()).as_bytes());
                        self.write(&line).await?;
                        line.clear();
                        loop {
                            match self.read_response().await? {
                                Response::Continuation => break,
                                Response::Tagged { status, text, .. } => {
                                    return Err(ImapError::Refused {
                                        command: name,
                                        status,
                                        text,
                                    });
                                }
                                Response::Bye(text) => return Err(ImapError::Bye(text)),
                                other => untagged.push(other),
                            }
                        }
                        line.extend_from_slice(t.as_bytes());
                    }
                },
            }
        }
        line.extend_from_slice(b"\r\n");
        self.write(&line).await?;
        loop {
            match self.read_response().await? {
                Response::Tagged {
                    tag: got,
                    status,
                    text,
                } if got == tag => {
                    return match status {
                        Status::Ok => Ok(untagged),
                        status => Err(ImapError::Refused {
                            command: name,
                            status,
                            text,
                        }),
                    };
                }
                Response::Bye(text) if name != "LOGOUT" => return Err(ImapError::Bye(text)),
                other => untagged.push(other),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        within(self.timeout, self.stream.write_all(bytes)).await??;
        Ok(())
    }

    async fn read_response(&mut self) -> Result<Response, ImapError> {
        loop {
            if let Some((response, used)) = proto::parse_response(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(response);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = within(self.timeout, self.stream.read(&mut chunk)).await??;
            if n == 0 {
                return Err(ImapError::Closed);
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Result<T, ImapError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| ImapError::Timeout(timeout))
}

/// Mailbox names are sent as ASCII; non-ASCII names need modified UTF-7
/// (RFC 3501 §5.1.3), which this client does not speak.
fn mailbox_name(name: &str) -> Result<&str, ImapError> {
    if name.is_empty() || !name.is_ascii() || name.contains(['\r', '\n', '\0']) {
        return Err(ImapError::Argument(
            "mailbox",
            format!("{name:?}: a non-empty ASCII name"),
        ));
    }
    Ok(name)
}

async fn tls(
    config: &ImapConfig,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = &config.ca_pem {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ImapError::Tls(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ImapError::Tls(format!("CA file: {e}")))?;
        }
    }
    // The ring provider named explicitly, as for the SMTP door.
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ImapError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(config.host.clone())
        .map_err(|e| ImapError::Tls(format!("server name {:?}: {e}", config.host)))?;
    within(
        config.timeout,
        TlsConnector::from(Arc::new(tls)).connect(name, tcp),
    )
    .await?
    .map_err(|e| ImapError::Tls(e.to_string()))
}

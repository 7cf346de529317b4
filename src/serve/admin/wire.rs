//! One admin connection, from the first byte to the last: framing with limits, login, session.
//!
//! pgwire 0.30's `process_socket` reads whatever length a message claims (a 100 MB startup
//! packet is buffered whole), lets a malformed SASL message panic the task, and takes a
//! `TcpStream` only, so nothing can sit between it and the socket. This module drives pgwire's
//! handlers (`StartupHandler`, `SimpleQueryHandler`, `ExtendedQueryHandler`) itself, over a
//! connection that frames messages on its own:
//!
//! * before login, a frame (the startup packet: 4-byte length first; later ones: a type byte,
//!   then a 4-byte length) longer than [`MAX_STARTUP_BYTES`] is refused on its length word,
//!   before its body is read or any buffer is sized for it;
//! * after login, past [`Limits::max_session_message`];
//! * a frame that does not decode, or a handler that panics on it, closes that connection with
//!   `08P01`; nothing else is touched;
//! * login (from accept to `ReadyForQuery`) must finish within [`Limits::auth_timeout`];
//! * wrong passwords are logged (user and address, never the password) and throttled per address.
//!
//! TLS is not offered (`SSLRequest` and `GSSENCRequest` are answered `N`). When it comes, the
//! framing here must read from the TLS stream, not the TCP socket under it: the limits apply to
//! the decrypted messages.

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_util::{FutureExt, Sink, SinkExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::store::MemPortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, DefaultClient, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::{ReadyForQuery, SslResponse, TransactionStatus};
use pgwire::messages::startup::Startup;
use pgwire::messages::{Message, PgWireBackendMessage, PgWireFrontendMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::limits::{Limits, MAX_STARTUP_BYTES, REFUSAL_DELAY, WRITE_TIMEOUT};
use super::sql::{state, Statement};
use super::throttle::Throttle;

pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_3: i32 = 3 << 16;

/// What the connection read.
enum Frame {
    /// `SSLRequest` or `GSSENCRequest`: answered `N`.
    EncryptionRequest,
    /// `CancelRequest`: nothing to cancel; the connection closes.
    Cancel,
    Message(PgWireFrontendMessage),
}

/// Why a connection ends: each is answered (or not) and logged in [`Conn::end`].
#[derive(Debug)]
pub enum End {
    /// The client closed, or the socket failed: nothing to say.
    Gone,
    /// Said to the client as a FATAL error, then closed.
    Fatal { code: &'static str, message: String },
}

impl End {
    fn fatal(code: &'static str, message: impl Into<String>) -> End {
        End::Fatal {
            code,
            message: message.into(),
        }
    }

    fn protocol(message: impl Into<String>) -> End {
        End::fatal(state::PROTOCOL_VIOLATION, message)
    }
}

impl From<io::Error> for End {
    fn from(_: io::Error) -> End {
        End::Gone
    }
}

/// A client connection: pgwire's per-client state, a read buffer that never holds more than one
/// frame of at most the current limit, and a write buffer.
pub struct Conn<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    client: DefaultClient<Option<Statement>>,
    /// Frames have no type byte until the startup packet is read.
    startup: bool,
    max_frame: usize,
    /// The connection runs under TLS.
    secure: bool,
    /// A startup packet in clear is refused (`28000`).
    tls_required: bool,
}

/// Flush before buffering more than this.
const WRITE_HIGH_WATER: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    pub fn new(io: S, peer: SocketAddr) -> Conn<S> {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::new(),
            client: DefaultClient::new(peer, false),
            startup: true,
            max_frame: MAX_STARTUP_BYTES,
            secure: false,
            tls_required: false,
        }
    }

    /// Marks the connection as running under TLS (`secure`), or refused in clear (`required`).
    pub fn tls(mut self, secure: bool, required: bool) -> Conn<S> {
        self.secure = secure;
        self.tls_required = required;
        self
    }

    /// Reads until `n` bytes are buffered; `false` at a clean end of stream before any of them.
    async fn fill(&mut self, n: usize) -> Result<bool, End> {
        while self.rbuf.len() < n {
            // never more than the frame needs: the buffer stays within the frame limit
            let want = n - self.rbuf.len();
            self.rbuf.reserve(want);
            let got = (&mut self.io).take(want as u64).read_buf(&mut self.rbuf).await?;
            if got == 0 {
                return if self.rbuf.is_empty() {
                    Ok(false)
                } else {
                    Err(End::Gone)
                };
            }
        }
        Ok(true)
    }

    fn too_long(&self, len: usize) -> End {
        End::protocol(format!(
            "invalid message length: {len} bytes, more than the {} this connection takes{}",
            self.max_frame,
            if self.startup || !self.logged_in() {
                " before login"
            } else {
                ""
            }
        ))
    }

    fn logged_in(&self) -> bool {
        !matches!(
            self.client.state,
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        )
    }

    /// The next frame, checked against the limit on its length word; `None` at end of stream.
    async fn read_frame(&mut self) -> Result<Option<Frame>, End> {
        if self.startup {
            if !self.fill(4).await? {
                return Ok(None);
            }
            let len = i32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
            let len = usize::try_from(len).map_err(|_| End::protocol("invalid length of startup packet"))?;
            if len < 8 {
                return Err(End::protocol("invalid length of startup packet"));
            }
            if len > self.max_frame {
                return Err(self.too_long(len));
            }
            self.fill(len).await?;
            let mut frame = self.rbuf.split_to(len);
            let code = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return match code {
                SSL_REQUEST | GSSENC_REQUEST => Ok(Some(Frame::EncryptionRequest)),
                CANCEL_REQUEST => Ok(Some(Frame::Cancel)),
                c if c >> 16 == PROTOCOL_3 >> 16 => {
                    let startup = decode(|| Startup::decode(&mut frame))?;
                    self.startup = false;
                    Ok(Some(Frame::Message(PgWireFrontendMessage::Startup(startup))))
                }
                c => Err(End::fatal(
                    state::FEATURE_NOT_SUPPORTED,
                    format!(
                        "unsupported frontend protocol {}.{}: server supports 3.0",
                        c >> 16,
                        c & 0xffff
                    ),
                )),
            };
        }
        if !self.fill(5).await? {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 4)
            .ok_or_else(|| End::protocol(format!("invalid message length {len}")))?;
        if len > self.max_frame {
            return Err(self.too_long(len));
        }
        self.fill(len + 1).await?;
        let mut frame = self.rbuf.split_to(len + 1);
        let kind = frame[0];
        if !self.logged_in() && kind == b'p' {
            check_sasl_initial(&frame)?;
        }
        let message = decode(|| PgWireFrontendMessage::decode(&mut frame))?;
        Ok(Some(Frame::Message(message)))
    }

    /// Sends `end` (if it says anything) and closes; bounded by [`WRITE_TIMEOUT`].
    pub async fn end(mut self, end: End) {
        if let End::Fatal { code, message } = end {
            let info = ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message);
            let said = async {
                self.send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await?;
                SinkExt::<PgWireBackendMessage>::close(&mut self).await
            };
            let _ = tokio::time::timeout(WRITE_TIMEOUT, said).await;
        }
    }
}

/// The initial SASL response before pgwire reads it: its length field must fit in the message
/// (pgwire 0.30 slices by it unchecked and panics).
fn check_sasl_initial(frame: &[u8]) -> Result<(), End> {
    let body = frame.get(5..).unwrap_or_default();
    let Some(nul) = body.iter().position(|b| *b == 0) else {
        // not a SASL initial response (no mechanism name): a SASL response, taken as raw bytes
        return Ok(());
    };
    let rest = &body[nul + 1..];
    let ok = match rest.get(..4) {
        Some(n) => {
            let n = i32::from_be_bytes([n[0], n[1], n[2], n[3]]);
            n == -1 || usize::try_from(n).is_ok_and(|n| n <= rest.len() - 4)
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(End::protocol("malformed SASL message"))
    }
}

/// Runs a pgwire decoder on one whole frame: an error, an incomplete message or a panic is a
/// protocol violation.
fn decode<T>(f: impl FnOnce() -> Result<Option<T>, PgWireError>) -> Result<T, End> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(End::protocol("incomplete message")),
        Ok(Err(e)) => Err(End::protocol(format!("malformed message: {e}"))),
        Err(_) => Err(End::protocol("malformed message")),
    }
}

impl<S: AsyncWrite + Unpin> Sink<PgWireBackendMessage> for Conn<S> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            self.poll_flush(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, item: PgWireBackendMessage) -> Result<(), io::Error> {
        item.encode(&mut self.get_mut().wbuf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        let this = self.get_mut();
        while !this.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut this.io).poll_write(cx, &this.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            this.wbuf.advance(n);
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<S> ClientInfo for Conn<S> {
    fn socket_addr(&self) -> SocketAddr {
        self.client.socket_addr()
    }

    fn is_secure(&self) -> bool {
        self.secure
    }

    fn state(&self) -> PgWireConnectionState {
        self.client.state()
    }

    fn set_state(&mut self, new_state: PgWireConnectionState) {
        self.client.set_state(new_state)
    }

    fn transaction_status(&self) -> TransactionStatus {
        self.client.transaction_status()
    }

    fn set_transaction_status(&mut self, new_status: TransactionStatus) {
        self.client.set_transaction_status(new_status)
    }

    fn metadata(&self) -> &std::collections::HashMap<String, String> {
        self.client.metadata()
    }

    fn metadata_mut(&mut self) -> &mut std::collections::HashMap<String, String> {
        self.client.metadata_mut()
    }

    fn client_certificates<'a>(&self) -> Option<&[rustls::pki_types::CertificateDer<'a>]> {
        None
    }
}

impl<S> ClientPortalStore for Conn<S> {
    type PortalStore = MemPortalStore<Option<Statement>>;

    fn portal_store(&self) -> &Self::PortalStore {
        self.client.portal_store()
    }
}

/// Reads, logs in, serves: the whole life of one connection. The caller holds its connection slot.
pub async fn serve_connection<S, A, H>(
    conn: &mut Conn<S>,
    startup: Arc<A>,
    handler: Arc<H>,
    limits: Limits,
    throttle: &Throttle,
) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    A: StartupHandler,
    H: SimpleQueryHandler + ExtendedQueryHandler<Statement = Option<Statement>>,
{
    match tokio::time::timeout(limits.auth_timeout, login(conn, startup, throttle)).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return Ok(()),
        Ok(Err(end)) => return Err(end),
        Err(_) => {
            tracing::info!(peer = %conn.socket_addr(), "admin port: login not finished within {:?}: closed", limits.auth_timeout);
            return Err(End::fatal(
                state::QUERY_CANCELED,
                "canceling authentication due to timeout",
            ));
        }
    }
    conn.max_frame = limits.max_session_message();
    session(conn, handler).await
}

/// The startup packet and the SCRAM exchange; `Ok(false)` when the client leaves first.
async fn login<S, A>(conn: &mut Conn<S>, startup: Arc<A>, throttle: &Throttle) -> Result<bool, End>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    A: StartupHandler,
{
    let peer = conn.socket_addr();
    loop {
        let message = match conn.read_frame().await? {
            None => return Ok(false),
            Some(Frame::Cancel) => return Ok(false),
            Some(Frame::EncryptionRequest) => {
                conn.send(PgWireBackendMessage::SslResponse(SslResponse::Refuse))
                    .await?;
                continue;
            }
            Some(Frame::Message(m)) => m,
        };
        match &message {
            PgWireFrontendMessage::Startup(_) if conn.tls_required && !conn.secure => {
                return Err(End::fatal(
                    state::INVALID_AUTHORIZATION,
                    "this port takes TLS only: connect with sslmode=verify-full (or require)",
                ));
            }
            PgWireFrontendMessage::Startup(_) => {
                if throttle.blocked(peer.ip(), Instant::now()) {
                    tokio::time::sleep(REFUSAL_DELAY).await;
                    tracing::warn!(%peer, "admin port: login refused: too many failed attempts from this address");
                    return Err(End::fatal(
                        state::INVALID_AUTHORIZATION,
                        "too many failed login attempts from this address: try again later",
                    ));
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(_) => {}
            other => {
                return Err(End::protocol(format!(
                    "expected a password message, got {}",
                    frontend_name(other)
                )))
            }
        }
        let user = conn.metadata().get(pgwire::api::METADATA_USER).cloned();
        let outcome = AssertUnwindSafe(startup.on_startup(conn, message))
            .catch_unwind()
            .await;
        match outcome {
            Err(_) => return Err(End::protocol("malformed authentication message")),
            Ok(Err(PgWireError::InvalidPassword(_))) => {
                let user = user.unwrap_or_default();
                // the user name as sent (escaped by `?`), never the password
                let blocked = throttle.failed(peer.ip(), Instant::now());
                tracing::warn!(user = ?user, %peer, blocked, "admin port: password authentication failed");
                return Err(End::fatal(
                    state::INVALID_PASSWORD,
                    format!("password authentication failed for user {user:?}"),
                ));
            }
            Ok(Err(PgWireError::IoError(_))) => return Err(End::Gone),
            Ok(Err(e)) => {
                let info = ErrorInfo::from(e);
                tracing::info!(%peer, "admin port: login failed: {}", info.message);
                return Err(End::fatal(
                    if info.code == state::INVALID_PASSWORD {
                        state::INVALID_PASSWORD
                    } else {
                        state::PROTOCOL_VIOLATION
                    },
                    info.message,
                ));
            }
            Ok(Ok(())) => {}
        }
        if matches!(conn.state(), PgWireConnectionState::ReadyForQuery) {
            throttle.succeeded(peer.ip());
            tracing::info!(user = ?user.unwrap_or_default(), %peer, "admin port: logged in");
            return Ok(true);
        }
    }
}

fn frontend_name(m: &PgWireFrontendMessage) -> &'static str {
    match m {
        PgWireFrontendMessage::Query(_) => "Query",
        PgWireFrontendMessage::Parse(_) => "Parse",
        PgWireFrontendMessage::Bind(_) => "Bind",
        PgWireFrontendMessage::Execute(_) => "Execute",
        PgWireFrontendMessage::Terminate(_) => "Terminate",
        PgWireFrontendMessage::Startup(_) => "a second startup packet",
        _ => "another message",
    }
}

/// After login: queries until the client leaves (pgwire's own loop, with our framing).
async fn session<S, H>(conn: &mut Conn<S>, handler: Arc<H>) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
    H: SimpleQueryHandler + ExtendedQueryHandler<Statement = Option<Statement>>,
{
    loop {
        let Some(Frame::Message(message)) = conn.read_frame().await? else {
            return Ok(());
        };
        let extended = message.is_extended_query();
        let h = handler.as_ref();
        let outcome = match (conn.state(), message) {
            (_, PgWireFrontendMessage::Terminate(_)) => return Ok(()),
            // after an error in the extended protocol, everything up to Sync is skipped
            (PgWireConnectionState::AwaitingSync, PgWireFrontendMessage::Sync(sync)) => {
                let r = ExtendedQueryHandler::on_sync(h, conn, sync).await;
                conn.set_state(PgWireConnectionState::ReadyForQuery);
                r
            }
            (PgWireConnectionState::AwaitingSync, _) => Ok(()),
            (_, PgWireFrontendMessage::Query(q)) => SimpleQueryHandler::on_query(h, conn, q).await,
            (_, PgWireFrontendMessage::Parse(m)) => h.on_parse(conn, m).await,
            (_, PgWireFrontendMessage::Bind(m)) => h.on_bind(conn, m).await,
            (_, PgWireFrontendMessage::Execute(m)) => h.on_execute(conn, m).await,
            (_, PgWireFrontendMessage::Describe(m)) => h.on_describe(conn, m).await,
            (_, PgWireFrontendMessage::Flush(m)) => h.on_flush(conn, m).await,
            (_, PgWireFrontendMessage::Sync(m)) => ExtendedQueryHandler::on_sync(h, conn, m).await,
            (_, PgWireFrontendMessage::Close(m)) => h.on_close(conn, m).await,
            (_, other) => {
                return Err(End::protocol(format!(
                    "unexpected message after login: {}",
                    frontend_name(&other)
                )))
            }
        };
        if let Err(e) = outcome {
            report(conn, e, extended).await?;
        }
    }
}

/// A handler's error, as pgwire's `process_error` sends it: the connection carries on unless the
/// error is fatal.
async fn report<S>(conn: &mut Conn<S>, e: PgWireError, extended: bool) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static,
{
    if let PgWireError::IoError(_) = e {
        return Err(End::Gone);
    }
    let info = ErrorInfo::from(e);
    if info.is_fatal() {
        return Err(End::fatal(state::PROTOCOL_VIOLATION, info.message));
    }
    conn.feed(PgWireBackendMessage::ErrorResponse(info.into()))
        .await?;
    let status = conn.transaction_status().to_error_state();
    conn.set_transaction_status(status);
    if extended {
        conn.set_state(PgWireConnectionState::AwaitingSync);
    } else {
        conn.set_state(PgWireConnectionState::ReadyForQuery);
        conn.feed(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status)))
            .await?;
    }
    conn.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn conn() -> (Conn<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        (Conn::new(ours, "127.0.0.1:5".parse().unwrap()), theirs)
    }

    fn startup_packet(user: &str) -> Vec<u8> {
        let mut body = PROTOCOL_3.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0");
        body.extend_from_slice(user.as_bytes());
        body.extend_from_slice(b"\0\0");
        let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        p.extend(body);
        p
    }

    fn code(end: End) -> &'static str {
        match end {
            End::Fatal { code, .. } => code,
            End::Gone => "gone",
        }
    }

    #[tokio::test]
    async fn a_startup_packet_claiming_100_mb_is_refused_on_its_length_word() {
        let (mut c, mut client) = conn();
        client.write_all(&100_000_000i32.to_be_bytes()).await.unwrap();
        client.write_all(&[0; 4096]).await.unwrap();
        let Err(end) = c.read_frame().await else {
            panic!("accepted")
        };
        assert_eq!(code(end), state::PROTOCOL_VIOLATION);
        assert!(
            c.rbuf.capacity() <= 16 * 1024,
            "nothing sized for the claim: {}",
            c.rbuf.capacity()
        );
    }

    #[tokio::test]
    async fn startup_packets_up_to_10000_bytes_are_read_and_ssl_is_declined() {
        let (mut c, mut client) = conn();
        let mut ssl = 8i32.to_be_bytes().to_vec();
        ssl.extend(SSL_REQUEST.to_be_bytes());
        client.write_all(&ssl).await.unwrap();
        assert!(matches!(c.read_frame().await, Ok(Some(Frame::EncryptionRequest))));
        client
            .write_all(&startup_packet(&"u".repeat(9_000)))
            .await
            .unwrap();
        let Ok(Some(Frame::Message(PgWireFrontendMessage::Startup(s)))) = c.read_frame().await else {
            panic!("no startup")
        };
        assert_eq!(s.parameters.get("user").map(String::len), Some(9_000));
        client
            .write_all(&startup_packet(&"u".repeat(10_000)))
            .await
            .unwrap();
        // now a typed frame: 'u' is no message type, and the length is checked first anyway
        assert!(c.read_frame().await.is_err());
    }

    #[tokio::test]
    async fn a_typed_message_past_the_limit_or_with_a_bad_length_is_refused() {
        for (kind, len) in [(b'p', 10_001i32), (b'p', 3), (b'p', -1), (b'Q', i32::MAX)] {
            let (mut c, mut client) = conn();
            c.startup = false;
            client.write_all(&[kind]).await.unwrap();
            client.write_all(&len.to_be_bytes()).await.unwrap();
            let Err(end) = c.read_frame().await else {
                panic!("accepted {len}")
            };
            assert_eq!(code(end), state::PROTOCOL_VIOLATION);
        }
    }

    #[tokio::test]
    async fn a_malformed_sasl_initial_response_is_refused_not_decoded() {
        let (mut c, mut client) = conn();
        c.startup = false;
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend(1_000_000i32.to_be_bytes());
        body.extend(b"n,,n=,r=x");
        client.write_all(b"p").await.unwrap();
        client
            .write_all(&((body.len() + 4) as i32).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&body).await.unwrap();
        let Err(end) = c.read_frame().await else {
            panic!("accepted")
        };
        assert_eq!(code(end), state::PROTOCOL_VIOLATION);
    }

    #[test]
    fn a_decoder_panic_is_a_protocol_violation() {
        let r: Result<(), End> = decode(|| panic!("pgwire slices past the end"));
        assert_eq!(code(r.unwrap_err()), state::PROTOCOL_VIOLATION);
    }
}

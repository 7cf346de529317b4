//! The accept loop of the HTTP port: connection limits, timeouts per phase, descriptors. See the
//! module documentation of [`super`] for the rules it keeps.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{router, AppState};

/// The connection limits of the listener (`[http]`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The configured limits; `max_connections` derived from the open-file limit when not set.
    pub fn from_config(http: &crate::config::HttpConfig) -> Limits {
        let max_connections = match http.max_connections {
            Some(n) => n as usize,
            None => derived_max_connections(nofile_limit().map_or(1024, |(soft, _)| soft)),
        };
        Limits {
            header_read_timeout: http.header_read_timeout,
            idle_timeout: http.idle_timeout,
            max_connections,
        }
    }
}

/// File descriptors kept for everything but HTTP connections when the cap is derived: PostgreSQL
/// (replication, heartbeat, slot checks, snapshot), the delivery client's connection pools, the
/// sled files, the admin port, logs, the runtime's own descriptors, with a wide margin.
pub const RESERVED_FDS: u64 = 256;
/// The derived cap never goes above this, whatever the open-file limit.
pub const MAX_DERIVED_CONNECTIONS: u64 = 4096;
/// ... nor below this (an open-file limit under 272 leaves less than [`RESERVED_FDS`] spare).
pub const MIN_DERIVED_CONNECTIONS: u64 = 16;

/// `[http] max_connections = 0`: `min(4096, soft open-file limit - 256)`, at least 16.
pub fn derived_max_connections(soft_nofile: u64) -> usize {
    soft_nofile
        .saturating_sub(RESERVED_FDS)
        .clamp(MIN_DERIVED_CONNECTIONS, MAX_DERIVED_CONNECTIONS) as usize
}

/// The process's `RLIMIT_NOFILE` as (soft, hard); `u64::MAX` for unlimited.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
    let v = |x: libc::rlim_t| {
        if x == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            x as u64
        }
    };
    Some((v(lim.rlim_cur), v(lim.rlim_max)))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs both (one info line). Returns the
/// soft limit in force afterwards. Called once at start, before anything opens descriptors.
pub fn raise_nofile_limit() -> Option<u64> {
    let Some((soft, hard)) = nofile_limit() else {
        tracing::warn!("cannot read the open-file limit (RLIMIT_NOFILE)");
        return None;
    };
    if soft >= hard {
        tracing::info!(
            soft,
            hard,
            "open-file limit (RLIMIT_NOFILE) already at its hard limit"
        );
        return Some(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: hard as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one is
    // always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE) to its hard limit");
        return Some(soft);
    }
    tracing::info!(
        was = soft,
        soft = hard,
        hard,
        "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
    );
    Some(hard)
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`): room for a burst
/// of connects while the accept loop catches up, beyond the usual 1024.
pub const LISTEN_BACKLOG: u32 = 4096;

/// The `[http] listen` socket, with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` turns true, then stops accepting, lets requests in progress finish
/// (live streams end by themselves on shutdown) and closes the rest after
/// `header_read_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let router = router(state);
    let tracker = Arc::new(Tracker::new(limits.max_connections));
    let soft = nofile_limit().map(|(s, _)| s);
    if soft.is_some_and(|s| (limits.max_connections as u64).saturating_add(RESERVED_FDS) > s) {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_file_limit = soft,
            "[http] max_connections leaves fewer than {RESERVED_FDS} file descriptors for PostgreSQL, \
             deliveries and the queue: a flood of connections may starve them; lower it or raise LimitNOFILE"
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        "http connection limits"
    );
    let mut last_accept_warning: Option<Instant> = None;
    // one permit per descriptor a connection holds, released when its socket is closed (not when
    // it is evicted, which is asynchronous): the cap bounds descriptors, not bookkeeping
    let slots = Arc::new(Semaphore::new(tracker.max));
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // full: the longest-idle connection gives way, and its slot is taken once it closed;
            // when every connection is busy, the next one is answered 503 at once
            Err(_) if tracker.evict_longest_idle() => tokio::select! {
                slot = slots.clone().acquire_owned() => slot.ok(),
                _ = shutdown.wait_for(|s| *s) => break,
            },
            Err(_) => None,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // out of descriptors (EMFILE/ENFILE) or memory: give back the longest-idle
                // connection's descriptor and pause, rather than spin on the error
                if last_accept_warning.map_or(true, |t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, open = tracker.open(), "http accept failed; closing the longest-idle connection");
                    last_accept_warning = Some(Instant::now());
                }
                tracker.evict_longest_idle();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        match slot.and_then(|slot| Some((slot, tracker.admit()?))) {
            Some((slot, conn)) => {
                tokio::spawn(connection(
                    stream,
                    tls.clone(),
                    slot,
                    conn,
                    router.clone(),
                    limits,
                    tracker.clone(),
                    shutdown.clone(),
                ));
            }
            None => {
                closed("over_capacity");
                // never read, never held: a best-effort answer, then closed
                let _ = stream.try_write(&over_capacity());
            }
        }
    }
    drop(listener);
    let mut open = tracker.open_rx();
    let drained = tokio::time::timeout(limits.header_read_timeout, open.wait_for(|n| *n == 0))
        .await
        .is_ok();
    if !drained {
        tracing::info!(
            open = tracker.open(),
            "closing the http connections still open after the shutdown grace"
        );
        tracker.evict_all();
        let _ = open.wait_for(|n| *n == 0).await;
    }
    Ok(())
}

/// The answer to a connection past the cap when every open connection is busy.
fn over_capacity() -> Vec<u8> {
    let body =
        r#"{"error": "too many open connections, all busy: retry later", "limit": "[http] max_connections"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Counts a connection closed by the server, by reason.
fn closed(reason: &'static str) {
    metrics::counter!("fieldsync_http_connections_closed_total", "reason" => reason).increment(1);
}

/// Where a connection is: waiting for (the rest of) a request head, serving a request (until its
/// response body is written), or idle between requests.
const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// One open connection, as the tracker and its own task see it.
struct Conn {
    id: u64,
    epoch: Instant,
    phase: AtomicU8,
    /// Milliseconds after `epoch` when the phase began.
    since: AtomicU64,
    evicted: AtomicBool,
    wake: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, phase: u8) {
        self.since.store(self.now(), Ordering::Release);
        self.phase.store(phase, Ordering::Release);
        self.wake.notify_one();
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn bytes_arrived(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.set(HEAD);
        }
    }

    /// When the connection must be closed if its phase does not change, and why.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let since = self.epoch + Duration::from_millis(self.since.load(Ordering::Acquire));
        match self.phase.load(Ordering::Acquire) {
            HEAD => Some((since + limits.header_read_timeout, "header_read_timeout")),
            IDLE => Some((since + limits.idle_timeout, "idle_timeout")),
            _ => None,
        }
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The open connections, and who gives way when they reach the cap.
struct Tracker {
    epoch: Instant,
    max: usize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    open: watch::Sender<usize>,
}

impl Tracker {
    fn new(max: usize) -> Tracker {
        Tracker {
            epoch: Instant::now(),
            max: max.max(1),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            open: watch::channel(0).0,
        }
    }

    fn open(&self) -> usize {
        *self.open.borrow()
    }

    fn open_rx(&self) -> watch::Receiver<usize> {
        self.open.subscribe()
    }

    fn publish(&self, n: usize) {
        self.open.send_replace(n);
        metrics::gauge!("fieldsync_http_connections").set(n as f64);
    }

    /// A slot for a new connection: a free one, else the longest-idle connection's (which is
    /// closed); `None` when every open connection is serving a request.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() >= self.max && !Self::evict_one(&mut conns) {
            return None;
        }
        let conn = Arc::new(Conn {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            epoch: self.epoch,
            phase: AtomicU8::new(HEAD),
            since: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        conns.insert(conn.id, conn.clone());
        self.publish(conns.len());
        Some(conn)
    }

    /// Closes the connection idle (or sending its head) the longest; false when all are busy.
    fn evict_one(conns: &mut HashMap<u64, Arc<Conn>>) -> bool {
        let oldest = conns
            .values()
            .filter(|c| c.phase.load(Ordering::Acquire) != BUSY)
            .min_by_key(|c| c.since.load(Ordering::Acquire))
            .map(|c| c.id);
        match oldest.and_then(|id| conns.remove(&id)) {
            Some(c) => {
                c.evict();
                closed("evicted");
                true
            }
            None => false,
        }
    }

    /// Closes the longest-idle connection; false when every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let evicted = Self::evict_one(&mut conns);
        if evicted {
            self.publish(conns.len());
        }
        evicted
    }

    fn evict_all(&self) {
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.values() {
            c.evict();
        }
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.remove(&id).is_some() {
            self.publish(conns.len());
        }
    }
}

/// Serves one connection until it ends, times out, is evicted or the server shuts down; its slot
/// is given back once the socket is closed.
#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    _slot: OwnedSemaphorePermit,
    conn: Arc<Conn>,
    router: Router,
    limits: Limits,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = stream.peer_addr().ok().map(super::auth::Peer);
    let stream = match tls {
        None => Box::new(stream) as Box<dyn Io>,
        // the handshake is part of the head: it has `header_read_timeout` too
        Some(acceptor) => {
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Box::new(tls),
                Ok(Err(e)) => {
                    tracing::debug!(peer = ?peer, "http: TLS handshake failed: {e}");
                    tracker.remove(conn.id);
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = ?peer, "http: TLS handshake not finished within header_read_timeout");
                    tracker.remove(conn.id);
                    return;
                }
            }
        }
    };
    let io = hyper_util::rt::TokioIo::new(Tracked {
        io: stream,
        conn: conn.clone(),
    });
    let service = Service {
        inner: hyper_util::service::TowerToHyperService::new(router),
        conn: conn.clone(),
        peer,
    };
    let served = hyper::server::conn::http1::Builder::new()
        // timeouts are kept here, per phase, rather than by hyper (whose header timer also runs
        // while a kept-alive connection is idle)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(served);
    let mut shutting_down = false;
    loop {
        let deadline = conn.deadline(&limits);
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                break;
            }
            _ = conn.wake.notified() => {
                if conn.evicted.load(Ordering::Acquire) {
                    break;
                }
            }
            _ = expired => {
                // the phase may have changed since the deadline was taken
                if let Some((at, reason)) = conn.deadline(&limits) {
                    if at <= Instant::now() {
                        closed(reason);
                        break;
                    }
                }
            }
            _ = shutdown.wait_for(|s| *s), if !shutting_down => {
                shutting_down = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    tracker.remove(conn.id);
}

/// The router, marking its connection busy from a request's head until its response body is
/// written (dropped).
struct Service {
    inner: hyper_util::service::TowerToHyperService<Router>,
    conn: Arc<Conn>,
    /// The client's address, given to handlers as an extension.
    peer: Option<super::auth::Peer>,
}

impl hyper::service::Service<axum::http::Request<hyper::body::Incoming>> for Service {
    type Response = axum::http::Response<BusyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        self.conn.set(BUSY);
        let busy = Busy(self.conn.clone());
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| BusyBody { inner, _busy: busy }))
        })
    }
}

/// Turns its connection idle when dropped.
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(IDLE);
    }
}

/// A response body that holds its connection busy until it is written.
pub struct BusyBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive on an idle connection.
struct Tracked {
    io: Box<dyn Io>,
    conn: Arc<Conn>,
}

/// A connection's socket, in clear or under TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

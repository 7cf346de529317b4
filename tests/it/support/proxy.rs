//! A TCP proxy in front of PostgreSQL that can silently stop forwarding on the replication
//! connections (those whose startup message asks for `replication`), leaving them open: a
//! stream blocked without any error, as a stuck network path or walsender would leave it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let frozen = frozen.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, upstream, frozen.clone()));
                }
            }
        });
        Proxy { addr, frozen, task }
    }

    /// Stops (or resumes) forwarding bytes on replication connections, without closing them.
    pub fn freeze_replication(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, frozen: Arc<AtomicBool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut first = vec![0u8; 8192];
    let Ok(n) = client.read(&mut first).await else {
        return;
    };
    let replication = first[..n].windows(12).any(|w| w == b"replication\0");
    if server.write_all(&first[..n]).await.is_err() {
        return;
    }
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let gate = move || replication && frozen.load(Ordering::SeqCst);
    let gate2 = gate.clone();
    tokio::join!(pump(cr, sw, gate), pump(sr, cw, gate2));
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: impl Fn() -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

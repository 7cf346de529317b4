//! Health of the stream: the heartbeat measures ingestion latency, and a replication connection
//! silently blocked (a proxy that stops forwarding without closing) is reported by `/readyz`
//! within `[replication] heartbeat_interval`, and cleared once the stream flows again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::daemon::{self, http_get};
use crate::support::proxy::Proxy;
use crate::support::{cluster_with_schema, wait_for_async};

const INTERVAL: Duration = Duration::from_secs(2);

fn readyz(d: &fieldsync::app::Daemon) -> (u16, String) {
    http_get(d.http_addr, "/readyz").expect("the daemon answers /readyz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_blocked_stream_is_reported_by_readyz_within_the_heartbeat_interval() {
    let cluster = cluster_with_schema();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], cluster.port()))).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = daemon::config_toml(&cluster, &dir.path().join("q"), 0)
        .replace(
            &format!(":{}/", cluster.port()),
            &format!(":{}/", proxy.addr.port()),
        )
        .replace(
            "[replication]\n",
            &format!(
                "[replication]\nheartbeat_interval = \"{}s\"\n",
                INTERVAL.as_secs()
            ),
        );
    let d = daemon::start(&toml).await;

    wait_for_async(Duration::from_secs(60), "ready, with a heartbeat back", || {
        let ok = readyz(&d).0 == 200 && d.status.snapshot().heartbeat_latency_seconds.is_some();
        async move { ok }
    })
    .await;
    let latency = d.status.snapshot().heartbeat_latency_seconds.unwrap();
    assert!(latency < 1.0, "ingestion latency {latency} s");

    proxy.freeze_replication(true);
    let frozen = Instant::now();
    wait_for_async(INTERVAL * 5, "/readyz to report the stall", || {
        let (code, body) = readyz(&d);
        async move { code == 503 && body.contains("stalled") }
    })
    .await;
    let detected = frozen.elapsed();
    assert!(
        detected <= INTERVAL + Duration::from_millis(700),
        "the stall was reported after {detected:?}, not within {INTERVAL:?}"
    );
    assert!(
        d.status.snapshot().connected,
        "the connection itself never failed"
    );

    proxy.freeze_replication(false);
    wait_for_async(Duration::from_secs(30), "ready again", || {
        let ok = readyz(&d).0 == 200;
        async move { ok }
    })
    .await;
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_within_a_second_of_a_first_start_that_creates_the_slot() {
    let cluster = cluster_with_schema();
    // start_on waits until replication is connected, which creates the slot on this first start
    let (_dir, d) = daemon::start_on(&cluster).await;
    wait_for_async(Duration::from_secs(1), "/readyz to say ready", || {
        let ready = readyz(&d);
        async move { ready.0 == 200 }
    })
    .await;
    d.stop().await.unwrap();
}

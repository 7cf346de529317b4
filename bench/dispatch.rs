//! Dispatch benchmark: end to end, from a commit in PostgreSQL to the webhook receiver's 2xx, with
//! the `fieldsync` binary in between (fsynced queue, signed Standard Webhooks deliveries over
//! loopback HTTP).
//!
//! 1. Latency at a sustained 1,000 changes/s (1-row transactions, one wedding each in turn of 200):
//!    each value carries its commit-request time; the receiver notes when it accepted it. Prints
//!    p50/p99/p99.9/max and fieldsync's peak RSS. Then the same with each change an update of one
//!    of 200 fields, so that nearly every delivery waits for the order barrier's flush (its cost).
//! 2. Throughput with a receiver that answers after 50 ms: 1,000 weddings × 20 fields are written in
//!    one transaction, field by field across the weddings; prints deliveries/s while every wedding
//!    has events waiting (from 10 % to 90 % of the deliveries: 1,000 in flight), from the first
//!    acceptance to the last, the ceiling 1,000 / 50 ms = 20,000/s, and fieldsync's CPU time per
//!    delivery in the steady part (the receiver shares the same 2 cores).
//!
//! Run: `cargo bench --bench dispatch`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fieldsync_dev::devdb::{Cluster, ClusterOptions};
use fieldsync_dev::process::Spawned;
use fieldsync_dev::receiver::{Faults, Receiver};
use fieldsync_dev::rss::peak_rss_kib;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ORG: &str = "0b000000-0000-4000-8000-000000000001";
const LATENCY_SECONDS: u64 = 15;
const RATE: u64 = 1_000;
const WEDDINGS: usize = 1_000;
const FIELDS: usize = 20;

fn wedding(n: usize) -> String {
    format!("0b000000-0000-4000-8000-{n:012x}")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("synchronous_commit".into(), "on".into())],
        ..ClusterOptions::default()
    })
    .expect("start PostgreSQL");
    cluster.apply_default_schema("postgres").expect("apply schema");
    let receiver = Receiver::start(SECRET).await;
    let mut weddings = format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Bench');
         INSERT INTO organization_integrations (organization_id, integration_type, config, is_active)
           VALUES ('{ORG}', 'webhook', '{{\"url\": \"{}\", \"secret\": \"{SECRET}\"}}', true);",
        receiver.url()
    );
    for w in 0..WEDDINGS {
        weddings += &format!(
            "INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{}', '{ORG}', 'Couple {w}');",
            wedding(w)
        );
    }
    cluster.psql("postgres", &weddings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, http) = start_daemon(&cluster, dir.path());
    println!(
        "fieldsync dispatch benchmark: PostgreSQL {}, webhook receiver over loopback, fsync on",
        cluster.psql("postgres", "SHOW server_version").unwrap().trim()
    );

    // 1. latency at a sustained rate, every change a new field
    let client = fieldsync::pg::connect_sql(&cluster.target("postgres", None, "postgres"))
        .await
        .unwrap();
    let insert = client
        .prepare(&format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
             VALUES ('{ORG}', $1::text::uuid, gen_random_uuid(), 'number', to_jsonb($2::bigint))"
        ))
        .await
        .unwrap();
    // warm up: the daemon has started and delivers
    client.execute(&insert, &[&wedding(0), &0i64]).await.unwrap();
    wait_until(|| receiver.stats().accepted >= 1, "the first delivery").await;
    let new_fields = latency_run(&receiver, |i| {
        let (client, insert) = (&client, &insert);
        async move {
            let sent = unix_micros();
            client
                .execute(insert, &[&wedding(i as usize % 200), &sent])
                .await
                .unwrap();
        }
    })
    .await;
    println!(
        "commit to receiver 2xx at {RATE}/s for {LATENCY_SECONDS} s, each change a new field: {} (target p99 < 50 ms)",
        new_fields.line()
    );
    println!(
        "fieldsync peak RSS so far: {} MiB",
        peak_rss_kib(daemon.id()) / 1024
    );

    // 1b. the same rate, each change an update of one of 200 fields (one per wedding): almost every
    // delivery follows a delivery of its own field whose final state is not yet flushed, so it
    // waits for the order barrier's flush (README, Order across crashes)
    let upsert = client
        .prepare(&format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
             VALUES ('{ORG}', $1::text::uuid, $2::text::uuid, 'number', to_jsonb($3::bigint))
             ON CONFLICT (wedding_id, field_id) DO UPDATE SET value = EXCLUDED.value"
        ))
        .await
        .unwrap();
    let flushes_before = order_flushes(http);
    let same_field = latency_run(&receiver, |i| {
        let (client, upsert) = (&client, &upsert);
        async move {
            let n = i as usize % 200;
            let sent = unix_micros();
            client
                .execute(upsert, &[&wedding(n), &field(n), &sent])
                .await
                .unwrap();
        }
    })
    .await;
    let flushes = order_flushes(http) - flushes_before;
    println!(
        "the same, each change an update of the field changed 200 ms before: {} ({flushes} order-barrier \
         flushes for {} deliveries; p50 {:.2}x, p99 {:.2}x the new-field run)",
        same_field.line(),
        same_field.count,
        same_field.p50 / new_fields.p50,
        same_field.p99 / new_fields.p99,
    );

    // 2. throughput with a slow receiver
    receiver.set_faults(Faults {
        latency: Duration::from_millis(50),
        ..Faults::default()
    });
    let before = receiver.stats().accepted;
    let n = (WEDDINGS * FIELDS) as u64;
    cluster
        .psql(
            "postgres",
            &format!(
                "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                 SELECT '{ORG}', w.id, gen_random_uuid(), 'number', to_jsonb(f)
                 FROM generate_series(1, {FIELDS}) f, weddings w ORDER BY f, w.id"
            ),
        )
        .unwrap();
    wait_until(|| receiver.stats().accepted > before, "the first slow delivery").await;
    let first = Instant::now();
    // steady state: from 10 % to 90 % of the deliveries, every wedding has events waiting
    let (low, high) = (before + n / 10, before + n * 9 / 10);
    wait_until(|| receiver.stats().accepted >= low, "10 % of the slow deliveries").await;
    let (from, cpu_from) = (Instant::now(), cpu_seconds(daemon.id()));
    wait_until(
        || receiver.stats().accepted >= high,
        "90 % of the slow deliveries",
    )
    .await;
    let steady = (high - low) as f64 / from.elapsed().as_secs_f64();
    let cpu_per_delivery = (cpu_seconds(daemon.id()) - cpu_from) / (high - low) as f64;
    wait_until(|| receiver.stats().accepted >= before + n, "all slow deliveries").await;
    let overall = n as f64 / first.elapsed().as_secs_f64();
    println!(
        "receiver answering after 50 ms, {WEDDINGS} weddings × {FIELDS} fields: {steady:.0} deliveries/s steady \
         (10-90 %), {overall:.0}/s first to last (ceiling with one delivery in flight per wedding: {:.0}/s; \
         target 10,000/s)",
        WEDDINGS as f64 / 0.05
    );
    println!(
        "fieldsync CPU per delivery (steady): {:.0} µs, i.e. {:.0} deliveries/s per core it has to itself",
        cpu_per_delivery * 1e6,
        1.0 / cpu_per_delivery
    );
    println!("fieldsync peak RSS: {} MiB", peak_rss_kib(daemon.id()) / 1024);
    let stats = receiver.stats();
    assert_eq!(stats.bad_signatures, 0);
    assert!(receiver.order_violations().is_empty());
    let _ = daemon.terminate();
}

fn field(n: usize) -> String {
    format!("0b000000-0000-4000-9000-{n:012x}")
}

fn unix_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// Commit-to-2xx latencies of one run, milliseconds.
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    count: usize,
}

impl Latency {
    fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} deliveries)",
            self.p50, self.p99, self.p999, self.max, self.count
        )
    }
}

/// Makes `RATE` × `LATENCY_SECONDS` changes at a steady rate with `change(i)` (each writes its
/// commit-request time as the value) and measures, for each, the time to the receiver's 2xx.
async fn latency_run<F, Fut>(receiver: &Receiver, mut change: F) -> Latency
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let base = receiver.stats().accepted;
    let total = RATE * LATENCY_SECONDS;
    let started = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_micros(i * 1_000_000 / RATE);
        tokio::time::sleep_until(due.into()).await;
        change(i).await;
    }
    wait_until(|| receiver.stats().accepted >= base + total, "latency deliveries").await;
    let mut lat: Vec<f64> = receiver
        .accepted()
        .iter()
        .skip(base as usize)
        .filter_map(|a| {
            let sent = a.body.pointer("/data/new_value")?.as_i64()?;
            let at = a.at.duration_since(UNIX_EPOCH).ok()?.as_micros() as i64;
            Some((at - sent) as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    Latency {
        p50: pct(0.5),
        p99: pct(0.99),
        p999: pct(0.999),
        max: pct(1.0),
        count: lat.len(),
    }
}

/// `fieldsync_dispatch_order_flushes_total` from the daemon's `/metrics`.
fn order_flushes(http: std::net::SocketAddr) -> u64 {
    let (_, body) = fieldsync::serve::http::get_local(http, "/metrics", Duration::from_secs(5))
        .expect("/metrics answers");
    body.lines()
        .find_map(|l| l.strip_prefix("fieldsync_dispatch_order_flushes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// User plus system CPU time of a process so far (`/proc/PID/stat`, clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name (which is in parentheses and may hold spaces)
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The `fieldsync` binary on `cluster`, with its HTTP port.
fn start_daemon(cluster: &Cluster, dir: &std::path::Path) -> (Spawned, std::net::SocketAddr) {
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let config = dir.join("fieldsync.toml");
    std::fs::write(
        &config,
        format!(
            "[postgres]\nurl = \"{}\"\ntls = \"disable\"\n[queue]\npath = \"{}\"\n[http]\nlisten = \"{http}\"\n",
            cluster.url("postgres", "postgres"),
            dir.join("queue").display(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fieldsync"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start fieldsync");
    (Spawned::new(child), http)
}

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

//! The queue's disk: the bound `[queue] max_disk` stops capture without confirming anything early,
//! and a full filesystem under the queue is survived without a crash loop, loss or duplicates.
//! Real PostgreSQL, the real binary, a real (tmpfs) filesystem.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fieldsync::lsn::Lsn;
use fieldsync_dev::receiver::Receiver;

use crate::dispatch::{converge, dispatch_toml, field, seed, wedding, INTEGRATION, ORG, SECRET};
use crate::support::daemon::{self, http_get, slot_confirmed, sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for, wait_for_async, Cluster};

const DEADLINE: Duration = Duration::from_secs(180);
const WEDDINGS: usize = 10;

/// `/readyz`: `(status, reasons)`; `None` while nothing answers.
fn readyz(http: std::net::SocketAddr) -> Option<(u16, Vec<String>)> {
    let (code, body) = http_get(http, "/readyz")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let reasons = v["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Some((code, reasons))
}

/// A write load: transactions of `rows` new `number` fields (field numbers from `from` on) until
/// `stop`, each followed by the WAL insert position (at or past its commit). Answers
/// `(first field, rows, position after commit)` per committed transaction.
fn write_load(
    db: tokio_postgres::Client,
    from: usize,
    rows: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(usize, usize, Lsn)>> {
    tokio::spawn(async move {
        let mut done = Vec::new();
        let mut n = from;
        while !stop.load(Ordering::Relaxed) {
            let mut sql = String::from("BEGIN;");
            for i in n..n + rows {
                sql += &format!(
                    "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                     VALUES ('{ORG}', '{}', '{}', 'number', to_jsonb({i}));",
                    wedding(i % WEDDINGS),
                    field(i)
                );
            }
            sql += "COMMIT;";
            db.batch_execute(&sql).await.unwrap();
            let after: String = db
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await
                .unwrap()
                .get(0);
            done.push((n, rows, after.parse().unwrap()));
            n += rows;
        }
        done
    })
}

/// The organisation, its weddings, the webhook integration and the slot (created before the first
/// write, so every change is streamed, no snapshot).
async fn prepare(cluster: &Cluster, receiver: &Receiver) -> tokio_postgres::Client {
    let db = sql(cluster).await;
    db.batch_execute("SELECT pg_create_logical_replication_slot('fieldsync', 'pgoutput')")
        .await
        .unwrap();
    seed(&db, WEDDINGS, &receiver.url()).await;
    db
}

/// Writes the workdir's config: the queue at `work.queue` with this `max_disk`, fast retries.
fn write_config(cluster: &Cluster, work: &Workdir, max_disk: &str) {
    let toml = daemon::config_toml(cluster, &work.queue, work.http.port()).replace(
        "cache_capacity_mb = 32\n",
        &format!("cache_capacity_mb = 32\nmax_disk = {max_disk}\n"),
    ) + &dispatch_toml(100_000);
    std::fs::write(&work.config, toml).unwrap();
}

/// Every field the load wrote, in order.
fn fields_written(txns: &[(usize, usize, Lsn)]) -> Vec<String> {
    txns.iter()
        .flat_map(|(first, rows, _)| (*first..first + rows).map(field))
        .collect()
}

/// The store's records: no id twice, each written field once; answers the fields stored.
fn stored_once(queue: &Path) -> BTreeSet<String> {
    let records = daemon::read_queue(queue);
    let mut ids = HashSet::new();
    let mut fields = BTreeSet::new();
    for r in &records {
        assert!(ids.insert(r.id), "record {} is stored twice", r.id);
        if r.table == "form_field_values" {
            if let Some(f) = r.event.as_ref().and_then(|e| e.data.field_id.as_ref()) {
                assert!(fields.insert(f.to_owned()), "field {f} is stored twice");
            }
        }
    }
    fields
}

/// Every event of the queue that lists the integration reached the receiver, each accepted once.
fn delivered_once(queue: &Path, receiver: &Receiver) {
    let records = daemon::read_queue(queue);
    let sent: HashSet<String> = receiver.accepted().into_iter().map(|a| a.id).collect();
    let events: Vec<String> = records
        .iter()
        .filter(|r| r.deliveries.iter().any(|i| i == INTEGRATION))
        .map(|r| r.id.to_string())
        .collect();
    let missing: Vec<&String> = events.iter().filter(|id| !sent.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} events never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        receiver.stats().accepted as usize,
        events.len(),
        "each event applied once"
    );
}

/// Once the receiver has the database's state: the daemon stops cleanly, every change the load
/// wrote is stored once and every event was delivered once.
async fn every_change_arrives_once(
    db: &tokio_postgres::Client,
    receiver: &Receiver,
    child: DaemonProcess,
    work: &Workdir,
    txns: &[(usize, usize, Lsn)],
) {
    // the daemon runs in its own process: on a timeout, say what it said
    let want = crate::dispatch::db_state(db).await;
    let start = Instant::now();
    while receiver.final_state() != want {
        assert!(
            start.elapsed() < DEADLINE,
            "the receiver's state is not the database's after {DEADLINE:?} ({:?}); /readyz: {:?}; log:\n{}",
            receiver.stats(),
            readyz(work.http),
            log_tail(&work.log, 60)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    converge(db, receiver).await;
    assert!(child.terminate().success());
    let stored = stored_once(&work.queue);
    let written = fields_written(txns);
    let missing: Vec<&String> = written.iter().filter(|f| !stored.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "{} changes not stored: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    delivered_once(&work.queue, receiver);
}

/// Waits until `/readyz` answers 200; on a timeout or an exit, says what it answered and the log.
fn wait_ready(work: &Workdir, child: &mut DaemonProcess) {
    let start = Instant::now();
    loop {
        let ready = readyz(work.http);
        if ready.as_ref().is_some_and(|(code, _)| *code == 200) {
            return;
        }
        let exited = child.try_wait();
        if exited.is_some() || start.elapsed() > DEADLINE {
            panic!(
                "the daemon is not ready ({exited:?}): {ready:?}\n{}",
                log_text(&work.log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn log_tail(log: &Path, n: usize) -> String {
    let text = log_text(log);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_disk_capture_stops_confirms_nothing_more_and_a_larger_bound_delivers_every_change_once() {
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let work = Workdir::new(&cluster);
    let db = prepare(&cluster, &receiver).await;
    write_config(&cluster, &work, "\"1GiB\"");

    // the empty store's own size, so the bound leaves room for a few MiB of changes
    let mut child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    wait_ready(&work, &mut child);
    let empty = child.status().unwrap()["disk"]["disk_bytes"].as_u64().unwrap();
    assert!(child.terminate().success());
    let bound = empty + (3 << 20);
    write_config(&cluster, &work, &bound.to_string());

    // the receiver is down: nothing leaves the queue, which grows to the bound
    receiver.pause().await;
    let mut child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(sql(&cluster).await, 0, 20, stop.clone());
    let started = Instant::now();
    wait_for(DEADLINE, "/readyz to name the disk bound", || {
        readyz(work.http).is_some_and(|(code, reasons)| {
            code == 503
                && reasons
                    .iter()
                    .any(|r| r.contains("max_disk") && r.contains("disk bound"))
        })
    });
    let reached = started.elapsed();
    let (_, reasons) = readyz(work.http).unwrap();
    let reason = reasons.iter().find(|r| r.contains("max_disk")).unwrap().clone();
    // the capture loop notes the pause when it next turns (after the read in progress)
    wait_for(DEADLINE, "the metric to show capture paused at the bound", || {
        http_get(work.http, "/metrics")
            .is_some_and(|(_, m)| m.contains("fieldsync_capture_paused{reason=\"max_disk\"} 1"))
    });
    let metrics = http_get(work.http, "/metrics").unwrap().1;
    assert!(metrics.contains("fieldsync_queue_disk_bytes "), "{metrics}");
    let status = child.status().unwrap();
    let disk_bytes = status["disk"]["disk_bytes"].as_u64().unwrap();
    assert!(disk_bytes >= bound, "{disk_bytes} < {bound}");

    // paused: what was stored before the pause becomes durable and is confirmed; then the slot's
    // position stays there while the load goes on
    wait_for_async(
        DEADLINE,
        "every stored transaction to be durable and the slot to be at the daemon's confirmed position",
        || async {
            let Some(s) = child.status() else { return false };
            let lsn = |v: &serde_json::Value| v.as_str().and_then(|c| c.parse::<Lsn>().ok());
            let stored = lsn(&s["queue"]["last_transaction"]["end_lsn"]);
            let durable = lsn(&s["source"]["durable_lsn"]);
            let confirmed = lsn(&s["source"]["confirmed_lsn"]);
            stored.is_some()
                && durable >= stored
                && confirmed >= durable
                && Some(slot_confirmed(&db).await) == confirmed
        },
    )
    .await;
    let settled = slot_confirmed(&db).await;
    let records = child.stored_records().unwrap();
    let wal_before: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        assert_eq!(
            slot_confirmed(&db).await,
            settled,
            "nothing is confirmed while paused"
        );
        assert_eq!(
            child.stored_records().unwrap(),
            records,
            "nothing is stored while paused"
        );
        assert!(child.try_wait().is_none(), "the daemon runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wal_after: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (wal_before, wal_after): (Lsn, Lsn) = (wal_before.parse().unwrap(), wal_after.parse().unwrap());
    assert!(
        wal_after > wal_before,
        "the load went on while capture was paused"
    );
    stop.store(true, Ordering::Relaxed);
    let txns = load.await.unwrap();
    eprintln!(
        "disk bound: empty store {empty} B, bound {bound} B, reached after {reached:?} at {disk_bytes} B with {records} records; slot held at {settled} while the load wrote {} more bytes of WAL; {} transactions in all",
        wal_after.0 - wal_before.0,
        txns.len()
    );
    assert!(reason.contains(&fieldsync::store::disk::show(bound)), "{reason}");

    // the operator raises the bound: capture resumes, and every change arrives once
    assert!(child.terminate().success());
    write_config(&cluster, &work, "\"1GiB\"");
    receiver.resume().await;
    let child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    every_change_arrives_once(&db, &receiver, child, &work, &txns).await;
    let log = log_text(&work.log);
    assert!(log.contains("the queue reached [queue] max_disk"), "{log}");
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when mounting is impossible here (not root, no mount(8), no tmpfs).
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().ok()?;
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir, _parent: parent })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Writes `path` until the filesystem is full; answers the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    let _ = f.sync_all();
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_filesystem_is_survived_without_a_crash_loop_early_confirmation_loss_or_duplicates() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("\n\nSKIPPED a_full_filesystem_is_survived…: mounting a tmpfs needs root; this test did NOT run\n");
        return;
    }
    // room for the store itself once the filler is gone: on a filesystem the store alone fills,
    // freeing the filler cannot help. sled's files reach about 45 MiB here on a quiet machine, and
    // filled a 64 MiB tmpfs in one run of the whole suite (deliveries lagging a faster load)
    let Some(fs) = Tmpfs::mount("256m") else {
        eprintln!("\n\nSKIPPED a_full_filesystem_is_survived…: `mount -t tmpfs` failed here; this test did NOT run\n");
        return;
    };
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let mut work = Workdir::new(&cluster);
    work.queue = fs.dir.join("queue");
    let db = prepare(&cluster, &receiver).await;
    write_config(&cluster, &work, "\"1GiB\"");
    let filler = fs.dir.join("filler");

    let mut child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    wait_ready(&work, &mut child);
    let pid = child.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(sql(&cluster).await, 0, 10, stop.clone());
    wait_for(DEADLINE, "changes to be stored", || {
        child.stored_records().is_some_and(|n| n > 200)
    });

    // 1. another process fills the filesystem: the daemon stays up, says why, and reopens its
    //    queue by itself once the space is back
    let filled = tokio::task::spawn_blocking({
        let filler = filler.clone();
        move || fill(&filler)
    })
    .await
    .unwrap();
    let full_at = Instant::now();
    wait_for(DEADLINE, "/readyz to say the queue cannot write", || {
        readyz(work.http).is_some_and(|(code, reasons)| {
            code == 503
                && reasons
                    .iter()
                    .any(|r| r.contains("cannot write") && r.contains(&work.queue.display().to_string()))
        })
    });
    let noticed = full_at.elapsed();
    assert!(child.try_wait().is_none(), "the daemon is alive");
    assert_eq!(child.pid(), pid);
    let (_, reasons) = readyz(work.http).unwrap();
    let metrics = http_get(work.http, "/metrics").unwrap().1;
    assert!(
        metrics.contains("fieldsync_capture_paused{reason=\"storage_error\"} 1"),
        "{metrics}"
    );
    let confirmed_while_full = slot_confirmed(&db).await;
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        DEADLINE,
        "the daemon to reopen its queue and be ready again",
        || readyz(work.http).is_some_and(|(code, _)| code == 200),
    );
    assert!(child.try_wait().is_none(), "the same process goes on");
    let log = log_text(&work.log);
    assert!(log.contains("the queue cannot write"), "{log}");
    assert!(log.contains("reopening the queue"), "{log}");
    // max_disk (1 GiB) is past what a 256 MiB filesystem can hold: said at start
    assert!(log.contains("is more than the queue can ever take"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "full filesystem: filler wrote {filled} B; /readyz said so after {noticed:?}; reasons: {reasons:?}"
    );

    // 2. full again, and killed while full: the store reopens cleanly and nothing confirmed is
    //    missing from it
    wait_for(DEADLINE, "changes to be stored again", || {
        child.stored_records().is_some_and(|n| n > 400)
    });
    tokio::task::spawn_blocking({
        let filler = filler.clone();
        move || fill(&filler)
    })
    .await
    .unwrap();
    wait_for(DEADLINE, "/readyz to say the queue cannot write again", || {
        readyz(work.http)
            .is_some_and(|(code, reasons)| code == 503 && reasons.iter().any(|r| r.contains("cannot write")))
    });
    let confirmed = slot_confirmed(&db).await;
    assert!(confirmed >= confirmed_while_full);
    child.kill9();
    std::fs::remove_file(&filler).unwrap();
    stop.store(true, Ordering::Relaxed);
    let txns = load.await.unwrap();
    let stored = stored_once(&work.queue);
    let confirmed_missing: Vec<String> = txns
        .iter()
        .filter(|(_, _, after)| *after <= confirmed)
        .flat_map(|(first, rows, _)| (*first..first + rows).map(field))
        .filter(|f| !stored.contains(f))
        .collect();
    assert!(
        confirmed_missing.is_empty(),
        "confirmed at {confirmed} but not in the store: {:?}",
        &confirmed_missing[..confirmed_missing.len().min(5)]
    );

    // 3. restarted with space: every change stored once and delivered once
    let mut child = DaemonProcess::spawn(&work.config, work.http, &work.log);
    wait_ready(&work, &mut child);
    every_change_arrives_once(&db, &receiver, child, &work, &txns).await;
    let log = log_text(&work.log);
    assert!(!log.contains("panicked"), "{log}");
    drop(fs);
}

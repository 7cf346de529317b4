//! Durability by killing: `fieldsync run` is SIGKILLed at random moments while PostgreSQL takes a
//! write load and retention removes delivered records (`retention = "1s"`), then restarted; every
//! committed change must be stored exactly once, in commit order: the records still held, and
//! the webhook receiver's deliveries for the ones removed. The store is encrypted, and its key
//! is rotated halfway through the kills (then `fieldsync reencrypt` retires the old one); at
//! the end no byte of the store's files shows a name or a secret of the workload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::dispatch::{dispatch_toml, SECRET};
use crate::support::daemon::{
    cli, config_toml, read_queue, sql, test_key_file, write_key, DaemonProcess, Workdir, ROTATED_KEY,
};
use crate::support::{cluster_with_schema, wait_for};
use fieldsync_dev::receiver::Receiver;

const KILLS: usize = 20;
const MIN_CHANGES: u64 = 10_000;
const ORG: &str = "00000000-0000-0000-0000-00000000000c";
const WEDDING: &str = "00000000-0000-0000-0000-0000000000c1";
const INTEGRATION: &str = "00000000-0000-0000-0000-0000000000e1";
/// Rows written before the load: the organisation, the wedding and the integration.
const SEEDED: u64 = 3;
/// Values of the seeded rows that must never be readable in the store's files.
const COUPLE: &str = "Gwendolyn Hieronymus-Vantongeren";
const STUDIO: &str = "Crash Studio Quillfeather";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_under_load_loses_and_duplicates_nothing() {
    let cluster = cluster_with_schema();
    let work = Workdir::new(&cluster);
    let (queue_path, config_path, log, http) = (&work.queue, &work.config, &work.log, work.http);
    let receiver = Receiver::start(SECRET).await;
    let toml = config_toml(&cluster, queue_path, http.port()).replace(
        "cache_capacity_mb = 32\n",
        "cache_capacity_mb = 32\nretention = \"1s\"\n",
    ) + &dispatch_toml(100_000);
    std::fs::write(config_path, &toml).unwrap();

    let db = sql(&cluster).await;
    // The slot exists before any write, so every change below must be captured.
    db.batch_execute("SELECT pg_create_logical_replication_slot('fieldsync', 'pgoutput')")
        .await
        .unwrap();
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', '{STUDIO}');
         INSERT INTO weddings (id, organization_id, couple_names) VALUES ('{WEDDING}', '{ORG}', '{COUPLE}');
         INSERT INTO organization_integrations (id, organization_id, integration_type, config, is_active)
           VALUES ('{INTEGRATION}', '{ORG}', 'webhook', '{{\"url\": \"{}\", \"secret\": \"{SECRET}\"}}', true);",
        receiver.url()
    ))
    .await
    .unwrap();

    // The writer: one connection, transactions of 1 to 200 rows, values numbered in commit order.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop) = (written.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0xF1E1D);
            while !stop.load(Ordering::Relaxed) {
                let n: u64 = rng.gen_range(1..=200);
                let from = written.load(Ordering::Relaxed) + 1;
                db.batch_execute(&format!(
                    "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
                       SELECT '{ORG}', '{WEDDING}', gen_random_uuid(), 'number', to_jsonb(i)
                       FROM generate_series({from}, {}) i",
                    from + n - 1
                ))
                .await
                .expect("writer transaction");
                written.fetch_add(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
            }
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(0xC0FFEE);
    let mut kills = 0;
    let rotated = write_key(work.dir(), "rotated.key", &ROTATED_KEY);
    while kills < KILLS || written.load(Ordering::Relaxed) < MIN_CHANGES {
        if kills == KILLS / 2 {
            // a key rotation mid-run: new values under the new key, the old one still opens
            let rotate = toml.replace(
                &format!("encryption_key_file = \"{}\"", test_key_file().display()),
                &format!(
                    "encryption_key_file = \"{}\"\nold_encryption_key_files = [\"{}\"]",
                    rotated.display(),
                    test_key_file().display()
                ),
            );
            assert_ne!(rotate, toml);
            std::fs::write(config_path, rotate).unwrap();
        }
        let daemon = DaemonProcess::spawn(config_path, http, log);
        // Kill at a random moment: sometimes during start-up, mostly while streaming, delivering
        // and (past the first second, once a floor is saved) removing.
        let alive_ms = if rng.gen_bool(0.2) {
            rng.gen_range(0..150)
        } else {
            rng.gen_range(150..2500)
        };
        tokio::time::sleep(Duration::from_millis(alive_ms)).await;
        daemon.kill9();
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let total = written.load(Ordering::Relaxed);

    let mut daemon = DaemonProcess::spawn(config_path, http, log);
    let removed_while_killed = loop {
        if let Some(s) = daemon.status() {
            break s["queue"]["removed"].as_u64().unwrap();
        }
        assert!(daemon.try_wait().is_none(), "daemon exited:\n{}", log_tail(log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let started = std::time::Instant::now();
    loop {
        assert!(daemon.try_wait().is_none(), "daemon exited:\n{}", log_tail(log));
        let stored = daemon.stored_records();
        if stored == Some(total + SEEDED) {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            daemon.terminate();
            panic!(
                "the restarted daemon did not catch up: {stored:?} of {} records stored; {}\n{}",
                total + SEEDED,
                describe_gaps(&read_queue(queue_path), total),
                log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // every change reaches the receiver: one event id per change (a change stored twice would
    // arrive under two ids), each value once
    wait_for(Duration::from_secs(120), "every change to be delivered", || {
        receiver.final_state().len() as u64 == total
    });
    let removed = daemon.status().unwrap()["queue"]["removed"].as_u64().unwrap();
    // everything still under the old key is sealed again under the new one, in the running daemon
    let (code, out, err) = cli("reencrypt", config_path, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let encryption = &daemon.status().unwrap()["queue"]["encryption"];
    let new_id = fieldsync::store::cipher::KeyId::of(&ROTATED_KEY).to_string();
    assert_eq!(
        encryption["held"]["keys"],
        serde_json::json!([new_id]),
        "{encryption}"
    );
    assert!(daemon.terminate().success(), "clean stop on SIGTERM");
    // the old key may go: the store opens and reads with the new one alone
    std::fs::write(
        config_path,
        toml.replace(
            &test_key_file().display().to_string(),
            &rotated.display().to_string(),
        ),
    )
    .unwrap();
    let (code, out, err) = cli("queue", config_path, &["--last", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("on, key {new_id}")), "{out}");
    let raw = fieldsync_dev::scan::raw_bytes(queue_path);
    for (what, value) in [
        ("couple names", COUPLE),
        ("studio name", STUDIO),
        ("webhook secret", SECRET),
    ] {
        assert!(
            !fieldsync_dev::scan::holds(&raw, value),
            "the {what} is readable in the store's files"
        );
    }
    let mut delivered: Vec<(String, u64)> = receiver
        .accepted()
        .into_iter()
        .filter(|a| a.field_id.is_some())
        .map(|a| {
            let value = a.body["data"]["new_value"].as_u64();
            (
                a.id,
                value.unwrap_or_else(|| panic!("not a number value: {}", a.body)),
            )
        })
        .collect();
    assert_eq!(delivered.len() as u64, total, "one event id per change");
    delivered.sort_by_key(|(_, v)| *v);
    assert!(
        delivered.iter().map(|(_, v)| *v).eq(1..=total),
        "every value delivered once"
    );
    assert!(
        delivered
            .windows(2)
            .all(|w| w[0].0.parse::<fieldsync::store::record::EventId>().unwrap()
                < w[1].0.parse::<fieldsync::store::record::EventId>().unwrap()),
        "event ids follow commit order"
    );
    assert_eq!(receiver.order_violations(), Vec::<String>::new());

    // what is still held: a contiguous tail, in commit order, after everything removed
    let records = read_queue(queue_path);
    let held: Vec<u64> = records
        .iter()
        .filter(|r| r.table == "form_field_values")
        .map(|r| number_value(r).unwrap_or_else(|| panic!("no number value in {r:?}")))
        .collect();
    assert!(
        held.iter().copied().eq(total + 1 - held.len() as u64..=total),
        "the records held are the newest, in commit order, none twice"
    );
    assert!(
        records.windows(2).all(|w| w[0].id < w[1].id),
        "ids strictly increase"
    );
    assert!(
        removed_while_killed > 0,
        "retention removed records between the kills"
    );
    assert!(kills >= KILLS && total >= MIN_CHANGES);
    eprintln!(
        "{kills} kills, {total} changes; {removed_while_killed} records removed by retention while killed, {removed} in all, {} held at the end",
        records.len()
    );
}

/// The value a `number` field record stores (in its event: the change is stored once).
fn number_value(r: &fieldsync::store::record::ChangeRecord) -> Option<u64> {
    r.event.as_ref()?.data.new_value.as_ref()?.as_u64()
}

fn log_tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Which values are missing or doubled, and the stored transactions around the first gap.
fn describe_gaps(records: &[fieldsync::store::record::ChangeRecord], total: u64) -> String {
    let mut seen = vec![0u32; total as usize + 1];
    let mut around = Vec::new();
    for r in records.iter().filter(|r| r.table == "form_field_values") {
        if let Some(v) = number_value(r) {
            seen[v as usize] += 1;
            around.push((v as usize, r.id));
        }
    }
    let missing: Vec<usize> = (1..=total as usize).filter(|v| seen[*v] == 0).collect();
    let doubled: Vec<usize> = (1..=total as usize).filter(|v| seen[*v] > 1).collect();
    let first = missing.first().copied().unwrap_or(0);
    let neighbours: Vec<String> = around
        .iter()
        .filter(|(v, _)| v.abs_diff(first) <= 1 || v.abs_diff(first + missing.len()) <= 1)
        .map(|(v, id)| format!("{v}@{id}"))
        .collect();
    format!(
        "{} missing (first {:?}, last {:?}), {} doubled; around the gap: {neighbours:?}",
        missing.len(),
        missing.first(),
        missing.last(),
        doubled.len()
    )
}

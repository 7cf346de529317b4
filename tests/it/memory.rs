//! Memory stays bounded by configuration, not by transaction size.

use std::time::Duration;

use crate::support::daemon::{read_queue, sql, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for};

/// The documented bound on the daemon's peak RSS for one 200,000-row transaction.
const RSS_BOUND_MIB: u64 = 150;
const ROWS: u64 = 200_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_of_200000_rows_passes_within_the_memory_bound() {
    let cluster = cluster_with_schema();
    let work = Workdir::new(&cluster);
    let (queue_path, config_path, log, http) = (&work.queue, &work.config, &work.log, work.http);
    let mut daemon = DaemonProcess::spawn(config_path, http, log);
    wait_for(Duration::from_secs(30), "the daemon to stream", || {
        assert!(
            daemon.try_wait().is_none(),
            "daemon exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        daemon
            .status()
            .and_then(|s| s.pointer("/source/connected")?.as_bool())
            == Some(true)
    });

    let db = sql(&cluster).await;
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO organizations (id, name) VALUES ('00000000-0000-0000-0000-00000000000d', 'Big Day');
         INSERT INTO weddings (id, organization_id, couple_names)
           VALUES ('00000000-0000-0000-0000-0000000000d1', '00000000-0000-0000-0000-00000000000d', 'I & J');
         INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
           SELECT '00000000-0000-0000-0000-00000000000d', '00000000-0000-0000-0000-0000000000d1', gen_random_uuid(),
                  'dietary_matrix', jsonb_build_object('vegetarian', i % 20, 'vegan', i % 7, 'notes', md5(i::text))
           FROM generate_series(1, {ROWS}) i;
         COMMIT;"
    ))
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(300),
        "the 200,000-row transaction to be stored",
        || {
            assert!(
                daemon.try_wait().is_none(),
                "daemon exited: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            daemon.stored_records() == Some(ROWS + 2)
        },
    );
    let peak_mib = daemon.peak_rss_kib().expect("VmHWM") / 1024;
    assert!(daemon.terminate().success());
    eprintln!("peak RSS for a {ROWS}-row transaction: {peak_mib} MiB (bound {RSS_BOUND_MIB} MiB)");
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is over the {RSS_BOUND_MIB} MiB bound"
    );
    assert_eq!(read_queue(queue_path).len() as u64, ROWS + 2);
}

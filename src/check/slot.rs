//! The `slot` check: the replication slot fieldsync streams from. A missing slot is fine when
//! fieldsync may create it; a present one must be a logical pgoutput slot of the configured database
//! that has not lost its WAL. Its position and retained WAL are shown either way.

use tokio_postgres::Client;

use super::probe::Sql;
use super::{quote_ident, quote_literal, CheckResult};

/// A row of `pg_replication_slots`, with the holder's `pg_stat_activity` when the slot is in use.
#[derive(Clone, Debug, Default)]
pub(super) struct SlotFacts {
    pub slot_type: String,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub wal_status: Option<String>,
    pub confirmed_flush_lsn: Option<String>,
    pub retained_bytes: Option<i64>,
    pub holder_application: Option<String>,
    pub holder_address: Option<String>,
}

pub(super) async fn slot_facts(client: &Client, slot: &str) -> Sql<Option<SlotFacts>> {
    let Some(row) = client
        .query_opt(
            "SELECT s.slot_type::text, s.plugin::text, s.database::text, s.active_pid, s.wal_status, \
                    s.confirmed_flush_lsn::text, \
                    pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                                         ELSE pg_current_wal_lsn() END, s.restart_lsn)::int8, \
                    a.application_name, host(a.client_addr) \
             FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid \
             WHERE s.slot_name = $1",
            &[&slot],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(SlotFacts {
        slot_type: row.try_get(0)?,
        plugin: row.try_get(1)?,
        database: row.try_get(2)?,
        active_pid: row.try_get(3)?,
        wal_status: row.try_get(4)?,
        confirmed_flush_lsn: row.try_get(5)?,
        retained_bytes: row.try_get(6)?,
        holder_application: row.try_get(7)?,
        holder_address: row.try_get(8)?,
    }))
}

pub(super) fn slot_result(
    slot: &str,
    create_slot: bool,
    recreate_lost: bool,
    dbname: &str,
    facts: Option<&SlotFacts>,
) -> CheckResult {
    const NAME: &str = "slot";
    let drop = format!("SELECT pg_drop_replication_slot({});", quote_literal(slot));
    let Some(s) = facts else {
        if create_slot {
            return CheckResult::ok(
                NAME,
                format!("slot {slot:?} does not exist; it will be created (pgoutput)"),
            );
        }
        return CheckResult::fail(
            NAME,
            format!("slot {slot:?} does not exist and replication.create_slot is false"),
            format!(
                "SELECT pg_create_logical_replication_slot({}, 'pgoutput');  -- in database {}\n\
                 (or set replication.create_slot = true)",
                quote_literal(slot),
                quote_ident(dbname)
            ),
        );
    };
    let other_name = "or set replication.slot to another name";
    if s.slot_type != "logical" {
        let detail = format!("slot {slot:?} is a {} slot, not a logical one", s.slot_type);
        return CheckResult::fail(NAME, detail, format!("{drop}\n{other_name}"));
    }
    let plugin = s.plugin.as_deref().unwrap_or("");
    if plugin != "pgoutput" {
        let detail = format!("slot {slot:?} uses the plugin {plugin:?}; fieldsync needs pgoutput");
        return CheckResult::fail(NAME, detail, format!("{drop}\n{other_name}"));
    }
    let database = s.database.as_deref().unwrap_or("");
    if database != dbname {
        return CheckResult::fail(
            NAME,
            format!("slot {slot:?} belongs to database {database:?}, but fieldsync connects to {dbname:?}"),
            format!("name database {database:?} in postgres.url, {other_name}"),
        );
    }
    let wal_status = s.wal_status.as_deref().unwrap_or("unknown");
    let retained = s.retained_bytes.map_or_else(|| "none".to_owned(), human_bytes);
    let confirmed = s.confirmed_flush_lsn.as_deref().unwrap_or("none");
    let summary = format!(
        "slot {slot:?} (pgoutput, database {database:?}): confirmed_flush_lsn {confirmed}, WAL \
         retained: {retained}, wal_status {wal_status}"
    );
    if wal_status == "lost" && recreate_lost {
        return CheckResult::warn(
            NAME,
            format!(
                "{summary}\nthe slot is invalidated; [replication] on_slot_lost = \"recreate\": fieldsync drops it, \
                 creates a fresh one and takes a fresh snapshot (changes in between are re-sent as the rows' \
                 current values)"
            ),
            None,
        );
    }
    if wal_status == "lost" {
        return CheckResult::fail(
            NAME,
            format!(
                "{summary}\nthe slot is invalidated: WAL it needed was removed, so changes after {confirmed} \
                 cannot be streamed; a fresh slot starts from now, and rows changed meanwhile need a fresh \
                 snapshot (re-sync)"
            ),
            drop,
        );
    }
    let mut warnings = Vec::new();
    let mut fixes = Vec::new();
    if wal_status == "unreserved" {
        warnings.push("the slot is about to lose WAL it needs (max_slot_wal_keep_size reached)".to_owned());
        fixes.push(
            "start fieldsync now so it consumes the slot, or raise the limit: ALTER SYSTEM SET \
             max_slot_wal_keep_size = '-1'; SELECT pg_reload_conf();"
                .to_owned(),
        );
    }
    if let Some(pid) = s.active_pid {
        let app = s
            .holder_application
            .as_deref()
            .map(|a| format!(", application_name {a:?}"))
            .unwrap_or_default();
        let from = s
            .holder_address
            .as_deref()
            .map(|a| format!(", from {a}"))
            .unwrap_or_default();
        warnings.push(format!(
            "the slot is in use by PID {pid}{app}{from}: another consumer (or a fieldsync that is still \
             running) holds it; fieldsync cannot stream until it is released"
        ));
        fixes.push(format!(
            "stop the other consumer, or end it: SELECT pg_terminate_backend({pid});"
        ));
    }
    if warnings.is_empty() {
        return CheckResult::ok(NAME, summary);
    }
    CheckResult::warn(
        NAME,
        format!("{summary}\n{}", warnings.join("\n")),
        Some(fixes.join("\n")),
    )
}

/// `n` bytes in B, KiB, MiB or GiB, one decimal.
pub(super) fn human_bytes(n: i64) -> String {
    let units = ["KiB", "MiB", "GiB", "TiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = "B";
    for u in units {
        if value.abs() < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn logical_slot() -> SlotFacts {
        SlotFacts {
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            database: Some("wed".into()),
            wal_status: Some("reserved".into()),
            confirmed_flush_lsn: Some("0/16B3748".into()),
            retained_bytes: Some(3 * 1024 * 1024),
            ..SlotFacts::default()
        }
    }

    #[test]
    fn a_missing_slot_is_fine_when_fieldsync_may_create_it() {
        assert_eq!(slot_result("fs", true, false, "wed", None).status, Status::Ok);
        let r = slot_result("fs", false, false, "wed", None);
        assert_eq!(r.status, Status::Fail);
        assert!(r
            .fix
            .unwrap()
            .starts_with("SELECT pg_create_logical_replication_slot('fs', 'pgoutput');"));
    }

    #[test]
    fn a_healthy_slot_shows_its_position_and_retained_wal() {
        let r = slot_result("fs", true, false, "wed", Some(&logical_slot()));
        assert_eq!(r.status, Status::Ok);
        assert!(
            r.detail.contains("confirmed_flush_lsn 0/16B3748") && r.detail.contains("WAL retained: 3.0 MiB"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn a_lost_slot_fails_with_drop_and_a_resync_warning() {
        let s = SlotFacts {
            wal_status: Some("lost".into()),
            ..logical_slot()
        };
        let r = slot_result("fs", true, false, "wed", Some(&s));
        assert_eq!(r.status, Status::Fail);
        assert_eq!(r.fix.as_deref(), Some("SELECT pg_drop_replication_slot('fs');"));
        assert!(r.detail.contains("snapshot"), "{}", r.detail);
    }

    #[test]
    fn a_wrong_plugin_type_or_database_fails() {
        let plugin = SlotFacts {
            plugin: Some("test_decoding".into()),
            ..logical_slot()
        };
        assert_eq!(
            slot_result("fs", true, false, "wed", Some(&plugin)).status,
            Status::Fail
        );
        let physical = SlotFacts {
            slot_type: "physical".into(),
            plugin: None,
            database: None,
            ..logical_slot()
        };
        assert_eq!(
            slot_result("fs", true, false, "wed", Some(&physical)).status,
            Status::Fail
        );
        let r = slot_result("fs", true, false, "other", Some(&logical_slot()));
        assert_eq!(r.status, Status::Fail);
        assert!(r.detail.contains("belongs to database \"wed\""), "{}", r.detail);
    }

    #[test]
    fn an_unreserved_or_busy_slot_warns() {
        let s = SlotFacts {
            wal_status: Some("unreserved".into()),
            ..logical_slot()
        };
        assert_eq!(
            slot_result("fs", true, false, "wed", Some(&s)).status,
            Status::Warn
        );
        let s = SlotFacts {
            active_pid: Some(4242),
            holder_application: Some("other".into()),
            ..logical_slot()
        };
        let r = slot_result("fs", true, false, "wed", Some(&s));
        assert_eq!(r.status, Status::Warn);
        assert!(
            r.detail.contains("PID 4242") && r.detail.contains("\"other\""),
            "{}",
            r.detail
        );
        assert!(r.fix.unwrap().contains("pg_terminate_backend(4242)"));
    }

    #[test]
    fn byte_counts_are_human_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 * 1024 * 1024), "16.0 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}

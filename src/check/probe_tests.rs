use super::*;
use crate::check::Status;

fn t(schema: &str, name: &str) -> TableName {
    TableName {
        schema: schema.into(),
        name: name.into(),
    }
}

fn good_rel() -> RelFacts {
    RelFacts {
        kind: 'r',
        replica_identity: 'f',
        has_primary_key: true,
        has_identity_index: false,
        can_select: true,
        schema_usage: true,
        published: true,
    }
}

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
fn old_servers_and_standbys_fail_with_what_to_do() {
    let r = server_results(150004, "15.4", false);
    assert_eq!((r[0].status, r[1].status), (Status::Ok, Status::Ok));
    let r = server_results(130010, "13.10", false);
    assert_eq!(r[0].status, Status::Fail);
    assert_eq!(server_results(150004, "15.4", true)[1].status, Status::Fail);
    assert_eq!(server_results(160001, "16.1", true)[1].status, Status::Warn);
}

#[test]
fn a_missing_slot_fails_only_when_no_slot_is_free() {
    assert_eq!(slots_capacity("fs", 10, 3, false).status, Status::Ok);
    assert_eq!(slots_capacity("fs", 2, 2, true).status, Status::Ok);
    let full = slots_capacity("fs", 2, 2, false);
    assert_eq!(full.status, Status::Fail);
    assert!(full
        .fix
        .unwrap()
        .starts_with("ALTER SYSTEM SET max_replication_slots = 3;"));
    assert_eq!(slots_capacity("fs", 0, 0, false).status, Status::Fail);
    assert_eq!(senders_capacity(10, 2, false).status, Status::Ok);
    assert_eq!(senders_capacity(2, 2, true).status, Status::Ok);
    let full = senders_capacity(0, 0, false);
    assert!(full
        .fix
        .unwrap()
        .starts_with("ALTER SYSTEM SET max_wal_senders = 1;"));
}

#[test]
fn a_role_without_replication_gets_the_alter_role() {
    assert_eq!(role_result("app", true, false).status, Status::Ok);
    assert_eq!(role_result("postgres", false, true).status, Status::Ok);
    let r = role_result("user", false, false);
    assert_eq!(r.fix.as_deref(), Some("ALTER ROLE \"user\" WITH REPLICATION;"));
}

#[test]
fn a_missing_publication_gets_create_publication_for_the_configured_tables() {
    let tables = [t("public", "weddings"), t("Crm", "form_field_values")];
    let r = publication_results("fieldsync", None, &tables);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].detail, "publication \"fieldsync\" does not exist");
    assert_eq!(
        r[0].fix.as_deref(),
        Some("CREATE PUBLICATION fieldsync FOR TABLE public.weddings, \"Crm\".form_field_values;")
    );
}

#[test]
fn a_publication_must_publish_every_action_and_truncate_only_warns() {
    let all = PublicationFacts {
        all_tables: false,
        insert: true,
        update: true,
        delete: true,
        truncate: true,
    };
    let r = publication_results("p", Some(&all), &[]);
    assert_eq!((r[0].status, r[1].status), (Status::Ok, Status::Ok));
    let r = publication_results(
        "p",
        Some(&PublicationFacts {
            truncate: false,
            ..all.clone()
        }),
        &[],
    );
    assert_eq!(r[1].status, Status::Warn);
    let r = publication_results("p", Some(&PublicationFacts { delete: false, ..all }), &[]);
    assert_eq!(r[1].status, Status::Fail);
    assert!(r[1].detail.contains("delete"), "{}", r[1].detail);
}

#[test]
fn missing_tables_and_uncovered_tables_get_their_own_fixes() {
    let facts = [
        TableFacts {
            table: t("public", "weddings"),
            rel: Some(good_rel()),
        },
        TableFacts {
            table: t("public", "gone"),
            rel: None,
        },
        TableFacts {
            table: t("public", "v"),
            rel: Some(RelFacts {
                kind: 'v',
                ..good_rel()
            }),
        },
        TableFacts {
            table: t("public", "Order"),
            rel: Some(RelFacts {
                published: false,
                ..good_rel()
            }),
        },
    ];
    let r = tables_result(&facts);
    assert_eq!(r.status, Status::Fail);
    assert!(
        r.detail.contains("table public.gone does not exist"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("public.v is not a table"), "{}", r.detail);
    let pubf = PublicationFacts {
        insert: true,
        update: true,
        delete: true,
        truncate: true,
        ..Default::default()
    };
    let r = publication_tables_result("fieldsync", &pubf, &facts);
    assert_eq!(
        r.fix.as_deref(),
        Some("ALTER PUBLICATION fieldsync ADD TABLE public.\"Order\";")
    );
    let all = PublicationFacts {
        all_tables: true,
        ..pubf
    };
    assert_eq!(
        publication_tables_result("fieldsync", &all, &facts).status,
        Status::Ok
    );
}

#[test]
fn unusable_replica_identities_get_alter_table_full() {
    let facts = [
        TableFacts {
            table: t("public", "a"),
            rel: Some(good_rel()),
        },
        TableFacts {
            table: t("public", "b"),
            rel: Some(RelFacts {
                replica_identity: 'd',
                has_primary_key: false,
                ..good_rel()
            }),
        },
        TableFacts {
            table: t("public", "c"),
            rel: Some(RelFacts {
                replica_identity: 'n',
                ..good_rel()
            }),
        },
    ];
    let r = replica_identity_result(&facts);
    assert_eq!(r.status, Status::Fail);
    assert_eq!(
        r.fix.as_deref(),
        Some("ALTER TABLE public.b REPLICA IDENTITY FULL;\nALTER TABLE public.c REPLICA IDENTITY FULL;")
    );
    assert_eq!(replica_identity_result(&facts[..1]).status, Status::Ok);
}

#[test]
fn missing_privileges_get_grants_with_schema_usage_once() {
    let facts = [
        TableFacts {
            table: t("crm", "a"),
            rel: Some(RelFacts {
                can_select: false,
                schema_usage: false,
                ..good_rel()
            }),
        },
        TableFacts {
            table: t("crm", "b"),
            rel: Some(RelFacts {
                can_select: false,
                schema_usage: false,
                ..good_rel()
            }),
        },
    ];
    let r = privileges_result("app", &facts);
    assert_eq!(
        r.fix.as_deref(),
        Some(
            "GRANT USAGE ON SCHEMA crm TO app;\nGRANT SELECT ON crm.a TO app;\nGRANT SELECT ON crm.b TO app;"
        )
    );
}

#[test]
fn a_missing_slot_is_fine_when_fieldsync_may_create_it() {
    assert_eq!(slot_result("fs", true, "wed", None).status, Status::Ok);
    let r = slot_result("fs", false, "wed", None);
    assert_eq!(r.status, Status::Fail);
    assert!(r
        .fix
        .unwrap()
        .starts_with("SELECT pg_create_logical_replication_slot('fs', 'pgoutput');"));
}

#[test]
fn a_healthy_slot_shows_its_position_and_retained_wal() {
    let r = slot_result("fs", true, "wed", Some(&logical_slot()));
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
    let r = slot_result("fs", true, "wed", Some(&s));
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
    assert_eq!(slot_result("fs", true, "wed", Some(&plugin)).status, Status::Fail);
    let physical = SlotFacts {
        slot_type: "physical".into(),
        plugin: None,
        database: None,
        ..logical_slot()
    };
    assert_eq!(
        slot_result("fs", true, "wed", Some(&physical)).status,
        Status::Fail
    );
    let r = slot_result("fs", true, "other", Some(&logical_slot()));
    assert_eq!(r.status, Status::Fail);
    assert!(r.detail.contains("belongs to database \"wed\""), "{}", r.detail);
}

#[test]
fn an_unreserved_or_busy_slot_warns() {
    let s = SlotFacts {
        wal_status: Some("unreserved".into()),
        ..logical_slot()
    };
    assert_eq!(slot_result("fs", true, "wed", Some(&s)).status, Status::Warn);
    let s = SlotFacts {
        active_pid: Some(4242),
        holder_application: Some("other".into()),
        ..logical_slot()
    };
    let r = slot_result("fs", true, "wed", Some(&s));
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

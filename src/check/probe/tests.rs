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

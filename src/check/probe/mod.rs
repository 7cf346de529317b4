//! The checks after `reachable`. Each reads the catalogs into a small facts struct (names passed as
//! query parameters), and a pure function turns the facts into results, so the decisions are
//! unit-tested without a server. A query that fails becomes a `Fail` of its check.

use tokio_postgres::Client;

use super::reach::error_chain;
use super::{quote_ident, quote_table, replica_identity_verdict, slot, CheckResult};
use crate::config::{Config, TableName};

pub(super) type Sql<T> = Result<T, tokio_postgres::Error>;

const RESTART: &str = "then restart PostgreSQL";

pub(super) async fn all(client: &Client, config: &Config, out: &mut Vec<CheckResult>) {
    let slot = &config.replication.slot;
    let publication = &config.replication.publication;
    let tables = &config.capture.tables;
    // Catalog reads are quick; a stuck one should not hang `fieldsync check`. Failing to set it is harmless.
    let _ = client.batch_execute("SET statement_timeout = '30s'").await;

    push(out, "server_version", server(client).await);
    push(out, "wal_level", wal_level(client).await);
    push(out, "max_replication_slots", capacity(client, slot).await);
    let role = match role(client).await {
        Ok((name, result)) => {
            out.push(result);
            name
        }
        Err(e) => {
            out.push(query_failed("replication_role", &e));
            config.postgres.user.clone()
        }
    };
    let publication_facts = match publication_facts(client, publication).await {
        Ok(facts) => {
            out.extend(publication_results(publication, facts.as_ref(), tables));
            Some(facts)
        }
        Err(e) => {
            out.push(query_failed("publication", &e));
            None
        }
    };
    match table_facts(client, publication, tables).await {
        Ok(facts) => {
            out.push(tables_result(&facts));
            if let Some(Some(p)) = &publication_facts {
                out.push(publication_tables_result(publication, p, &facts));
            }
            if facts.iter().any(|t| t.rel.is_some()) {
                out.push(replica_identity_result(&facts));
                out.push(privileges_result(&role, &facts));
            }
        }
        Err(e) => out.push(query_failed("tables", &e)),
    }
    match slot::slot_facts(client, slot).await {
        Ok(facts) => out.push(slot::slot_result(
            slot,
            config.replication.create_slot,
            config.replication.on_slot_lost == crate::config::SlotLostPolicy::Recreate,
            &config.postgres.dbname,
            facts.as_ref(),
        )),
        Err(e) => out.push(query_failed("slot", &e)),
    }
}

fn push(out: &mut Vec<CheckResult>, name: &'static str, results: Sql<Vec<CheckResult>>) {
    match results {
        Ok(results) => out.extend(results),
        Err(e) => out.push(query_failed(name, &e)),
    }
}

fn query_failed(name: &'static str, err: &tokio_postgres::Error) -> CheckResult {
    CheckResult::fail(
        name,
        format!("the check's catalog query failed: {}", error_chain(err)),
        "run fieldsync check against PostgreSQL 14 or newer, as a role that can read the system catalogs",
    )
}

async fn server(client: &Client) -> Sql<Vec<CheckResult>> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version'), \
             pg_is_in_recovery()",
            &[],
        )
        .await?;
    Ok(server_results(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

pub(super) fn server_results(version_num: i32, version: &str, in_recovery: bool) -> Vec<CheckResult> {
    let version_result = if version_num >= 140000 {
        CheckResult::ok("server_version", format!("PostgreSQL {version}"))
    } else {
        CheckResult::fail(
            "server_version",
            format!("PostgreSQL {version} is older than 14: fieldsync uses pgoutput's messages option (14+)"),
            "upgrade PostgreSQL to version 14 or newer",
        )
    };
    let primary = match (in_recovery, version_num >= 160000) {
        (false, _) => CheckResult::ok("primary", "not in recovery"),
        (true, true) => CheckResult::warn(
            "primary",
            "the server is a standby: logical decoding there needs hot_standby_feedback = on and \
             wal_level = logical on the primary",
            Some("point postgres.url at the primary, or ALTER SYSTEM SET hot_standby_feedback = on; \
                  SELECT pg_reload_conf(); on this standby"
                .to_owned()),
        ),
        (true, false) => CheckResult::fail(
            "primary",
            "the server is a standby (in recovery): before PostgreSQL 16 logical replication needs the primary",
            "point postgres.url at the primary server",
        ),
    };
    vec![version_result, primary]
}

async fn wal_level(client: &Client) -> Sql<Vec<CheckResult>> {
    let level: String = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await?
        .try_get(0)?;
    Ok(vec![if level == "logical" {
        CheckResult::ok("wal_level", level)
    } else {
        CheckResult::fail(
            "wal_level",
            format!("wal_level is {level}: logical decoding needs logical"),
            format!("ALTER SYSTEM SET wal_level = logical;\n{RESTART}"),
        )
    }])
}

async fn capacity(client: &Client, slot: &str) -> Sql<Vec<CheckResult>> {
    let row = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int4, \
                    (SELECT count(*) FROM pg_replication_slots)::int4, \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1), \
                    current_setting('max_wal_senders')::int4, \
                    (SELECT count(*) FROM pg_stat_replication)::int4, \
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active)",
            &[&slot],
        )
        .await?;
    Ok(vec![
        slots_capacity(slot, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
        senders_capacity(row.try_get(3)?, row.try_get(4)?, row.try_get(5)?),
    ])
}

pub(super) fn slots_capacity(slot: &str, max: i32, used: i32, ours_exists: bool) -> CheckResult {
    const NAME: &str = "max_replication_slots";
    if ours_exists {
        return CheckResult::ok(NAME, format!("{used} of {max} in use, including slot {slot:?}"));
    }
    if used < max {
        return CheckResult::ok(
            NAME,
            format!("{used} of {max} in use; slot {slot:?} can be created"),
        );
    }
    CheckResult::fail(
        NAME,
        format!("{used} of {max} replication slots are in use and slot {slot:?} does not exist yet"),
        format!(
            "ALTER SYSTEM SET max_replication_slots = {};\n{RESTART}\n(or drop a slot nobody uses: SELECT \
             slot_name, active FROM pg_replication_slots; shows them)",
            used + 1
        ),
    )
}

pub(super) fn senders_capacity(max: i32, used: i32, ours_active: bool) -> CheckResult {
    const NAME: &str = "max_wal_senders";
    if used < max || ours_active {
        return CheckResult::ok(NAME, format!("{used} of {max} in use"));
    }
    CheckResult::fail(
        NAME,
        format!("{used} of {max} WAL senders are in use: no replication connection can be opened"),
        format!("ALTER SYSTEM SET max_wal_senders = {};\n{RESTART}", used + 1),
    )
}

async fn role(client: &Client) -> Sql<(String, CheckResult)> {
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolreplication, r.rolsuper FROM pg_roles r \
             WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    let name: String = row.try_get(0)?;
    let result = role_result(&name, row.try_get(1)?, row.try_get(2)?);
    Ok((name, result))
}

pub(super) fn role_result(role: &str, replication: bool, superuser: bool) -> CheckResult {
    const NAME: &str = "replication_role";
    match (replication, superuser) {
        (true, _) => CheckResult::ok(NAME, format!("role {role:?} has REPLICATION")),
        (false, true) => CheckResult::ok(NAME, format!("role {role:?} is a superuser")),
        (false, false) => CheckResult::fail(
            NAME,
            format!("role {role:?} lacks REPLICATION: it cannot open a replication connection"),
            format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(role)),
        ),
    }
}

/// A row of `pg_publication`.
#[derive(Clone, Debug, Default)]
pub(super) struct PublicationFacts {
    pub all_tables: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
}

async fn publication_facts(client: &Client, name: &str) -> Sql<Option<PublicationFacts>> {
    let Some(row) = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication \
             WHERE pubname = $1",
            &[&name],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(PublicationFacts {
        all_tables: row.try_get(0)?,
        insert: row.try_get(1)?,
        update: row.try_get(2)?,
        delete: row.try_get(3)?,
        truncate: row.try_get(4)?,
    }))
}

pub(super) fn publication_results(
    name: &str,
    facts: Option<&PublicationFacts>,
    tables: &[TableName],
) -> Vec<CheckResult> {
    let Some(p) = facts else {
        let list: Vec<String> = tables.iter().map(quote_table).collect();
        return vec![CheckResult::fail(
            "publication",
            format!("publication {name:?} does not exist"),
            format!(
                "CREATE PUBLICATION {} FOR TABLE {};",
                quote_ident(name),
                list.join(", ")
            ),
        )];
    };
    let scope = if p.all_tables { " (FOR ALL TABLES)" } else { "" };
    let exists = CheckResult::ok("publication", format!("publication {name:?} exists{scope}"));
    let actions = [
        ("insert", p.insert),
        ("update", p.update),
        ("delete", p.delete),
        ("truncate", p.truncate),
    ];
    let missing: Vec<&str> = actions.iter().filter(|(_, on)| !on).map(|(a, _)| *a).collect();
    let fix = format!(
        "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate');",
        quote_ident(name)
    );
    let actions = match missing.as_slice() {
        [] => CheckResult::ok(
            "publication_actions",
            "publishes insert, update, delete, truncate",
        ),
        ["truncate"] => CheckResult::warn(
            "publication_actions",
            "does not publish truncate: a TRUNCATE of a captured table would go unnoticed",
            Some(fix),
        ),
        _ => CheckResult::fail(
            "publication_actions",
            format!(
                "does not publish {}: those changes would never reach fieldsync",
                missing.join(", ")
            ),
            fix,
        ),
    };
    vec![exists, actions]
}

/// One configured table; `rel` is `None` when no relation has that name.
#[derive(Clone, Debug)]
pub(super) struct TableFacts {
    pub table: TableName,
    pub rel: Option<RelFacts>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct RelFacts {
    /// `pg_class.relkind`: `r` table, `p` partitioned table, others are not tables.
    pub kind: char,
    pub replica_identity: char,
    pub has_primary_key: bool,
    pub has_identity_index: bool,
    pub can_select: bool,
    pub schema_usage: bool,
    pub published: bool,
}

async fn table_facts(client: &Client, publication: &str, tables: &[TableName]) -> Sql<Vec<TableFacts>> {
    let statement = client
        .prepare(
            "SELECT c.relkind::text, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident), \
                    has_table_privilege(c.oid, 'SELECT'), has_schema_privilege(n.oid, 'USAGE'), \
                    EXISTS (SELECT 1 FROM pg_publication_tables p WHERE p.pubname = $3 \
                            AND p.schemaname = n.nspname AND p.tablename = c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .await?;
    let first = |s: String| s.chars().next().unwrap_or('?');
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let row = client
            .query_opt(&statement, &[&table.schema, &table.name, &publication])
            .await?;
        let rel = match row {
            None => None,
            Some(row) => Some(RelFacts {
                kind: first(row.try_get(0)?),
                replica_identity: first(row.try_get(1)?),
                has_primary_key: row.try_get(2)?,
                has_identity_index: row.try_get(3)?,
                can_select: row.try_get(4)?,
                schema_usage: row.try_get(5)?,
                published: row.try_get(6)?,
            }),
        };
        out.push(TableFacts {
            table: table.clone(),
            rel,
        });
    }
    Ok(out)
}

/// The facts of the configured tables that exist and are tables.
fn present(facts: &[TableFacts]) -> impl Iterator<Item = (&TableName, &RelFacts)> {
    facts.iter().filter_map(|t| {
        t.rel
            .as_ref()
            .filter(|r| matches!(r.kind, 'r' | 'p'))
            .map(|r| (&t.table, r))
    })
}

pub(super) fn tables_result(facts: &[TableFacts]) -> CheckResult {
    const NAME: &str = "tables";
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for t in facts {
        match &t.rel {
            None => problems.push(format!("table {} does not exist", t.table)),
            Some(r) if !matches!(r.kind, 'r' | 'p') => {
                problems.push(format!("{} is not a table (relkind {:?})", t.table, r.kind))
            }
            Some(_) => continue,
        }
        names.push(format!("\"{}\"", t.table));
    }
    if problems.is_empty() {
        let names: Vec<String> = facts.iter().map(|t| t.table.to_string()).collect();
        return CheckResult::ok(NAME, format!("{} found: {}", names.len(), names.join(", ")));
    }
    let fix = format!(
        "create the missing tables (sql/schema.sql has the default ones), or remove {} from capture.tables",
        names.join(", ")
    );
    CheckResult::fail(NAME, problems.join("\n"), fix)
}

pub(super) fn publication_tables_result(
    publication: &str,
    p: &PublicationFacts,
    facts: &[TableFacts],
) -> CheckResult {
    const NAME: &str = "publication_tables";
    if p.all_tables {
        return CheckResult::ok(NAME, format!("publication {publication:?} is FOR ALL TABLES"));
    }
    let missing: Vec<&TableName> = present(facts)
        .filter(|(_, r)| !r.published)
        .map(|(t, _)| t)
        .collect();
    if missing.is_empty() {
        return CheckResult::ok(
            NAME,
            format!("publication {publication:?} covers every existing configured table"),
        );
    }
    let names: Vec<String> = missing.iter().map(|t| t.to_string()).collect();
    let fixes: Vec<String> = missing
        .iter()
        .map(|t| {
            format!(
                "ALTER PUBLICATION {} ADD TABLE {};",
                quote_ident(publication),
                quote_table(t)
            )
        })
        .collect();
    CheckResult::fail(
        NAME,
        format!(
            "publication {publication:?} does not include {}",
            names.join(", ")
        ),
        fixes.join("\n"),
    )
}

pub(super) fn replica_identity_result(facts: &[TableFacts]) -> CheckResult {
    const NAME: &str = "replica_identity";
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut fixes = Vec::new();
    for (table, r) in present(facts) {
        match replica_identity_verdict(r.replica_identity, r.has_primary_key, r.has_identity_index) {
            Ok(how) => good.push(format!("{table}: {how}")),
            Err(why) => {
                bad.push(format!("{table}: replica identity {why}"));
                fixes.push(format!(
                    "ALTER TABLE {} REPLICA IDENTITY FULL;",
                    quote_table(table)
                ));
            }
        }
    }
    if bad.is_empty() {
        CheckResult::ok(NAME, good.join(", "))
    } else {
        CheckResult::fail(NAME, bad.join("\n"), fixes.join("\n"))
    }
}

pub(super) fn privileges_result(role: &str, facts: &[TableFacts]) -> CheckResult {
    const NAME: &str = "table_privileges";
    let who = quote_ident(role);
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (table, r) in present(facts) {
        if !r.schema_usage {
            let grant = format!("GRANT USAGE ON SCHEMA {} TO {who};", quote_ident(&table.schema));
            if !fixes.contains(&grant) {
                problems.push(format!("role {role:?} has no USAGE on schema {:?}", table.schema));
                fixes.push(grant);
            }
        }
        if !r.can_select {
            problems.push(format!("role {role:?} cannot SELECT from {table}"));
            fixes.push(format!("GRANT SELECT ON {} TO {who};", quote_table(table)));
        }
    }
    if problems.is_empty() {
        CheckResult::ok(NAME, format!("role {role:?} can read every configured table"))
    } else {
        CheckResult::fail(NAME, problems.join("\n"), fixes.join("\n"))
    }
}

#[cfg(test)]
mod tests;

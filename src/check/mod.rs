//! `fieldsync check`: the PostgreSQL prerequisites, each checked with the exact SQL or setting that
//! fixes it. `fieldsync run` calls [`preflight`] first, so a bad setup stops the daemon before it
//! creates a slot or writes a queue.
//!
//! Checks run in a fixed order over one ordinary SQL connection: reachable, server version, primary,
//! wal_level, slot and WAL-sender capacity, the role's REPLICATION attribute, the publication and
//! what it publishes, the configured tables (exist, covered by the publication, usable replica
//! identity, readable), and the replication slot. Only an unreachable server stops the run early.
//!
//! Invariants: every `Fail` carries a fix; identifiers in printed SQL are quoted with
//! [`quote_ident`]; queries take names as parameters, never spliced in; no detail contains a password
//! (the URL is shown redacted) or any row data.

mod probe;
mod reach;
mod slot;

use std::fmt;

use crate::config::{Config, TableName};

/// The outcome of one check. `Warn` does not fail the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "[ ok ]",
            Status::Warn => "[warn]",
            Status::Fail => "[FAIL]",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub name: &'static str,
    pub status: Status,
    /// What was found; may span lines.
    pub detail: String,
    /// The SQL or setting that fixes it; one statement per line.
    pub fix: Option<String>,
}

impl CheckResult {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: Option<String>) -> CheckResult {
        CheckResult {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix,
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> CheckResult {
        CheckResult {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Width of `"[FAIL] "`: continuation lines are indented by it.
const INDENT: &str = "       ";

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            self.name,
            indent_lines(&self.detail, INDENT)
        )?;
        if let Some(fix) = &self.fix {
            let under_fix = format!("{INDENT}     ");
            write!(f, "\n{INDENT}fix: {}", indent_lines(fix, &under_fix))?;
        }
        Ok(())
    }
}

fn indent_lines(text: &str, indent: &str) -> String {
    text.trim_end().replace('\n', &format!("\n{indent}"))
}

/// All results, in check order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub results: Vec<CheckResult>,
}

impl Report {
    /// No check failed (warnings allowed).
    pub fn passed(&self) -> bool {
        self.first_failure().is_none()
    }

    pub fn first_failure(&self) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.status == Status::Fail)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| r.status == Status::Warn)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for result in &self.results {
            writeln!(f, "{result}")?;
        }
        Ok(())
    }
}

/// Runs every check against the configured database. Never panics; an unreachable server gives a
/// report with the single failed `reachable` check.
pub async fn run(config: &Config) -> Report {
    let mut results = Vec::new();
    match crate::pg::connect_sql(&config.postgres).await {
        Ok(client) => {
            results.push(CheckResult::ok(
                "reachable",
                format!("connected to {}", config.postgres.redacted_url()),
            ));
            probe::all(&client, config, &mut results).await;
        }
        Err(err) => results.push(reach::unreachable(&config.postgres, &err)),
    }
    results.extend(security(config));
    Report { results }
}

/// What the configuration leaves open, as warnings (none fails a run).
pub fn security(config: &Config) -> Vec<CheckResult> {
    use crate::config::Role;
    let mut out = Vec::new();
    if config.queue.encryption_key.is_none() {
        out.push(CheckResult::warn(
            "encryption at rest",
            format!(
                "the queue at {} holds field values (names, dates, dietary notes) in clear",
                config.queue.path.display()
            ),
            Some(
                "make a key with `fieldsync secret keygen > store.key` (mode 0600), set [queue] \
                 encryption_key_file to it, restart, then run `fieldsync reencrypt` for what is already held"
                    .to_owned(),
            ),
        ));
    }
    if !config.http.tokens.iter().any(|t| t.role == Role::Operate) {
        out.push(CheckResult::warn(
            "http tokens",
            if config.http.tokens.is_empty() {
                "no [http] tokens: requeue, pause and resume over HTTP answer 401, and dead letters and the \
                 delivery log are readable by anyone who reaches the port"
            } else {
                "no [http] token has role \"operate\": requeue, pause and resume over HTTP answer 403"
            },
            Some(
                "[http] tokens = [{ name = \"ops\", token = \"<32 or more characters>\", role = \"operate\" }]"
                    .to_owned(),
            ),
        ));
    }
    out
}

/// Runs the checks for `fieldsync run`: the first failure, or `Ok` (warnings are logged).
pub async fn preflight(config: &Config) -> Result<(), CheckResult> {
    let report = run(config).await;
    for w in report.warnings() {
        tracing::warn!(check = w.name, detail = %w.detail, "setup check warning");
    }
    match report.first_failure() {
        Some(failure) => Err(failure.clone()),
        None => Ok(()),
    }
}

/// PostgreSQL keywords that cannot be used unquoted as a name (`pg_get_keywords()` with a category
/// other than unreserved, PostgreSQL 15), sorted.
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// `name` as an SQL identifier: unchanged when PostgreSQL would read it back as is (lowercase,
/// digits, `_`, `$`, not a keyword), else double-quoted with inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && KEYWORDS.binary_search(&name).is_err();
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `schema.table` with both parts quoted as needed.
pub fn quote_table(table: &TableName) -> String {
    format!("{}.{}", quote_ident(&table.schema), quote_ident(&table.name))
}

/// `text` as an SQL string literal (standard_conforming_strings, the default since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether a table's replica identity lets logical replication carry its updates and deletes.
/// `relreplident` is `pg_class.relreplident`: `d` default (the primary key), `n` nothing, `i` an
/// index, `f` full. `Ok` describes the identity; `Err` says why it is unusable.
pub fn replica_identity_verdict(
    relreplident: char,
    has_primary_key: bool,
    has_identity_index: bool,
) -> Result<&'static str, &'static str> {
    match relreplident {
        'f' => Ok("full"),
        'd' if has_primary_key => Ok("default (primary key)"),
        'd' => Err(
            "default, but the table has no primary key: its updates and deletes fail while it is \
                    in a publication that publishes them",
        ),
        'i' if has_identity_index => Ok("index"),
        'i' => Err("index, but the identity index is gone: updates and deletes carry no old row"),
        'n' => Err("nothing: updates and deletes carry no old row and fail while the table is published"),
        _ => Err("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_warns_of_data_in_clear_and_of_no_operator_token() {
        let names = |c: &Config| {
            security(c)
                .into_iter()
                .map(|r| (r.name, r.status))
                .collect::<Vec<_>>()
        };
        let mut c = Config::default();
        assert_eq!(
            names(&c),
            [
                ("encryption at rest", Status::Warn),
                ("http tokens", Status::Warn)
            ]
        );
        c.http.tokens.push(crate::config::Credential {
            name: "ops".to_owned(),
            secret: crate::secret::Secret::new("x".repeat(32)),
            role: crate::config::Role::Operate,
        });
        assert_eq!(names(&c), [("encryption at rest", Status::Warn)]);
        assert!(security(&c)[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("encryption_key_file"));
        c.queue.encryption_key = Some(crate::config::KeyFile {
            path: "store.key".into(),
            key: crate::secret::Secret::new([1; 32]),
        });
        assert!(names(&c).is_empty());
    }

    #[test]
    fn keywords_are_sorted_for_binary_search() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("fieldsync"), "fieldsync");
        assert_eq!(quote_ident("form_field_values2"), "form_field_values2");
        assert_eq!(quote_ident("_x$"), "_x$");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("Weddings"), "\"Weddings\"");
        assert_eq!(quote_ident("my table"), "\"my table\"");
        assert_eq!(quote_ident("1st"), "\"1st\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident(""), "\"\"");
        assert_eq!(quote_ident("fiëld"), "\"fiëld\"");
        let t = TableName {
            schema: "Crm".into(),
            name: "order".into(),
        };
        assert_eq!(quote_table(&t), "\"Crm\".\"order\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn replica_identity_full_index_and_primary_key_are_usable_nothing_is_not() {
        assert!(replica_identity_verdict('f', false, false).is_ok());
        assert!(replica_identity_verdict('d', true, false).is_ok());
        assert!(replica_identity_verdict('i', false, true).is_ok());
        assert!(replica_identity_verdict('d', false, false)
            .unwrap_err()
            .contains("no primary key"));
        assert!(replica_identity_verdict('i', true, false).is_err());
        assert!(replica_identity_verdict('n', true, true).is_err());
        assert!(replica_identity_verdict('x', true, true).is_err());
    }

    #[test]
    fn results_print_one_line_with_the_fix_indented_below() {
        let ok = CheckResult::ok("wal_level", "logical");
        assert_eq!(ok.to_string(), "[ ok ] wal_level: logical");
        let fail = CheckResult::fail(
            "publication",
            "publication \"fieldsync\" does not exist",
            "CREATE PUBLICATION fieldsync FOR TABLE public.weddings;",
        );
        assert_eq!(
            fail.to_string(),
            "[FAIL] publication: publication \"fieldsync\" does not exist\n       \
             fix: CREATE PUBLICATION fieldsync FOR TABLE public.weddings;"
        );
        let warn = CheckResult::warn("slot", "line one\nline two", Some("a;\nb;".into()));
        assert_eq!(
            warn.to_string(),
            "[warn] slot: line one\n       line two\n       fix: a;\n            b;"
        );
    }

    #[test]
    fn a_report_passes_with_warnings_and_fails_on_the_first_failure() {
        let mut report = Report {
            results: vec![CheckResult::ok("a", "x"), CheckResult::warn("b", "y", None)],
        };
        assert!(report.passed());
        assert_eq!(report.to_string(), "[ ok ] a: x\n[warn] b: y\n");
        report.results.push(CheckResult::fail("c", "z", "fix c"));
        report.results.push(CheckResult::fail("d", "w", "fix d"));
        assert!(!report.passed());
        assert_eq!(report.first_failure().map(|r| r.name), Some("c"));
    }
}

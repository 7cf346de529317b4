use std::cell::RefCell;

use super::*;

/// Two small views and one admin function that records its calls.
struct Fixture {
    calls: RefCell<Vec<Vec<Value>>>,
}

const ITEMS: &[Column] = &[
    Column {
        name: "name",
        ty: Type::Text,
    },
    Column {
        name: "n",
        ty: Type::Int,
    },
    Column {
        name: "score",
        ty: Type::Float,
    },
    Column {
        name: "ok",
        ty: Type::Bool,
    },
    Column {
        name: "at",
        ty: Type::Time,
    },
];

impl Catalog for Fixture {
    fn views(&self) -> &'static [&'static str] {
        &["items"]
    }

    fn columns(&self, view: &str) -> Option<&'static [Column]> {
        (view == "items").then_some(ITEMS)
    }

    fn scan(&self, _view: &str) -> Result<Rows<'_>, SqlError> {
        let at = |s: &str| Value::Time(value::parse_time(s).unwrap());
        let rows = vec![
            vec![
                Value::text("a"),
                Value::Int(3),
                Value::Float(1.5),
                Value::Bool(true),
                at("2026-11-26 10:00:00"),
            ],
            vec![
                Value::text("b"),
                Value::Int(1),
                Value::Null,
                Value::Bool(false),
                at("2026-11-26 11:00:00"),
            ],
            vec![
                Value::text("a"),
                Value::Int(2),
                Value::Float(0.5),
                Value::Null,
                at("2026-11-25 09:30:00"),
            ],
            vec![
                Value::Null,
                Value::Int(7),
                Value::Float(2.0),
                Value::Bool(true),
                Value::Null,
            ],
        ];
        Ok(Box::new(rows.into_iter().map(Ok)))
    }

    fn function(&self, name: &str) -> Option<Function> {
        (name == "poke").then_some(Function {
            name: "poke",
            min_args: 1,
            max_args: 2,
            returns: Type::Int,
        })
    }

    fn call(&self, _name: &str, args: &[Value]) -> Result<Value, SqlError> {
        if args[0] == Value::text("missing") {
            return Err(SqlError::new(state::UNDEFINED_OBJECT, "no such thing"));
        }
        self.calls.borrow_mut().push(args.to_vec());
        Ok(Value::Int(1))
    }
}

fn fixture() -> Fixture {
    Fixture {
        calls: RefCell::new(Vec::new()),
    }
}

fn query_with(sql: &str, params: &[Value]) -> Result<(Plan, Vec<Vec<Value>>), SqlError> {
    let f = fixture();
    let mut stmts = parse(sql, &f)?;
    assert_eq!(stmts.len(), 1);
    let Statement::Query(plan) = stmts.remove(0) else {
        panic!("not a query: {sql}")
    };
    let rows = run(&plan, params, &f)?;
    Ok((*plan, rows))
}

fn rows(sql: &str) -> Vec<Vec<Value>> {
    query_with(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).1
}

fn rendered(sql: &str) -> Vec<String> {
    rows(sql)
        .iter()
        .map(|r| r.iter().map(Value::render).collect::<Vec<_>>().join("|"))
        .collect()
}

fn error(sql: &str) -> SqlError {
    match query_with(sql, &[]) {
        Ok(_) => panic!("{sql} succeeded"),
        Err(e) => e,
    }
}

#[test]
fn where_order_limit_offset() {
    assert_eq!(
        rendered("SELECT name, n FROM items WHERE n > 1 ORDER BY n DESC"),
        ["|7", "a|3", "a|2"]
    );
    assert_eq!(
        rendered("select N from ITEMS where name = 'a' order by 1 limit 1"),
        ["2"]
    );
    assert_eq!(
        rendered("SELECT n FROM items ORDER BY n LIMIT 2 OFFSET 1"),
        ["2", "3"]
    );
    assert_eq!(
        rendered("SELECT n FROM items WHERE name IS NULL OR score IS NULL ORDER BY n"),
        ["1", "7"]
    );
    assert_eq!(
        rendered("SELECT n FROM items WHERE name IN ('b', 'c') OR n BETWEEN 6 AND 8 ORDER BY n"),
        ["1", "7"]
    );
    assert_eq!(
        rendered("SELECT n FROM items WHERE name LIKE 'a%' OR name ILIKE 'B'"),
        ["3", "1", "2"]
    );
    assert_eq!(rendered("SELECT n FROM items WHERE NOT ok"), ["1"]);
    assert_eq!(
        rendered("SELECT n FROM items WHERE ok IS NOT TRUE ORDER BY n"),
        ["1", "2"]
    );
    assert_eq!(
        rendered("SELECT n FROM items ORDER BY score NULLS FIRST, n"),
        ["1", "2", "3", "7"]
    );
    assert_eq!(
        rendered("SELECT items.n AS x FROM fieldsync.items AS i WHERE i.n < 2"),
        ["1"]
    );
    assert_eq!(
        rendered("SELECT DISTINCT name FROM items WHERE name IS NOT NULL ORDER BY name"),
        ["a", "b"]
    );
}

#[test]
fn times_and_intervals_compare_with_text() {
    assert_eq!(
        rendered("SELECT n FROM items WHERE at >= '2026-11-26' ORDER BY at"),
        ["3", "1"]
    );
    assert_eq!(
        rendered(
            "SELECT n FROM items WHERE at > timestamptz '2026-11-26 10:30:00+00' - interval '30 minutes'"
        ),
        ["1"]
    );
    assert_eq!(
        rendered(
            "SELECT n FROM items WHERE '2026-11-27 12:00'::timestamptz - at > interval '1 day' ORDER BY n"
        ),
        ["1", "2", "3"]
    );
    assert_eq!(
        rendered("SELECT '2026-11-26 10:00:00'::timestamptz - '2026-11-26 08:30:00'::timestamptz"),
        ["01:30:00"]
    );
    assert_eq!(
        error("SELECT n FROM items WHERE at > 'yesterday-ish'").code,
        state::INVALID_DATETIME_FORMAT
    );
    assert_eq!(
        rendered("SELECT '2026-11-26 10:00:00.670'::timestamptz, '2026-11-26T10:00:00Z'::timestamptz"),
        ["2026-11-26 10:00:00.67+00|2026-11-26 10:00:00+00"]
    );
}

#[test]
fn aggregates_and_groups() {
    assert_eq!(
        rendered("SELECT count(*), count(score), sum(n), max(at) FROM items"),
        ["4|3|13|2026-11-26 11:00:00+00"]
    );
    assert_eq!(
        rendered("SELECT name, count(*) AS c, avg(n) FROM items GROUP BY name ORDER BY c DESC, name"),
        ["a|2|2.5", "b|1|1", "|1|7"]
    );
    assert_eq!(
        rendered("SELECT name FROM items GROUP BY 1 HAVING count(*) > 1"),
        ["a"]
    );
    assert_eq!(rendered("SELECT count(*) FROM items WHERE n > 100"), ["0"]);
    assert_eq!(
        error("SELECT name, n FROM items GROUP BY name").code,
        state::GROUPING_ERROR
    );
    assert_eq!(
        error("SELECT n FROM items WHERE count(*) > 1").code,
        state::GROUPING_ERROR
    );
    assert_eq!(
        error("SELECT sum(name) FROM items").code,
        state::UNDEFINED_FUNCTION
    );
}

#[test]
fn scalar_functions_and_casts() {
    assert_eq!(
        rendered("SELECT upper(name) || '-' || n::text FROM items WHERE n = 3"),
        ["A-3"]
    );
    assert_eq!(
        rendered("SELECT coalesce(NULL, 'none'), length('héllo'), round(2.5), abs(-4)"),
        ["none|5|3|4"]
    );
    assert_eq!(
        rendered("SELECT CAST('42' AS integer) + 1, 7 / 2, 7.0 / 2, 7 % 3"),
        ["43|3|3.5|1"]
    );
    assert_eq!(error("SELECT 1 / 0").code, state::DIVISION_BY_ZERO);
    assert_eq!(error("SELECT 'x'::int").code, state::INVALID_TEXT_REPRESENTATION);
}

#[test]
fn parameters_take_the_type_of_what_they_meet() {
    let (plan, got) = query_with(
        "SELECT name FROM items WHERE n > $1 AND at < $2 LIMIT $3",
        &[Value::Int(1), Value::text("2026-11-27"), Value::Int(5)],
    )
    .unwrap();
    assert_eq!(plan.params, [Type::Int, Type::Time, Type::Int]);
    assert_eq!(got.len(), 2);
    assert_eq!(plan.columns, [("name".to_owned(), Type::Text)]);
    let e = query_with("SELECT name FROM items WHERE n > $1", &[]).unwrap_err();
    assert_eq!(e.code, state::UNDEFINED_PARAMETER);
}

#[test]
fn admin_functions_run_per_row_and_their_errors_pass_through() {
    let f = fixture();
    let Statement::Query(plan) = parse("SELECT poke(name, n::text) FROM items WHERE ok", &f)
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    assert_eq!(plan.columns, [("poke".to_owned(), Type::Int)]);
    let got = run(&plan, &[], &f);
    // the row with a NULL name is refused, after the first row was done
    assert_eq!(got.unwrap_err().code, state::INVALID_PARAMETER_VALUE);
    assert_eq!(*f.calls.borrow(), [vec![Value::text("a"), Value::text("3")]]);
    assert_eq!(error("SELECT poke('missing')").code, state::UNDEFINED_OBJECT);
    assert_eq!(error("SELECT poke()").code, state::UNDEFINED_FUNCTION);
}

#[test]
fn errors_carry_sqlstates_and_hints() {
    let e = error("SELECT * FROM nowhere");
    assert_eq!(e.code, state::UNDEFINED_TABLE);
    assert!(e.hint.unwrap().contains("items"));
    let e = error("SELECT nope FROM items");
    assert_eq!(e.code, state::UNDEFINED_COLUMN);
    assert!(e.hint.unwrap().contains("name, n, score, ok, at"));
    assert_eq!(error("SELEC 1").code, state::SYNTAX_ERROR);
    assert_eq!(
        error("SELECT n FROM items a JOIN items b ON true").code,
        state::FEATURE_NOT_SUPPORTED
    );
    assert_eq!(
        error("SELECT n FROM items WHERE n IN (SELECT 1)").code,
        state::FEATURE_NOT_SUPPORTED
    );
    assert_eq!(
        error("SELECT n FROM items WHERE name").code,
        state::DATATYPE_MISMATCH
    );
    assert_eq!(
        error("SELECT n FROM items LIMIT -1").code,
        state::INVALID_ROW_COUNT
    );
    assert_eq!(error("SELECT nope()").code, state::UNDEFINED_FUNCTION);
    assert_eq!(
        error("SELECT n FROM items WHERE ok = 3").code,
        state::UNDEFINED_FUNCTION
    );
    let f = fixture();
    let e = parse("UPDATE items SET n = 1", &f).unwrap_err();
    assert_eq!(e.code, state::READ_ONLY_TRANSACTION);
    assert!(e.hint.unwrap().contains("requeue"));
    assert_eq!(
        parse("DROP TABLE items", &f).unwrap_err().code,
        state::FEATURE_NOT_SUPPORTED
    );
    assert_eq!(
        parse("SHOW nonsense", &f).unwrap_err().code,
        state::UNDEFINED_OBJECT
    );
}

#[test]
fn driver_statements_are_accepted() {
    let f = fixture();
    let stmts = parse(
        "SET extra_float_digits = 3; BEGIN; SHOW server_version; COMMIT; ROLLBACK",
        &f,
    )
    .unwrap();
    assert!(matches!(stmts[0], Statement::Set(_)));
    assert!(matches!(stmts[1], Statement::Begin));
    let Statement::Query(show) = &stmts[2] else {
        panic!()
    };
    assert!(run(show, &[], &f).unwrap()[0][0].render().starts_with("15"));
    assert!(matches!(stmts[3], Statement::Commit));
    assert!(matches!(stmts[4], Statement::Rollback));
}

#[test]
fn like_matches_sql_patterns() {
    for (s, p, want) in [
        ("tave", "t%", true),
        ("tave", "%v_", true),
        ("tave", "%x%", false),
        ("", "%", true),
        ("abc", "a%c%", true),
        ("abc", "a_", false),
        ("aXbXc", "a%b%c", true),
    ] {
        assert_eq!(eval_like(s, p), want, "{s} LIKE {p}");
    }
}

fn eval_like(s: &str, p: &str) -> bool {
    let sql = format!("SELECT '{s}' LIKE '{p}'");
    rows(&sql)[0][0] == Value::Bool(true)
}

#[test]
fn no_input_panics() {
    let f = fixture();
    for sql in [
        "",
        ";",
        "SELECT",
        "SELECT ((((((((((1))))))))))",
        "SELECT $0",
        "SELECT $99999999999",
        "SELECT 9223372036854775807 + 1",
        "SELECT -9223372036854775808",
        "SELECT abs(-9223372036854775807 - 1)",
        "SELECT n FROM items ORDER BY 9",
        "SELECT interval '99999999999999 days'",
        "SELECT round(1e300)",
        "SELECT count(*) FROM items GROUP BY count(*)",
        "SELECT * ",
        "SELECT sum(sum(n)) FROM items",
    ] {
        if let Ok(stmts) = parse(sql, &f) {
            for s in stmts {
                if let Statement::Query(p) = s {
                    let params = vec![Value::Null; p.params.len()];
                    let _ = run(&p, &params, &f);
                }
            }
        }
    }
}

/// Runs `f` on a thread with the 2 MiB stack of a tokio worker or blocking thread.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("thread")
        .join()
        .expect("no overflow, no panic")
}

/// `first term term term ...` in a `WHERE`, for each chain shape the tester found.
fn chain(shape: &str, terms: usize) -> String {
    let (first, term) = match shape {
        "or" => ("ok", " OR ok"),
        "and" => ("ok", " AND ok"),
        "plus" => ("1", "+1"),
        "minus" => ("n", " - 1"),
        "times" => ("1", "*1"),
        "concat" => ("'a'", "||'a'"),
        "cast" => ("'a'", "::text"),
        "is_null" => ("'a'", " IS NULL"),
        "eq" => ("1", " = 1"),
        other => panic!("{other}"),
    };
    format!(
        "SELECT count(*) FROM items WHERE ({first}{}) IS NOT NULL",
        term.repeat(terms.saturating_sub(1))
    )
}

const SHAPES: &[&str] = &[
    "or", "and", "plus", "minus", "times", "concat", "cast", "is_null", "eq",
];

#[test]
fn flat_chains_of_1500_and_20000_terms_are_refused_as_too_complex() {
    for shape in SHAPES {
        for terms in [1_500, 20_000] {
            let sql = chain(shape, terms);
            let e = on_small_stack(move || error(&sql));
            assert_eq!(e.code, state::STATEMENT_TOO_COMPLEX, "{shape} x {terms}: {e}");
            assert!(e.hint.is_some(), "{shape}: a hint");
        }
    }
    // also as select items, function arguments and parenthesized
    for sql in [
        format!("SELECT 1{}", "+1".repeat(5000)),
        format!("SELECT lower('a'{})", "||'a'".repeat(5000)),
        format!("SELECT ({})", vec!["1"; 5000].join(" + ")),
        format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200)),
        format!("SELECT {}1", "NOT ".repeat(5000)),
        format!("SELECT {}1", "- ".repeat(5000)),
    ] {
        let e = on_small_stack(move || error(&sql));
        assert_eq!(e.code, state::STATEMENT_TOO_COMPLEX, "{e}");
    }
}

#[test]
fn the_deepest_statements_the_guard_admits_run_on_a_2_mib_stack() {
    for shape in SHAPES {
        // the longest chain of this shape the guard takes
        let mut terms = 2;
        while guard::depth(&chain(shape, terms + 1)).unwrap() <= guard::MAX_DEPTH {
            terms += 1;
        }
        assert!(
            terms >= guard::MAX_DEPTH / 2,
            "{shape}: only {terms} terms admitted"
        );
        let sql = chain(shape, terms);
        let outcome = on_small_stack(move || query_with(&sql, &[]).map(|_| ()).map_err(|e| e.code));
        assert_ne!(outcome, Err(state::STATEMENT_TOO_COMPLEX), "{shape} x {terms}");
        let e = on_small_stack({
            let sql = chain(shape, terms + 1);
            move || error(&sql)
        });
        assert_eq!(e.code, state::STATEMENT_TOO_COMPLEX, "{shape} x {}", terms + 1);
    }
    // nested parentheses up to the limit, with a chain inside
    let sql = format!(
        "SELECT {}1{}",
        "(".repeat(guard::MAX_DEPTH / 2),
        ")".repeat(guard::MAX_DEPTH / 2)
    );
    on_small_stack(move || rows(&sql));
}

#[test]
fn the_depth_estimate_is_close_for_what_people_write() {
    let d = |sql: &str| guard::depth(sql).unwrap();
    assert_eq!(d("SELECT 1"), 0);
    assert_eq!(d("SELECT a = 1 OR a = 2 OR a = 3"), 3, "two ORs and an =");
    assert_eq!(d("SELECT a + 1, b + 1, c + 1"), 1, "select items do not stack");
    assert_eq!(d("SELECT x IN (1, 2, 3, 4, 5, 6)"), 2, "IN lists do not stack");
    assert_eq!(d("SELECT ((1))"), 2);
    assert_eq!(d("SELECT (1 + 2) * 3"), 3, "the group is a level (Expr::Nested)");
    let many = (0..1000)
        .map(|i| format!("'e{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        d(&format!(
            "SELECT requeue(integration_id, event_id) FROM dead_letters WHERE event_id IN ({many})"
        )) < 5
    );
    assert!(d("SELECT 1; SELECT 2 + 2 + 2") == 2, "statements do not stack");
}

#[test]
fn more_than_1664_result_columns_are_refused() {
    let cols = |n: usize| format!("SELECT {}", vec!["1"; n].join(", "));
    assert_eq!(rows(&cols(plan::MAX_COLUMNS)).len(), 1);
    assert_eq!(error(&cols(plan::MAX_COLUMNS + 1)).code, state::TOO_MANY_COLUMNS);
    let many = cols(70_000);
    assert_eq!(on_small_stack(move || error(&many)).code, state::TOO_MANY_COLUMNS);
}

#[test]
fn integer_overflow_is_out_of_range_and_division_by_zero_is_its_own_error() {
    for sql in [
        "SELECT -9223372036854775808 / -1",
        "SELECT -9223372036854775808 % -1",
        "SELECT 9223372036854775807 + 1",
        "SELECT -9223372036854775808 - 1",
        "SELECT 4611686018427387904 * 2",
        "SELECT -(-9223372036854775808)",
        "SELECT abs(-9223372036854775808)",
        "SELECT sum(9223372036854775807) FROM items",
        "SELECT 9.3e18::bigint",
        "SELECT 9223372036854775807.0::bigint",
        "SELECT '99999999999999999999'::bigint",
        "SELECT 1e308 * 10",
        "SELECT 'NaN'::float8::bigint",
    ] {
        let e = error(sql);
        assert_eq!(e.code, state::NUMERIC_VALUE_OUT_OF_RANGE, "{sql}: {e}");
    }
    assert_eq!(rendered("SELECT -9223372036854775808"), ["-9223372036854775808"]);
    assert_eq!(
        rendered("SELECT -9223372036854775808 / 1"),
        ["-9223372036854775808"]
    );
    for sql in [
        "SELECT 1 / 0",
        "SELECT 1 % 0",
        "SELECT 1.5 / 0",
        "SELECT n / 0 FROM items",
    ] {
        assert_eq!(error(sql).code, state::DIVISION_BY_ZERO, "{sql}");
    }
    for sql in [
        "SELECT now() + interval '999999999999 seconds' * 1",
        "SELECT '262000-01-01'::timestamptz",
        "SELECT interval '999999999999 seconds' + interval '999999999999 seconds'",
        "SELECT interval '99999999999:00:00'",
        "SELECT now() + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds' + interval '900000000000 seconds'",
    ] {
        // an error with a SQLSTATE or a value, never a panic
        let _ = query_with(sql, &[]);
    }
}

#[test]
fn an_overlong_query_string_is_refused_before_parsing() {
    let e = check_length(&"x".repeat(70_000), 65_536).unwrap_err();
    assert_eq!(e.code, state::PROGRAM_LIMIT_EXCEEDED);
    assert!(check_length("SELECT 1", 65_536).is_ok());
}

mod property {
    use proptest::prelude::*;

    use super::*;

    fn leaf() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "n",
            "name",
            "score",
            "ok",
            "at",
            "items.n",
            "nope",
            "1",
            "0",
            "-1",
            "2.5",
            "1e308",
            "-9223372036854775808",
            "9223372036854775807",
            "'a'",
            "''",
            "'%'",
            "NULL",
            "true",
            "$1",
            "$2",
            "now()",
            "interval '1 day'",
            "'2026-01-01'",
            "count(*)",
            "sum(n)",
            "avg(score)",
            "poke('x')",
            "poke('missing')",
            "version()",
        ])
        .prop_map(str::to_owned)
    }

    fn op() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "+",
            "-",
            "*",
            "/",
            "%",
            "||",
            "=",
            "<>",
            "<",
            ">=",
            "AND",
            "OR",
            "IS DISTINCT FROM",
            "LIKE",
            "ILIKE",
            "::int",
            "^",
            "~",
        ])
    }

    fn expr() -> impl Strategy<Value = String> {
        leaf().prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                (inner.clone(), op(), inner.clone()).prop_map(|(a, o, b)| if o.starts_with("::") {
                    format!("{a}{o}")
                } else {
                    format!("{a} {o} {b}")
                }),
                inner.clone().prop_map(|a| format!("({a})")),
                inner.clone().prop_map(|a| format!("NOT {a}")),
                inner.clone().prop_map(|a| format!("-{a}")),
                inner.clone().prop_map(|a| format!("{a} IS NULL")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} IN ({b}, 1)")),
                (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(a, b, c)| format!("{a} BETWEEN {b} AND {c}")),
                (
                    prop::sample::select(vec![
                        "lower", "upper", "length", "abs", "round", "coalesce", "max", "min"
                    ]),
                    inner.clone()
                )
                    .prop_map(|(f, a)| format!("{f}({a})")),
                (
                    inner.clone(),
                    prop::sample::select(vec![
                        "text",
                        "bigint",
                        "float8",
                        "boolean",
                        "timestamptz",
                        "interval"
                    ])
                )
                    .prop_map(|(a, t)| format!("CAST({a} AS {t})")),
                // long flat chains (of leaves: a chain of chains would grow as a power of 2,500 and
                // take the machine's memory) and deep nesting
                (leaf(), op(), 1..2_500usize).prop_map(|(a, o, n)| {
                    let o = if o.starts_with("::") { "+" } else { o };
                    let mut s = a.clone();
                    for _ in 0..n {
                        s.push(' ');
                        s.push_str(o);
                        s.push(' ');
                        s.push_str(&a);
                    }
                    s
                }),
                (inner, 1..120usize).prop_map(|(a, d)| format!("{}{a}{}", "(".repeat(d), ")".repeat(d))),
            ]
        })
    }

    fn statement() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(expr(), 1..4),
            prop::option::of(expr()),
            prop::option::of(expr()),
            prop::option::of(expr()),
            prop::option::of(expr()),
            any::<bool>(),
        )
            .prop_map(|(items, filter, group, order, limit, from)| {
                let mut s = format!("SELECT {}", items.join(", "));
                if from {
                    s += " FROM items";
                }
                if let Some(f) = filter {
                    s += &format!(" WHERE {f}");
                }
                if let Some(g) = group {
                    s += &format!(" GROUP BY {g}");
                }
                if let Some(o) = order {
                    s += &format!(" ORDER BY {o} DESC NULLS FIRST");
                }
                if let Some(l) = limit {
                    s += &format!(" LIMIT {l}");
                }
                s
            })
    }

    /// Random tokens: what a fuzzer would type.
    fn token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "SELECT", "FROM", "items", "WHERE", "(", ")", ",", "1", "'x'", "+", "||", "OR", "NOT", "::",
                "text", "[", "]", ";", "$1", "IS", "NULL", "CASE", "WHEN", "THEN", "END", "-", "*", "n",
                "GROUP BY", "ORDER BY", "LIMIT", "/*", "*/", "--", "\n", "E'\\'", "$$",
            ]),
            0..400,
        )
        .prop_map(|t| t.join(" "))
    }

    /// Parses, plans and runs `sql` on a 2 MiB stack: every failure is a `SqlError` with a
    /// five-character SQLSTATE; nothing panics or overflows.
    fn survives(sql: String) -> Result<(), TestCaseError> {
        let codes = on_small_stack(move || {
            let f = fixture();
            let mut codes = Vec::new();
            match parse(&sql, &f) {
                Err(e) => codes.push(e.code),
                Ok(stmts) => {
                    for s in stmts {
                        if let Statement::Query(p) = s {
                            let params = vec![Value::text("1"); p.params.len()];
                            if let Err(e) = run(&p, &params, &f) {
                                codes.push(e.code);
                            }
                        }
                    }
                }
            }
            codes
        });
        for code in codes {
            prop_assert!(
                code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{code}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn random_statements_never_panic_and_every_error_has_a_sqlstate(sql in statement()) {
            survives(sql)?;
        }

        #[test]
        fn random_token_soup_never_panics(sql in token_soup()) {
            survives(sql)?;
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2_000)) {
            survives(String::from_utf8_lossy(&bytes).into_owned())?;
        }
    }
}

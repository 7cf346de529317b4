//! Runs a [`Plan`] over the rows a [`Catalog`] streams. Without `ORDER BY`, `GROUP BY` or
//! `DISTINCT` the scan stops as soon as `LIMIT` is met; otherwise at most [`MAX_ROWS`] rows are
//! held, and a query that would hold more is refused (memory stays bounded).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::plan::{Agg, AggKind, Cmp, Ex, Grouping, OrderKey, Plan, Scalar};
use super::value::{arithmetic, compare, sort_cmp, Type, Value};
use super::{state, Catalog, SqlError};

/// The most rows a query may hold (to sort, group, or return).
pub const MAX_ROWS: usize = 100_000;

struct Ctx<'a> {
    params: &'a [Value],
    catalog: &'a dyn Catalog,
    now: DateTime<Utc>,
}

fn too_many() -> SqlError {
    SqlError::new(
        state::PROGRAM_LIMIT_EXCEEDED,
        format!("the query would hold more than {MAX_ROWS} rows"),
    )
    .hint("narrow it with WHERE, or add LIMIT")
}

/// Runs `plan` with `params` (already of the plan's parameter types); returns the result rows.
pub fn run(plan: &Plan, params: &[Value], catalog: &dyn Catalog) -> Result<Vec<Vec<Value>>, SqlError> {
    if params.len() != plan.params.len() {
        return Err(SqlError::new(
            state::UNDEFINED_PARAMETER,
            format!(
                "the statement takes {} parameter(s), {} given",
                plan.params.len(),
                params.len()
            ),
        ));
    }
    let cx = Ctx {
        params,
        catalog,
        now: Utc::now(),
    };
    let count = |e: &Option<Ex>, what: &str| -> Result<Option<usize>, SqlError> {
        let Some(e) = e else { return Ok(None) };
        match eval(e, &[], &cx)?.cast(Type::Int)? {
            Value::Null => Ok(None),
            Value::Int(n) if n >= 0 => Ok(Some(n as usize)),
            _ => Err(SqlError::new(
                state::INVALID_ROW_COUNT,
                format!("{what} must not be negative"),
            )),
        }
    };
    let limit = count(&plan.limit, "LIMIT")?;
    let offset = count(&plan.offset, "OFFSET")?.unwrap_or(0);
    if limit == Some(0) {
        return Ok(Vec::new());
    }
    let rows: super::Rows<'_> = match &plan.view {
        Some(v) => catalog.scan(v)?,
        None => Box::new(std::iter::once(Ok(Vec::new()))),
    };
    let filtered = rows.filter_map(|row| match row {
        Ok(row) => match &plan.filter {
            Some(f) => match eval(f, &row, &cx).and_then(|v| v.is_true()) {
                Ok(true) => Some(Ok(row)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            },
            None => Some(Ok(row)),
        },
        Err(e) => Some(Err(e)),
    });
    let base: Box<dyn Iterator<Item = Result<Vec<Value>, SqlError>> + '_> = match &plan.grouping {
        Some(g) => Box::new(group(g, filtered, &cx)?.into_iter().map(Ok)),
        None => Box::new(filtered),
    };

    let streaming = plan.order.is_empty() && !plan.distinct;
    let mut out = Vec::new();
    if streaming {
        let mut skipped = 0;
        for row in base {
            let row = row?;
            let values = project(plan, &row, &cx)?;
            let Some(values) = values else { continue };
            if skipped < offset {
                skipped += 1;
                continue;
            }
            if out.len() >= MAX_ROWS {
                return Err(too_many());
            }
            out.push(values);
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
        return Ok(out);
    }

    // sort keys with each result row
    let mut keyed: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    let mut seen = HashSet::new();
    for row in base {
        let row = row?;
        let Some(values) = project(plan, &row, &cx)? else {
            continue;
        };
        if plan.distinct && !seen.insert(format!("{values:?}")) {
            continue;
        }
        let keys = plan
            .order
            .iter()
            .map(|o| match &o.key {
                OrderKey::Output(i) => Ok(values[*i].clone()),
                OrderKey::Expr(e) => eval(e, &row, &cx),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keyed.len() >= MAX_ROWS {
            return Err(too_many());
        }
        keyed.push((keys, values));
    }
    keyed.sort_by(|(a, _), (b, _)| {
        for (o, (x, y)) in plan.order.iter().zip(a.iter().zip(b)) {
            let ord = match (x, y) {
                (Value::Null, Value::Null) => Ordering::Equal,
                (Value::Null, _) => bool_order(o.nulls_first),
                (_, Value::Null) => bool_order(o.nulls_first).reverse(),
                _ if o.desc => sort_cmp(y, x),
                _ => sort_cmp(x, y),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    out.extend(
        keyed
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .map(|(_, v)| v),
    );
    Ok(out)
}

fn bool_order(first: bool) -> Ordering {
    if first {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// The result row, or `None` when a group fails `HAVING`.
fn project(plan: &Plan, row: &[Value], cx: &Ctx) -> Result<Option<Vec<Value>>, SqlError> {
    if let Some(h) = plan.grouping.as_ref().and_then(|g| g.having.as_ref()) {
        if !eval(h, row, cx)?.is_true()? {
            return Ok(None);
        }
    }
    plan.items
        .iter()
        .zip(&plan.columns)
        .map(|(e, (_, ty))| {
            // every value of a column has the type the plan announced (a literal, a parameter
            // or a mixed expression may come out otherwise)
            let v = eval(e, row, cx)?;
            match v.ty() {
                Some(t) if t != *ty => v.cast(*ty),
                _ => Ok(v),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

enum Acc {
    Count(i64),
    Sum(Option<Value>),
    Best(Option<Value>, Ordering),
    Avg(f64, u64),
}

impl Acc {
    fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::CountRows | AggKind::Count => Acc::Count(0),
            AggKind::Sum => Acc::Sum(None),
            AggKind::Min => Acc::Best(None, Ordering::Less),
            AggKind::Max => Acc::Best(None, Ordering::Greater),
            AggKind::Avg => Acc::Avg(0.0, 0),
        }
    }

    fn add(&mut self, agg: &Agg, v: Value) -> Result<(), SqlError> {
        if matches!(v, Value::Null) && agg.kind != AggKind::CountRows {
            return Ok(());
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum(s) => {
                *s = Some(match s.take() {
                    None => v,
                    Some(prev) => arithmetic('+', prev, v)?,
                })
            }
            Acc::Best(best, want) => {
                let better = match best {
                    None => true,
                    Some(b) => compare(&v, b)? == *want,
                };
                if better {
                    *best = Some(v);
                }
            }
            Acc::Avg(sum, n) => {
                let Value::Float(f) = v.cast(Type::Float)? else {
                    unreachable!("cast to float")
                };
                *sum += f;
                *n += 1;
            }
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(n),
            Acc::Sum(v) | Acc::Best(v, _) => v.unwrap_or(Value::Null),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(sum, n) => Value::Float(sum / n as f64),
        }
    }
}

/// The group rows: keys, then aggregates; one row when there are aggregates but no keys.
fn group(
    g: &Grouping,
    rows: impl Iterator<Item = Result<Vec<Value>, SqlError>>,
    cx: &Ctx,
) -> Result<Vec<Vec<Value>>, SqlError> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<(Vec<Value>, Vec<Acc>)> = Vec::new();
    if g.keys.is_empty() {
        groups.push((Vec::new(), g.aggs.iter().map(|a| Acc::new(a.kind)).collect()));
        index.insert(String::new(), 0);
    }
    for row in rows {
        let row = row?;
        let keys = g
            .keys
            .iter()
            .map(|k| eval(k, &row, cx))
            .collect::<Result<Vec<_>, _>>()?;
        let id = if g.keys.is_empty() {
            String::new()
        } else {
            format!("{keys:?}")
        };
        let n = match index.get(&id) {
            Some(n) => *n,
            None => {
                if groups.len() >= MAX_ROWS {
                    return Err(too_many());
                }
                groups.push((keys, g.aggs.iter().map(|a| Acc::new(a.kind)).collect()));
                index.insert(id, groups.len() - 1);
                groups.len() - 1
            }
        };
        for (acc, agg) in groups[n].1.iter_mut().zip(&g.aggs) {
            let v = match &agg.arg {
                Some(e) => eval(e, &row, cx)?,
                None => Value::Bool(true),
            };
            acc.add(agg, v)?;
        }
    }
    Ok(groups
        .into_iter()
        .map(|(mut keys, accs)| {
            keys.extend(accs.into_iter().map(Acc::finish));
            keys
        })
        .collect())
}

fn eval(e: &Ex, row: &[Value], cx: &Ctx) -> Result<Value, SqlError> {
    let ev = |e: &Ex| eval(e, row, cx);
    Ok(match e {
        Ex::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
        Ex::Lit(v) => v.clone(),
        Ex::Param(n) => cx.params.get(*n).cloned().unwrap_or(Value::Null),
        Ex::Agg(_) => {
            return Err(SqlError::new(
                state::INTERNAL_ERROR,
                "an aggregate outside its group",
            ))
        }
        Ex::Cmp(c, a, b) => {
            let (a, b) = (ev(a)?, ev(b)?);
            if matches!(a, Value::Null) || matches!(b, Value::Null) {
                return Ok(Value::Null);
            }
            let o = compare(&a, &b)?;
            Value::Bool(match c {
                Cmp::Eq => o == Ordering::Equal,
                Cmp::Ne => o != Ordering::Equal,
                Cmp::Lt => o == Ordering::Less,
                Cmp::Le => o != Ordering::Greater,
                Cmp::Gt => o == Ordering::Greater,
                Cmp::Ge => o != Ordering::Less,
            })
        }
        Ex::Arith(op, a, b) => arithmetic(*op, ev(a)?, ev(b)?)?,
        Ex::Concat(a, b) => match (ev(a)?, ev(b)?) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (a, b) => Value::Text(a.render() + &b.render()),
        },
        Ex::And(a, b) => match truth(ev(a)?)? {
            Some(false) => Value::Bool(false),
            left => match (left, truth(ev(b)?)?) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            },
        },
        Ex::Or(a, b) => match truth(ev(a)?)? {
            Some(true) => Value::Bool(true),
            left => match (left, truth(ev(b)?)?) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            },
        },
        Ex::Not(a) => match truth(ev(a)?)? {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        Ex::IsNull(a) => Value::Bool(matches!(ev(a)?, Value::Null)),
        Ex::IsBool(a, tested, negated) => {
            let is = truth(ev(a)?)? == Some(*tested);
            Value::Bool(is != *negated)
        }
        Ex::Distinct(a, b, distinct) => {
            let same = match (ev(a)?, ev(b)?) {
                (Value::Null, Value::Null) => true,
                (Value::Null, _) | (_, Value::Null) => false,
                (a, b) => compare(&a, &b)? == Ordering::Equal,
            };
            Value::Bool(same != *distinct)
        }
        Ex::In(x, list) => {
            let x = ev(x)?;
            if matches!(x, Value::Null) {
                return Ok(Value::Null);
            }
            let mut null = false;
            for item in list {
                match ev(item)? {
                    Value::Null => null = true,
                    v if compare(&x, &v)? == Ordering::Equal => return Ok(Value::Bool(true)),
                    _ => {}
                }
            }
            if null {
                Value::Null
            } else {
                Value::Bool(false)
            }
        }
        Ex::Like {
            expr,
            pattern,
            case_insensitive,
        } => match (ev(expr)?, ev(pattern)?) {
            (Value::Null, _) | (_, Value::Null) => Value::Null,
            (s, p) => {
                let (mut s, mut p) = (s.render(), p.render());
                if *case_insensitive {
                    s = s.to_lowercase();
                    p = p.to_lowercase();
                }
                Value::Bool(like(&s, &p))
            }
        },
        Ex::Cast(a, t) => ev(a)?.cast(*t)?,
        Ex::Scalar(s, args) => scalar(*s, args.iter().map(ev).collect::<Result<Vec<_>, _>>()?, cx)?,
        Ex::Call(name, args) => {
            let args = args
                .iter()
                .map(|a| ev(a)?.cast(Type::Text))
                .collect::<Result<Vec<_>, _>>()?;
            if args.iter().any(|a| matches!(a, Value::Null)) {
                return Err(SqlError::new(
                    state::INVALID_PARAMETER_VALUE,
                    format!("the arguments of {name}() must not be NULL"),
                ));
            }
            cx.catalog.call(name, &args)?
        }
    })
}

fn truth(v: Value) -> Result<Option<bool>, SqlError> {
    match v {
        Value::Null => Ok(None),
        v => Ok(Some(v.cast(Type::Bool)?.is_true()?)),
    }
}

fn scalar(s: Scalar, args: Vec<Value>, cx: &Ctx) -> Result<Value, SqlError> {
    let first = args.first().cloned().unwrap_or(Value::Null);
    if matches!(first, Value::Null) && !matches!(s, Scalar::Coalesce | Scalar::Now | Scalar::Version) {
        return Ok(Value::Null);
    }
    Ok(match s {
        Scalar::Lower => Value::Text(first.render().to_lowercase()),
        Scalar::Upper => Value::Text(first.render().to_uppercase()),
        Scalar::Length => Value::Int(first.render().chars().count() as i64),
        Scalar::Coalesce => args
            .into_iter()
            .find(|v| !matches!(v, Value::Null))
            .unwrap_or(Value::Null),
        Scalar::Now => Value::Time(cx.now),
        Scalar::Version => Value::text(concat!(
            "PostgreSQL 15.0 (fieldsync ",
            env!("CARGO_PKG_VERSION"),
            " admin port)"
        )),
        Scalar::Abs => match first {
            Value::Int(n) => Value::Int(
                n.checked_abs()
                    .ok_or_else(|| SqlError::new(state::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range"))?,
            ),
            v => match v.cast(Type::Float)? {
                Value::Float(f) => Value::Float(f.abs()),
                other => other,
            },
        },
        Scalar::Round => {
            let Value::Float(f) = first.cast(Type::Float)? else {
                unreachable!("cast to float")
            };
            match args.get(1) {
                None => Value::Float(f.round()).cast(Type::Int)?,
                Some(places) => {
                    let Value::Int(p) = places.clone().cast(Type::Int)? else {
                        return Ok(Value::Null);
                    };
                    let m = 10f64.powi(p.clamp(-15, 15) as i32);
                    let r = (f * m).round() / m;
                    // f * m overflowed: f is far past 2^53 and has no fractional digits to round
                    Value::Float(if r.is_finite() { r } else { f })
                }
            }
        }
    })
}

/// SQL `LIKE`: `%` any run, `_` one character (no escapes).
fn like(s: &str, p: &str) -> bool {
    let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), p.chars().collect());
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == s[si]) && p[pi] != '%' {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

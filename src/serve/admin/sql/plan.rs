//! From SQL text to a [`Plan`]: names resolved against the [`Catalog`], types inferred (so a
//! driver's `Describe` learns the result columns and the parameter types before anything runs),
//! anything the views cannot do refused with its SQLSTATE.

use sqlparser::ast::{self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::value::{Type, Value};
use super::{state, Catalog, Column, SqlError};

/// A statement of a query string.
#[derive(Clone, Debug)]
pub enum Statement {
    Query(Box<Plan>),
    /// `SET`, `RESET`, `DISCARD`: accepted and ignored (drivers send them on connect).
    Set(&'static str),
    Begin,
    Commit,
    Rollback,
}

/// A planned `SELECT` (or `SHOW`).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The result columns.
    pub columns: Vec<(String, Type)>,
    /// The `$n` parameters' types, inferred from where they are used (text when nothing says).
    pub params: Vec<Type>,
    pub(super) view: Option<String>,
    pub(super) filter: Option<Ex>,
    pub(super) grouping: Option<Grouping>,
    /// Over the view's row, or over the group row when grouped.
    pub(super) items: Vec<Ex>,
    pub(super) order: Vec<Order>,
    pub(super) distinct: bool,
    pub(super) limit: Option<Ex>,
    pub(super) offset: Option<Ex>,
}

/// `GROUP BY` and aggregates: the group row is the keys' values then the aggregates'.
#[derive(Clone, Debug)]
pub(super) struct Grouping {
    pub keys: Vec<Ex>,
    pub aggs: Vec<Agg>,
    pub having: Option<Ex>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Agg {
    pub kind: AggKind,
    pub arg: Option<Ex>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum AggKind {
    CountRows,
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

#[derive(Clone, Debug)]
pub(super) struct Order {
    pub key: OrderKey,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Clone, Debug)]
pub(super) enum OrderKey {
    /// A result column (by position or name).
    Output(usize),
    /// An expression over the row the items are computed from.
    Expr(Ex),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scalar {
    Lower,
    Upper,
    Length,
    Coalesce,
    Now,
    Version,
    Abs,
    Round,
}

/// An expression over a row.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Ex {
    Col(usize),
    Lit(Value),
    Param(usize),
    /// An aggregate's result, before grouping turns it into a column of the group row.
    Agg(usize),
    Cmp(Cmp, Box<Ex>, Box<Ex>),
    Arith(char, Box<Ex>, Box<Ex>),
    Concat(Box<Ex>, Box<Ex>),
    And(Box<Ex>, Box<Ex>),
    Or(Box<Ex>, Box<Ex>),
    Not(Box<Ex>),
    IsNull(Box<Ex>),
    /// `IS [NOT] DISTINCT FROM`: (left, right, distinct)
    Distinct(Box<Ex>, Box<Ex>, bool),
    /// `IS [NOT] TRUE/FALSE`: (value, tested, negated)
    IsBool(Box<Ex>, bool, bool),
    In(Box<Ex>, Vec<Ex>),
    Like {
        expr: Box<Ex>,
        pattern: Box<Ex>,
        case_insensitive: bool,
    },
    Cast(Box<Ex>, Type),
    Scalar(Scalar, Vec<Ex>),
    /// An admin function of the catalog.
    Call(&'static str, Vec<Ex>),
}

fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::new(
        state::FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported by the fieldsync admin port"),
    )
}

const SCALARS: &str = "lower, upper, length, coalesce, now, version, abs, round";
const AGGREGATES: &str = "count, sum, min, max, avg";

/// Parses a query string into its statements.
///
/// The statement's depth is checked first ([`super::guard`]): nothing recursive runs over a
/// statement deeper than [`super::guard::MAX_DEPTH`].
pub fn parse(sql: &str, catalog: &dyn Catalog) -> Result<Vec<Statement>, SqlError> {
    super::guard::check(sql)?;
    let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(parse_error)?;
    parsed.iter().map(|s| statement(s, catalog)).collect()
}

fn parse_error(e: sqlparser::parser::ParserError) -> SqlError {
    match e {
        sqlparser::parser::ParserError::ParserError(m)
        | sqlparser::parser::ParserError::TokenizerError(m) => {
            SqlError::new(state::SYNTAX_ERROR, format!("syntax error: {m}"))
        }
        sqlparser::parser::ParserError::RecursionLimitExceeded => SqlError::new(
            state::STATEMENT_TOO_COMPLEX,
            "statement too complex: it nests too deeply",
        )
        .hint("unnest the parentheses or split the statement"),
    }
}

/// The most result columns a statement may have (PostgreSQL's limit on target-list entries; the
/// wire protocol counts columns in 16 bits).
pub const MAX_COLUMNS: usize = 1664;

fn too_many_columns() -> SqlError {
    SqlError::new(
        state::TOO_MANY_COLUMNS,
        format!("target lists can have at most {MAX_COLUMNS} entries"),
    )
}

fn statement(s: &ast::Statement, catalog: &dyn Catalog) -> Result<Statement, SqlError> {
    use ast::Statement as S;
    Ok(match s {
        S::Query(q) => Statement::Query(Box::new(Planner::new(catalog).query(q)?)),
        S::Set(_) => Statement::Set("SET"),
        S::Reset(_) => Statement::Set("RESET"),
        S::Discard { .. } => Statement::Set("DISCARD ALL"),
        S::StartTransaction { .. } => Statement::Begin,
        S::Commit { .. } => Statement::Commit,
        S::Rollback { .. } => Statement::Rollback,
        S::ShowVariable { variable } => Statement::Query(Box::new(show(variable)?)),
        S::Insert(_) | S::Update(_) | S::Delete(_) => {
            return Err(SqlError::new(
                state::READ_ONLY_TRANSACTION,
                "the admin views are read-only",
            )
            .hint("act with the admin functions: SELECT requeue('integration', 'event id'), SELECT pause('integration'), SELECT resume('integration')"))
        }
        other => {
            let text = other.to_string();
            let word = text.split_whitespace().next().unwrap_or("this statement").to_uppercase();
            return Err(unsupported(word).hint("the admin port answers SELECT over its views: status, integrations, queue, dead_letters, deliveries"));
        }
    })
}

/// `SHOW name` for the settings drivers ask about.
fn show(variable: &[ast::Ident]) -> Result<Plan, SqlError> {
    let name = variable
        .iter()
        .map(|i| i.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let value = match name.as_str() {
        "server_version" => concat!("15.0 (fieldsync ", env!("CARGO_PKG_VERSION"), ")"),
        "server_encoding" | "client_encoding" => "UTF8",
        "datestyle" => "ISO, MDY",
        "timezone" => "UTC",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "transaction isolation level" | "transaction_isolation" => "read committed",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "search_path" => "fieldsync",
        _ => {
            return Err(SqlError::new(
                state::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            ))
        }
    };
    Ok(Plan {
        columns: vec![(name.replace(' ', "_"), Type::Text)],
        params: Vec::new(),
        view: None,
        filter: None,
        grouping: None,
        items: vec![Ex::Lit(Value::text(value))],
        order: Vec::new(),
        distinct: false,
        limit: None,
        offset: None,
    })
}

/// Which names an expression may use.
#[derive(Clone, Copy, PartialEq)]
enum Clause {
    Where,
    Select,
    GroupBy,
    Limit,
}

struct Planner<'a> {
    catalog: &'a dyn Catalog,
    view: Option<(String, &'static [Column])>,
    /// The view's alias, if any (qualified names may use it instead of the view's name).
    alias: Option<String>,
    params: Vec<Option<Type>>,
    aggs: Vec<Agg>,
}

impl<'a> Planner<'a> {
    fn new(catalog: &'a dyn Catalog) -> Planner<'a> {
        Planner {
            catalog,
            view: None,
            alias: None,
            params: Vec::new(),
            aggs: Vec::new(),
        }
    }

    fn query(mut self, q: &ast::Query) -> Result<Plan, SqlError> {
        if q.with.is_some() {
            return Err(unsupported("WITH"));
        }
        if q.fetch.is_some() {
            return Err(unsupported("FETCH").hint("use LIMIT"));
        }
        if !q.locks.is_empty() {
            return Err(SqlError::new(
                state::READ_ONLY_TRANSACTION,
                "the admin views are read-only: FOR UPDATE/SHARE does not apply",
            ));
        }
        let select = match q.body.as_ref() {
            ast::SetExpr::Select(s) => s,
            ast::SetExpr::Query(_) => return Err(unsupported("a parenthesized query")),
            ast::SetExpr::SetOperation { op, .. } => return Err(unsupported(op)),
            _ => return Err(unsupported("this query form").hint("write SELECT ... FROM view")),
        };
        self.from(&select.from)?;
        let filter = match &select.selection {
            Some(e) => Some(self.boolean(e, Clause::Where, "WHERE")?),
            None => None,
        };
        let distinct = match &select.distinct {
            None => false,
            Some(ast::Distinct::Distinct) => true,
            Some(other) => return Err(unsupported(other)),
        };

        let group_exprs: Vec<Expr> = match &select.group_by {
            ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.clone(),
            other => return Err(unsupported(format!("{other}"))),
        };

        // the result columns, over the view's row (aggregates as Ex::Agg)
        let mut items = Vec::new();
        let mut columns = Vec::new();
        for item in &select.projection {
            if columns.len() >= MAX_COLUMNS {
                return Err(too_many_columns());
            }
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let (ex, ty) = self.expr(e, Clause::Select)?;
                    columns.push((column_name(e), ty));
                    items.push(ex);
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let (ex, ty) = self.expr(expr, Clause::Select)?;
                    columns.push((ident(alias), ty));
                    items.push(ex);
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    let Some((_, cols)) = &self.view else {
                        return Err(SqlError::new(
                            state::SYNTAX_ERROR,
                            "SELECT * with no FROM clause is not valid",
                        ));
                    };
                    for (i, c) in cols.iter().enumerate() {
                        columns.push((c.name.to_owned(), c.ty));
                        items.push(Ex::Col(i));
                    }
                }
                other => return Err(unsupported(other)),
            }
        }
        if columns.len() > MAX_COLUMNS {
            return Err(too_many_columns());
        }

        // GROUP BY keys: expressions, result positions or result names
        let mut keys = Vec::new();
        for g in &group_exprs {
            let key = match output_ref(g, &columns)? {
                Some(i) => items[i].clone(),
                None => self.expr(g, Clause::GroupBy)?.0,
            };
            if contains_agg(&key) {
                return Err(SqlError::new(
                    state::GROUPING_ERROR,
                    "aggregate functions are not allowed in GROUP BY",
                ));
            }
            keys.push(key);
        }
        let having = match &select.having {
            Some(h) => Some(self.boolean(h, Clause::Select, "HAVING")?),
            None => None,
        };
        let mut order = Vec::new();
        if let Some(ob) = &q.order_by {
            let ast::OrderByKind::Expressions(exprs) = &ob.kind else {
                return Err(unsupported("ORDER BY ALL"));
            };
            for o in exprs {
                let key = match output_ref(&o.expr, &columns)? {
                    Some(i) => OrderKey::Output(i),
                    None => OrderKey::Expr(self.expr(&o.expr, Clause::Select)?.0),
                };
                let desc = match &o.options.sort {
                    None | Some(ast::OrderBySort::Asc) => false,
                    Some(ast::OrderBySort::Desc) => true,
                    Some(other) => return Err(unsupported(format!("ORDER BY {other:?}"))),
                };
                order.push(Order {
                    key,
                    desc,
                    nulls_first: o.options.nulls_first.unwrap_or(desc),
                });
            }
        }
        let (limit, offset) = self.limit(q.limit_clause.as_ref())?;

        let grouped = !keys.is_empty() || !self.aggs.is_empty() || having.is_some();
        let grouping = if grouped {
            let nkeys = keys.len();
            let regroup = |ex: Ex| regroup(ex, &keys, nkeys);
            items = items.into_iter().map(regroup).collect::<Result<_, _>>()?;
            for o in &mut order {
                if let OrderKey::Expr(ex) = &mut o.key {
                    *ex = regroup(ex.clone())?;
                }
            }
            let having = having.map(regroup).transpose()?;
            Some(Grouping {
                keys: keys.clone(),
                aggs: std::mem::take(&mut self.aggs),
                having,
            })
        } else {
            None
        };
        Ok(Plan {
            columns,
            params: self.params.iter().map(|t| t.unwrap_or(Type::Text)).collect(),
            view: self.view.map(|(name, _)| name),
            filter,
            grouping,
            items,
            order,
            distinct,
            limit,
            offset,
        })
    }

    fn from(&mut self, from: &[ast::TableWithJoins]) -> Result<(), SqlError> {
        let t = match from {
            [] => return Ok(()),
            [t] => t,
            _ => return Err(unsupported("more than one view in FROM").hint("query one view at a time")),
        };
        if !t.joins.is_empty() {
            return Err(unsupported("JOIN").hint("query one view at a time"));
        }
        let ast::TableFactor::Table {
            name, alias, args, ..
        } = &t.relation
        else {
            return Err(unsupported("a subquery or function in FROM"));
        };
        if args.is_some() {
            return Err(unsupported("a table function"));
        }
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(ident).unwrap_or_default())
            .collect();
        let view = match parts.as_slice() {
            [view] => view.clone(),
            [schema, view] if schema == "fieldsync" || schema == "public" => view.clone(),
            _ => String::new(),
        };
        let Some(columns) = self.catalog.columns(&view) else {
            return Err(SqlError::new(
                state::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", parts.join(".")),
            )
            .hint(format!("the views are: {}", self.catalog.views().join(", "))));
        };
        self.alias = alias.as_ref().map(|a| ident(&a.name));
        self.view = Some((view, columns));
        Ok(())
    }

    fn limit(&mut self, clause: Option<&ast::LimitClause>) -> Result<(Option<Ex>, Option<Ex>), SqlError> {
        let (limit, offset) = match clause {
            None => return Ok((None, None)),
            Some(ast::LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return Err(unsupported("LIMIT BY"));
                }
                (limit.as_ref(), offset.as_ref().map(|o| &o.value))
            }
            Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => (Some(limit), Some(offset)),
        };
        let mut count = |e: Option<&Expr>, what: &str| -> Result<Option<Ex>, SqlError> {
            let Some(e) = e else { return Ok(None) };
            let (ex, ty) = self.expr(e, Clause::Limit)?;
            if let Ex::Param(n) = ex {
                self.params[n].get_or_insert(Type::Int);
            } else if !matches!(ty, Type::Int | Type::Float) && !matches!(ex, Ex::Lit(Value::Null)) {
                return Err(SqlError::new(
                    state::DATATYPE_MISMATCH,
                    format!("argument of {what} must be type bigint, not type {}", ty.name()),
                ));
            }
            Ok(Some(ex))
        };
        Ok((count(limit, "LIMIT")?, count(offset, "OFFSET")?))
    }

    fn boolean(&mut self, e: &Expr, clause: Clause, what: &str) -> Result<Ex, SqlError> {
        let (ex, ty) = self.expr(e, clause)?;
        if ty != Type::Bool && !matches!(ex, Ex::Param(_) | Ex::Lit(Value::Null)) {
            return Err(SqlError::new(
                state::DATATYPE_MISMATCH,
                format!("argument of {what} must be type boolean, not type {}", ty.name()),
            ));
        }
        if let Ex::Param(n) = ex {
            self.params[n] = Some(Type::Bool);
        }
        Ok(ex)
    }

    fn column(&self, name: &str) -> Result<(Ex, Type), SqlError> {
        let Some((view, cols)) = &self.view else {
            return Err(SqlError::new(
                state::UNDEFINED_COLUMN,
                format!("column \"{name}\" does not exist"),
            )
            .hint("name a view: SELECT ... FROM status (or integrations, queue, dead_letters, deliveries)"));
        };
        match cols.iter().position(|c| c.name == name) {
            Some(i) => Ok((Ex::Col(i), cols[i].ty)),
            None => Err(SqlError::new(
                state::UNDEFINED_COLUMN,
                format!("column \"{name}\" does not exist"),
            )
            .hint(format!(
                "the columns of {view} are: {}",
                cols.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Records what a parameter compared with `other` must be.
    fn infer(&mut self, ex: &Ex, ty: Type) {
        if let Ex::Param(n) = ex {
            self.params[*n].get_or_insert(ty);
        }
    }

    fn expr(&mut self, e: &Expr, clause: Clause) -> Result<(Ex, Type), SqlError> {
        let boxed = |ex: Ex| Box::new(ex);
        if let Some(n) = negative_int(e) {
            return Ok((Ex::Lit(Value::Int(n)), Type::Int));
        }
        Ok(match e {
            Expr::Identifier(id) => self.column(&ident(id))?,
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [table, col] => {
                    let table = ident(table);
                    let known = self.view.as_ref().is_some_and(|(v, _)| *v == table)
                        || self.alias.as_deref() == Some(&table);
                    if !known {
                        return Err(SqlError::new(
                            state::UNDEFINED_TABLE,
                            format!("missing FROM-clause entry for table \"{table}\""),
                        ));
                    }
                    self.column(&ident(col))?
                }
                _ => return Err(unsupported(format!("the name {e}"))),
            },
            Expr::Value(v) => self.literal(&v.value)?,
            Expr::Nested(inner) => self.expr(inner, clause)?,
            Expr::UnaryOp { op, expr } => {
                let (ex, ty) = self.expr(expr, clause)?;
                match op {
                    ast::UnaryOperator::Not => {
                        self.infer(&ex, Type::Bool);
                        (Ex::Not(boxed(ex)), Type::Bool)
                    }
                    ast::UnaryOperator::Minus => {
                        (Ex::Arith('-', boxed(Ex::Lit(Value::Int(0))), boxed(ex)), ty)
                    }
                    ast::UnaryOperator::Plus => (ex, ty),
                    other => return Err(unsupported(format!("the operator {other}"))),
                }
            }
            Expr::BinaryOp { left, op, right } => {
                let (l, lt) = self.expr(left, clause)?;
                let (r, rt) = self.expr(right, clause)?;
                self.infer(&l, rt);
                self.infer(&r, lt);
                use ast::BinaryOperator as B;
                let cmp = |c: Cmp| (Ex::Cmp(c, boxed(l.clone()), boxed(r.clone())), Type::Bool);
                match op {
                    B::Eq => cmp(Cmp::Eq),
                    B::NotEq => cmp(Cmp::Ne),
                    B::Lt => cmp(Cmp::Lt),
                    B::LtEq => cmp(Cmp::Le),
                    B::Gt => cmp(Cmp::Gt),
                    B::GtEq => cmp(Cmp::Ge),
                    B::And => (Ex::And(boxed(l), boxed(r)), Type::Bool),
                    B::Or => (Ex::Or(boxed(l), boxed(r)), Type::Bool),
                    B::StringConcat => (Ex::Concat(boxed(l), boxed(r)), Type::Text),
                    B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                        let c = match op {
                            B::Plus => '+',
                            B::Minus => '-',
                            B::Multiply => '*',
                            B::Divide => '/',
                            _ => '%',
                        };
                        let ty = match (lt, rt) {
                            (Type::Int, Type::Int) => Type::Int,
                            (Type::Time, Type::Time) => Type::Interval,
                            (Type::Time, _) | (_, Type::Time) => Type::Time,
                            (Type::Interval, _) | (_, Type::Interval) => Type::Interval,
                            (Type::Text, Type::Int) | (Type::Int, Type::Text) => Type::Int,
                            _ => Type::Float,
                        };
                        (Ex::Arith(c, boxed(l), boxed(r)), ty)
                    }
                    other => return Err(unsupported(format!("the operator {other}"))),
                }
            }
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (ex, _) = self.expr(inner, clause)?;
                let test = Ex::IsNull(boxed(ex));
                let test = if matches!(e, Expr::IsNotNull(_)) {
                    Ex::Not(boxed(test))
                } else {
                    test
                };
                (test, Type::Bool)
            }
            Expr::IsTrue(inner) | Expr::IsNotTrue(inner) | Expr::IsFalse(inner) | Expr::IsNotFalse(inner) => {
                let (ex, _) = self.expr(inner, clause)?;
                self.infer(&ex, Type::Bool);
                let tested = matches!(e, Expr::IsTrue(_) | Expr::IsNotTrue(_));
                let negated = matches!(e, Expr::IsNotTrue(_) | Expr::IsNotFalse(_));
                (Ex::IsBool(boxed(ex), tested, negated), Type::Bool)
            }
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                let (l, lt) = self.expr(a, clause)?;
                let (r, rt) = self.expr(b, clause)?;
                self.infer(&l, rt);
                self.infer(&r, lt);
                (
                    Ex::Distinct(boxed(l), boxed(r), matches!(e, Expr::IsDistinctFrom(..))),
                    Type::Bool,
                )
            }
            Expr::In {
                expr,
                target,
                negated,
                ..
            } => {
                let ast::InTarget::List(list) = target else {
                    return Err(unsupported("IN with a subquery").hint("list the values: IN ('a', 'b')"));
                };
                let (x, xt) = self.expr(expr, clause)?;
                let mut items = Vec::new();
                for item in list {
                    let (ex, _) = self.expr(item, clause)?;
                    self.infer(&ex, xt);
                    items.push(ex);
                }
                let test = Ex::In(boxed(x), items);
                (if *negated { Ex::Not(boxed(test)) } else { test }, Type::Bool)
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x, xt) = self.expr(expr, clause)?;
                let (lo, _) = self.expr(low, clause)?;
                let (hi, _) = self.expr(high, clause)?;
                self.infer(&lo, xt);
                self.infer(&hi, xt);
                let test = Ex::And(
                    boxed(Ex::Cmp(Cmp::Ge, boxed(x.clone()), boxed(lo))),
                    boxed(Ex::Cmp(Cmp::Le, boxed(x), boxed(hi))),
                );
                (if *negated { Ex::Not(boxed(test)) } else { test }, Type::Bool)
            }
            Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | Expr::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any || escape_char.is_some() {
                    return Err(unsupported("LIKE ANY or ESCAPE"));
                }
                let (x, _) = self.expr(expr, clause)?;
                let (p, _) = self.expr(pattern, clause)?;
                self.infer(&p, Type::Text);
                let test = Ex::Like {
                    expr: boxed(x),
                    pattern: boxed(p),
                    case_insensitive: matches!(e, Expr::ILike { .. }),
                };
                (if *negated { Ex::Not(boxed(test)) } else { test }, Type::Bool)
            }
            Expr::Cast { expr, data_type, .. } => {
                let to = data_type_of(data_type)?;
                let (ex, _) = self.expr(expr, clause)?;
                self.infer(&ex, to);
                (Ex::Cast(boxed(ex), to), to)
            }
            Expr::TypedString(t) => {
                let to = data_type_of(&t.data_type)?;
                let (ex, _) = self.literal(&t.value.value)?;
                (Ex::Cast(boxed(ex), to), to)
            }
            Expr::Interval(i) => {
                let (ex, _) = self.expr(&i.value, clause)?;
                let ex = match (&ex, &i.leading_field) {
                    (Ex::Lit(Value::Text(s)), Some(field)) => Ex::Lit(Value::text(format!("{s} {field}"))),
                    (Ex::Lit(Value::Int(n)), Some(field)) => Ex::Lit(Value::text(format!("{n} {field}"))),
                    (_, None) => ex,
                    _ => return Err(unsupported("this INTERVAL form").hint("write interval '5 minutes'")),
                };
                (Ex::Cast(boxed(ex), Type::Interval), Type::Interval)
            }
            Expr::Function(f) => self.function(f, clause)?,
            other => return Err(unsupported(format!("the expression {other}"))),
        })
    }

    fn literal(&mut self, v: &ast::Value) -> Result<(Ex, Type), SqlError> {
        use ast::Value as V;
        Ok(match v {
            V::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => (Ex::Lit(Value::Int(i)), Type::Int),
                Err(_) => (
                    Ex::Lit(Value::Float(n.parse().map_err(|_| {
                        SqlError::new(state::INVALID_TEXT_REPRESENTATION, format!("invalid number {n}"))
                    })?)),
                    Type::Float,
                ),
            },
            V::SingleQuotedString(s) | V::EscapedStringLiteral(s) => {
                (Ex::Lit(Value::text(s.clone())), Type::Text)
            }
            V::DollarQuotedString(d) => (Ex::Lit(Value::text(d.value.clone())), Type::Text),
            V::Boolean(b) => (Ex::Lit(Value::Bool(*b)), Type::Bool),
            V::Null => (Ex::Lit(Value::Null), Type::Text),
            V::Placeholder(p) => {
                let n: usize = p
                    .strip_prefix('$')
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        SqlError::new(state::SYNTAX_ERROR, format!("bad parameter {p}: use $1, $2, ..."))
                    })?;
                if self.params.len() < n {
                    self.params.resize(n, None);
                }
                (Ex::Param(n - 1), self.params[n - 1].unwrap_or(Type::Text))
            }
            other => return Err(unsupported(format!("the literal {other}"))),
        })
    }

    fn function(&mut self, f: &ast::Function, clause: Clause) -> Result<(Ex, Type), SqlError> {
        let name = f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident)
            .unwrap_or_default();
        if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
            return Err(unsupported(format!("FILTER, OVER or WITHIN GROUP on {name}()")));
        }
        let mut star = false;
        let args: Vec<&Expr> = match &f.args {
            FunctionArguments::None => Vec::new(),
            FunctionArguments::Subquery(_) => return Err(unsupported("a subquery argument")),
            FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                    return Err(unsupported(format!("DISTINCT or clauses inside {name}()")));
                }
                let mut args = Vec::new();
                for a in &list.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e),
                        FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if name == "count" => star = true,
                        _ => return Err(unsupported(format!("the argument {a} of {name}()"))),
                    }
                }
                args
            }
        };
        let wrong_args = || {
            SqlError::new(
                state::UNDEFINED_FUNCTION,
                format!("function {name}() does not take {} argument(s)", args.len()),
            )
        };
        if let Some(kind) = aggregate(&name, star) {
            if clause != Clause::Select {
                let place = match clause {
                    Clause::Where => "WHERE",
                    Clause::GroupBy => "GROUP BY",
                    _ => "LIMIT",
                };
                return Err(SqlError::new(
                    state::GROUPING_ERROR,
                    format!("aggregate functions are not allowed in {place}"),
                ));
            }
            let arg = match (kind, args.as_slice()) {
                (AggKind::CountRows, []) => None,
                (AggKind::CountRows, _) => return Err(wrong_args()),
                (_, [a]) => Some(self.expr(a, Clause::Where).map_err(|e| {
                    if e.code == state::GROUPING_ERROR {
                        SqlError::new(state::GROUPING_ERROR, "aggregate function calls cannot be nested")
                    } else {
                        e
                    }
                })?),
                _ => return Err(wrong_args()),
            };
            let ty = match (kind, &arg) {
                (AggKind::CountRows | AggKind::Count, _) => Type::Int,
                (AggKind::Avg, _) => Type::Float,
                (_, Some((_, t))) => *t,
                (_, None) => Type::Int,
            };
            if matches!(kind, AggKind::Sum | AggKind::Avg) && !matches!(ty, Type::Int | Type::Float) {
                return Err(SqlError::new(
                    state::UNDEFINED_FUNCTION,
                    format!("function {name}({}) does not exist", ty.name()),
                ));
            }
            self.aggs.push(Agg {
                kind,
                arg: arg.map(|(ex, _)| ex),
            });
            return Ok((Ex::Agg(self.aggs.len() - 1), ty));
        }
        let mut planned = Vec::new();
        for a in &args {
            planned.push(self.expr(a, clause)?);
        }
        let scalar = |s: Scalar, n: std::ops::RangeInclusive<usize>| {
            if n.contains(&planned.len()) {
                Ok(s)
            } else {
                Err(wrong_args())
            }
        };
        let first = planned.first().map_or(Type::Text, |(_, t)| *t);
        let (s, ty) = match name.as_str() {
            "lower" => (scalar(Scalar::Lower, 1..=1)?, Type::Text),
            "upper" => (scalar(Scalar::Upper, 1..=1)?, Type::Text),
            "length" | "char_length" => (scalar(Scalar::Length, 1..=1)?, Type::Int),
            "coalesce" => (scalar(Scalar::Coalesce, 1..=100)?, first),
            "now" | "current_timestamp" => (scalar(Scalar::Now, 0..=0)?, Type::Time),
            "version" => (scalar(Scalar::Version, 0..=0)?, Type::Text),
            "abs" => (scalar(Scalar::Abs, 1..=1)?, first),
            "round" => (
                scalar(Scalar::Round, 1..=2)?,
                if planned.len() == 1 {
                    Type::Int
                } else {
                    Type::Float
                },
            ),
            _ => {
                let Some(func) = self.catalog.function(&name) else {
                    return Err(SqlError::new(state::UNDEFINED_FUNCTION, format!("function {name}() does not exist"))
                        .hint(format!(
                            "the functions are: {SCALARS}; aggregates {AGGREGATES}; admin requeue(integration[, event]), pause(integration), resume(integration), reencrypt()"
                        )));
                };
                if !(func.min_args..=func.max_args).contains(&planned.len()) {
                    return Err(wrong_args());
                }
                let args = planned
                    .into_iter()
                    .map(|(ex, _)| {
                        self.infer(&ex, Type::Text);
                        ex
                    })
                    .collect();
                return Ok((Ex::Call(func.name, args), func.returns));
            }
        };
        Ok((Ex::Scalar(s, planned.into_iter().map(|(ex, _)| ex).collect()), ty))
    }
}

/// `-9223372036854775808` is a bigint, as in PostgreSQL (not minus a number too big for one).
fn negative_int(e: &Expr) -> Option<i64> {
    let Expr::UnaryOp {
        op: ast::UnaryOperator::Minus,
        expr,
    } = e
    else {
        return None;
    };
    let Expr::Value(v) = expr.as_ref() else {
        return None;
    };
    let ast::Value::Number(n, _) = &v.value else {
        return None;
    };
    format!("-{n}").parse().ok()
}

fn aggregate(name: &str, star: bool) -> Option<AggKind> {
    Some(match name {
        "count" if star => AggKind::CountRows,
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => AggKind::Avg,
        _ => return None,
    })
}

fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The name PostgreSQL gives an unnamed result column.
fn column_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident)
            .unwrap_or_default(),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => column_name(expr),
        _ => "?column?".to_owned(),
    }
}

/// `ORDER BY 2` or `ORDER BY alias`: a result column.
fn output_ref(e: &Expr, columns: &[(String, Type)]) -> Result<Option<usize>, SqlError> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => match n.parse::<usize>() {
                Ok(i) if (1..=columns.len()).contains(&i) => Ok(Some(i - 1)),
                _ => Err(SqlError::new(
                    state::INVALID_PARAMETER_VALUE,
                    format!("position {n} is not in select list"),
                )),
            },
            _ => Ok(None),
        },
        Expr::Identifier(i) => {
            let name = ident(i);
            Ok(columns.iter().position(|(c, _)| *c == name))
        }
        _ => Ok(None),
    }
}

fn data_type_of(t: &ast::DataType) -> Result<Type, SqlError> {
    use ast::DataType as D;
    Ok(match t {
        D::Text
        | D::Varchar(_)
        | D::String(_)
        | D::Char(_)
        | D::Character(_)
        | D::CharVarying(_)
        | D::CharacterVarying(_) => Type::Text,
        D::Int(_) | D::Integer(_) | D::BigInt(_) | D::SmallInt(_) | D::Int2(_) | D::Int4(_) | D::Int8(_) => {
            Type::Int
        }
        D::Float(_)
        | D::Float4
        | D::Float8
        | D::Real
        | D::Double(_)
        | D::DoublePrecision
        | D::Numeric(_)
        | D::Decimal(_) => Type::Float,
        D::Bool | D::Boolean => Type::Bool,
        D::Timestamp(..) | D::Date => Type::Time,
        D::Interval { .. } => Type::Interval,
        D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => Type::Time,
        other => return Err(unsupported(format!("the type {other}"))),
    })
}

fn contains_agg(ex: &Ex) -> bool {
    let mut found = false;
    visit(ex, &mut |e| found |= matches!(e, Ex::Agg(_)));
    found
}

fn visit(ex: &Ex, f: &mut impl FnMut(&Ex)) {
    f(ex);
    for c in children(ex) {
        visit(c, f);
    }
}

fn children(ex: &Ex) -> Vec<&Ex> {
    match ex {
        Ex::Col(_) | Ex::Lit(_) | Ex::Param(_) | Ex::Agg(_) => Vec::new(),
        Ex::Cmp(_, a, b)
        | Ex::Arith(_, a, b)
        | Ex::Concat(a, b)
        | Ex::And(a, b)
        | Ex::Or(a, b)
        | Ex::Distinct(a, b, _) => {
            vec![a, b]
        }
        Ex::Not(a) | Ex::IsNull(a) | Ex::IsBool(a, ..) | Ex::Cast(a, _) => vec![a],
        Ex::In(a, list) => std::iter::once(a.as_ref()).chain(list).collect(),
        Ex::Like { expr, pattern, .. } => vec![expr, pattern],
        Ex::Scalar(_, args) | Ex::Call(_, args) => args.iter().collect(),
    }
}

/// Rewrites an expression over the view's row into one over the group row: a `GROUP BY` key
/// becomes its column, an aggregate its column after the keys; any other column is an error.
fn regroup(ex: Ex, keys: &[Ex], nkeys: usize) -> Result<Ex, SqlError> {
    if let Some(i) = keys.iter().position(|k| *k == ex) {
        return Ok(Ex::Col(i));
    }
    let re = |e: Box<Ex>| regroup(*e, keys, nkeys).map(Box::new);
    let all = |v: Vec<Ex>| {
        v.into_iter()
            .map(|e| regroup(e, keys, nkeys))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match ex {
        Ex::Agg(j) => Ex::Col(nkeys + j),
        Ex::Col(_) => {
            return Err(SqlError::new(
                state::GROUPING_ERROR,
                "a column must appear in the GROUP BY clause or be used in an aggregate function",
            ))
        }
        Ex::Lit(_) | Ex::Param(_) => ex,
        Ex::Cmp(c, a, b) => Ex::Cmp(c, re(a)?, re(b)?),
        Ex::Arith(c, a, b) => Ex::Arith(c, re(a)?, re(b)?),
        Ex::Concat(a, b) => Ex::Concat(re(a)?, re(b)?),
        Ex::And(a, b) => Ex::And(re(a)?, re(b)?),
        Ex::Or(a, b) => Ex::Or(re(a)?, re(b)?),
        Ex::Distinct(a, b, d) => Ex::Distinct(re(a)?, re(b)?, d),
        Ex::Not(a) => Ex::Not(re(a)?),
        Ex::IsNull(a) => Ex::IsNull(re(a)?),
        Ex::IsBool(a, t, n) => Ex::IsBool(re(a)?, t, n),
        Ex::Cast(a, t) => Ex::Cast(re(a)?, t),
        Ex::In(a, list) => Ex::In(re(a)?, all(list)?),
        Ex::Like {
            expr,
            pattern,
            case_insensitive,
        } => Ex::Like {
            expr: re(expr)?,
            pattern: re(pattern)?,
            case_insensitive,
        },
        Ex::Scalar(s, args) => Ex::Scalar(s, all(args)?),
        Ex::Call(f, args) => Ex::Call(f, all(args)?),
    })
}

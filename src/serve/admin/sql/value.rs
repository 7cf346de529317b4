//! Values and their types: comparison, arithmetic and casts with PostgreSQL's rules for the few
//! types the views use.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};

use super::state;
use super::SqlError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Bool,
    Int,
    Float,
    Text,
    Time,
    Interval,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Bool => "boolean",
            Type::Int => "bigint",
            Type::Float => "double precision",
            Type::Text => "text",
            Type::Time => "timestamp with time zone",
            Type::Interval => "interval",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Time(DateTime<Utc>),
    Interval(TimeDelta),
}

impl Value {
    pub fn ty(&self) -> Option<Type> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Text(_) => Type::Text,
            Value::Time(_) => Type::Time,
            Value::Interval(_) => Type::Interval,
        })
    }

    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    pub fn opt_text(s: Option<impl Into<String>>) -> Value {
        s.map_or(Value::Null, |s| Value::Text(s.into()))
    }

    pub fn opt_int(n: Option<impl Into<i64>>) -> Value {
        n.map_or(Value::Null, |n| Value::Int(n.into()))
    }

    pub fn opt_float(n: Option<f64>) -> Value {
        n.map_or(Value::Null, Value::Float)
    }

    /// An RFC 3339 time as the view's timestamp; NULL when absent or unreadable.
    pub fn time_rfc3339(s: Option<&str>) -> Value {
        s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map_or(Value::Null, |t| Value::Time(t.with_timezone(&Utc)))
    }

    pub fn time_millis(ms: i64) -> Value {
        DateTime::from_timestamp_millis(ms).map_or(Value::Null, Value::Time)
    }

    /// The value cast to `to` (`CAST`, `::`, and the implicit casts of literals).
    pub fn cast(self, to: Type) -> Result<Value, SqlError> {
        let invalid = |what: &str, s: &str| {
            SqlError::new(
                state::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type {what}: {s:?}"),
            )
        };
        Ok(match (self, to) {
            (Value::Null, _) => Value::Null,
            (v, t) if v.ty() == Some(t) => v,
            (Value::Text(s), Type::Int) => Value::Int(s.trim().parse().map_err(|_| {
                // digits too many for a bigint are out of range, not malformed (as in PostgreSQL)
                let digits = s.trim().trim_start_matches(['-', '+']);
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    out_of_range()
                } else {
                    invalid("bigint", &s)
                }
            })?),
            (Value::Text(s), Type::Float) => {
                Value::Float(s.trim().parse().map_err(|_| invalid("double precision", &s))?)
            }
            (Value::Text(s), Type::Bool) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "yes" | "on" | "1" => Value::Bool(true),
                "f" | "false" | "no" | "off" | "0" => Value::Bool(false),
                _ => return Err(invalid("boolean", &s)),
            },
            (Value::Text(s), Type::Time) => Value::Time(parse_time(&s)?),
            (Value::Text(s), Type::Interval) => Value::Interval(parse_interval(&s)?),
            (Value::Int(n), Type::Float) => Value::Float(n as f64),
            (Value::Float(f), Type::Int) => {
                // -2^63 <= r < 2^63 (i64::MAX as f64 rounds up to 2^63, which does not fit)
                let r = f.round();
                if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&r) {
                    return Err(out_of_range());
                }
                Value::Int(r as i64)
            }
            (Value::Int(n), Type::Bool) => Value::Bool(n != 0),
            (Value::Bool(b), Type::Int) => Value::Int(i64::from(b)),
            (v, Type::Text) => Value::Text(v.render()),
            (v, t) => {
                return Err(SqlError::new(
                    state::DATATYPE_MISMATCH,
                    format!("cannot cast type {} to {}", v.type_name(), t.name()),
                ))
            }
        })
    }

    fn type_name(&self) -> &'static str {
        self.ty().map_or("unknown", Type::name)
    }

    /// The text form PostgreSQL would print.
    pub fn render(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => if *b { "t" } else { "f" }.to_owned(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Text(s) => s.clone(),
            Value::Time(t) => {
                // as PostgreSQL prints a timestamptz in UTC: microseconds, trailing zeros dropped
                let mut text = t.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
                while text.ends_with('0') {
                    text.pop();
                }
                if text.ends_with('.') {
                    text.pop();
                }
                text + "+00"
            }
            Value::Interval(d) => {
                let total = d.num_milliseconds();
                let (sign, ms) = if total < 0 { ("-", -total) } else { ("", total) };
                let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
                if frac == 0 {
                    format!("{sign}{h:02}:{m:02}:{s:02}")
                } else {
                    format!("{sign}{h:02}:{m:02}:{s:02}.{frac:03}")
                }
            }
        }
    }

    /// Truthiness in `WHERE`/`HAVING`: NULL counts as false.
    pub fn is_true(&self) -> Result<bool, SqlError> {
        match self {
            Value::Null => Ok(false),
            Value::Bool(b) => Ok(*b),
            v => Err(SqlError::new(
                state::DATATYPE_MISMATCH,
                format!(
                    "argument of WHERE must be type boolean, not type {}",
                    v.type_name()
                ),
            )),
        }
    }
}

/// `22003`: a bigint result that does not fit.
pub fn out_of_range() -> SqlError {
    SqlError::new(state::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
}

/// `22003` for a float that overflowed (PostgreSQL does not make infinities from finite values).
pub fn finite(f: f64, inputs_finite: bool) -> Result<Value, SqlError> {
    if f.is_infinite() && inputs_finite {
        return Err(SqlError::new(
            state::NUMERIC_VALUE_OUT_OF_RANGE,
            "value out of range: overflow",
        ));
    }
    Ok(Value::Float(f))
}

fn interval_out_of_range() -> SqlError {
    SqlError::new(state::DATETIME_FIELD_OVERFLOW, "interval out of range")
}

fn time_out_of_range() -> SqlError {
    SqlError::new(state::DATETIME_FIELD_OVERFLOW, "timestamp out of range")
}

/// Compares two non-NULL values, casting a text operand to the other's type as PostgreSQL does
/// for a quoted literal.
pub fn compare(a: &Value, b: &Value) -> Result<Ordering, SqlError> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).total_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.total_cmp(&(*y as f64)),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        (Value::Interval(x), Value::Interval(y)) => x.cmp(y),
        (Value::Text(_), other) => {
            let t = other.ty().expect("not null");
            return compare(&a.clone().cast(t)?, other);
        }
        (other, Value::Text(_)) => {
            let t = other.ty().expect("not null");
            return compare(other, &b.clone().cast(t)?);
        }
        _ => {
            return Err(SqlError::new(
                state::UNDEFINED_FUNCTION,
                format!("operator does not exist: {} = {}", a.type_name(), b.type_name()),
            )
            .hint("cast one side, e.g. column::text or '42'::bigint"))
        }
    })
}

/// Sort order: NULLs last, like PostgreSQL's default for ascending order.
pub fn sort_cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Greater,
        (_, Value::Null) => Ordering::Less,
        _ => compare(a, b).unwrap_or_else(|_| a.render().cmp(&b.render())),
    }
}

/// `+ - * / %` over numbers, and time ± interval, time − time.
pub fn arithmetic(op: char, a: Value, b: Value) -> Result<Value, SqlError> {
    let overflow = out_of_range;
    Ok(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Value::Null,
        (Value::Int(x), Value::Int(y)) => Value::Int(match op {
            '+' => x.checked_add(y).ok_or_else(overflow)?,
            '-' => x.checked_sub(y).ok_or_else(overflow)?,
            '*' => x.checked_mul(y).ok_or_else(overflow)?,
            '/' | '%' if y == 0 => return Err(SqlError::new(state::DIVISION_BY_ZERO, "division by zero")),
            '/' => x.checked_div(y).ok_or_else(overflow)?,
            _ => x.checked_rem(y).ok_or_else(overflow)?,
        }),
        (x @ (Value::Int(_) | Value::Float(_)), y @ (Value::Int(_) | Value::Float(_))) => {
            let (Value::Float(x), Value::Float(y)) = (x.cast(Type::Float)?, y.cast(Type::Float)?) else {
                unreachable!("numbers cast to float")
            };
            if matches!(op, '/' | '%') && y == 0.0 {
                return Err(SqlError::new(state::DIVISION_BY_ZERO, "division by zero"));
            }
            let r = match op {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                '/' => x / y,
                _ => x % y,
            };
            finite(r, x.is_finite() && y.is_finite())?
        }
        // chrono's operators panic past their range: the checked forms, and 22008 instead
        (Value::Time(t), Value::Interval(d)) | (Value::Interval(d), Value::Time(t)) if op == '+' => {
            Value::Time(t.checked_add_signed(d).ok_or_else(time_out_of_range)?)
        }
        (Value::Time(t), Value::Interval(d)) if op == '-' => {
            Value::Time(t.checked_sub_signed(d).ok_or_else(time_out_of_range)?)
        }
        (Value::Time(x), Value::Time(y)) if op == '-' => Value::Interval(x.signed_duration_since(y)),
        (Value::Interval(x), Value::Interval(y)) if op == '+' => {
            Value::Interval(x.checked_add(&y).ok_or_else(interval_out_of_range)?)
        }
        (Value::Interval(x), Value::Interval(y)) if op == '-' => {
            Value::Interval(x.checked_sub(&y).ok_or_else(interval_out_of_range)?)
        }
        (t @ (Value::Time(_) | Value::Interval(_)), Value::Text(s)) => {
            let other = if matches!((&t, op), (Value::Time(_), '-')) && parse_time(&s).is_ok() {
                Type::Time
            } else {
                Type::Interval
            };
            arithmetic(op, t, Value::Text(s).cast(other)?)?
        }
        (x, y) => {
            return Err(SqlError::new(
                state::UNDEFINED_FUNCTION,
                format!(
                    "operator does not exist: {} {op} {}",
                    x.type_name(),
                    y.type_name()
                ),
            ))
        }
    })
}

/// `2026-11-26`, `2026-11-26 10:00[:00[.123]]`, RFC 3339; times without a zone are UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, SqlError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    match s.to_ascii_lowercase().as_str() {
        "now" => Ok(Utc::now()),
        _ => Err(SqlError::new(
            state::INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type timestamp with time zone: {s:?}"),
        )
        .hint("write e.g. '2026-11-26 10:00:00' or '2026-11-26T10:00:00Z'")),
    }
}

/// `90 seconds`, `5 min`, `1 hour 30 minutes`, `2 days`, `1.5h`, `00:05:00`.
pub fn parse_interval(s: &str) -> Result<TimeDelta, SqlError> {
    let bad = || {
        SqlError::new(
            state::INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type interval: {s:?}"),
        )
        .hint("write e.g. '5 minutes', '1 hour 30 minutes', '2 days' or '00:05:00'")
    };
    let text = s.trim().to_ascii_lowercase();
    if let [h, m, sec] = text.split(':').collect::<Vec<_>>().as_slice() {
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        let sec: f64 = sec.parse().map_err(|_| bad())?;
        let total = (h as f64) * 3600.0 + (m as f64) * 60.0 + sec;
        if !total.is_finite() || total.abs() > 1e12 {
            return Err(bad());
        }
        return TimeDelta::try_milliseconds((total * 1000.0).round() as i64).ok_or_else(bad);
    }
    let mut total = 0.0f64;
    let mut rest = text.as_str();
    let mut any = false;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = rest[end..].trim_start();
        let uend = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = match &rest[..uend] {
            "ms" | "millisecond" | "milliseconds" => 0.001,
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            _ => return Err(bad()),
        };
        rest = &rest[uend..];
        total += n * unit;
        any = true;
    }
    if !any || !total.is_finite() || total.abs() > 1e12 {
        return Err(bad());
    }
    TimeDelta::try_milliseconds((total * 1000.0).round() as i64).ok_or_else(bad)
}

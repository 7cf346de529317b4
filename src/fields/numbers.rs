//! Reading whole numbers out of JSON numbers without loss and without panics.
//!
//! A JSON integer is read exactly. A float is accepted only when it is integral and small enough to be
//! exact (|x| ≤ 2^53), so `120.0` is `120` but `1e300` is out of range rather than silently rounded.

use serde_json::Value;

use super::report::{kind, subject, Report};

/// Largest magnitude a float holds exactly as an integer.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// Why a JSON value is not the whole number wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IntProblem {
    NotNumber,
    Fractional,
    Negative,
    TooLarge,
}

/// A non-negative whole number.
pub(super) fn read_u64(value: &Value) -> Result<u64, IntProblem> {
    let Value::Number(n) = value else {
        return Err(IntProblem::NotNumber);
    };
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    if n.as_i64().is_some() {
        return Err(IntProblem::Negative);
    }
    let f = n.as_f64().ok_or(IntProblem::NotNumber)?;
    let i = integral(f)?;
    if i < 0 {
        return Err(IntProblem::Negative);
    }
    u64::try_from(i).map_err(|_| IntProblem::TooLarge)
}

/// A signed whole number that fits i64.
pub(super) fn read_i64(value: &Value) -> Result<i64, IntProblem> {
    let Value::Number(n) = value else {
        return Err(IntProblem::NotNumber);
    };
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    if n.as_u64().is_some() {
        return Err(IntProblem::TooLarge);
    }
    let f = n.as_f64().ok_or(IntProblem::NotNumber)?;
    integral(f)
}

fn integral(f: f64) -> Result<i64, IntProblem> {
    if !f.is_finite() {
        return Err(IntProblem::NotNumber);
    }
    if f.fract() != 0.0 {
        return Err(IntProblem::Fractional);
    }
    if f.abs() > MAX_EXACT_FLOAT {
        return Err(IntProblem::TooLarge);
    }
    // Exact: integral and within ±2^53.
    Ok(f as i64)
}

/// A count (non-negative integer) at `path`, or an issue: `non_negative_integer` for a wrong type,
/// fraction or negative number, `count_range` for a number too large to be a count.
pub(super) fn count(value: &Value, path: &str, out: &mut Report) -> Option<u64> {
    match read_u64(value) {
        Ok(n) => Some(n),
        Err(problem) => {
            count_problem(problem, value, path, out);
            None
        }
    }
}

fn count_problem(problem: IntProblem, value: &Value, path: &str, out: &mut Report) {
    let who = subject(path);
    let (rule, message) = match problem {
        IntProblem::NotNumber => (
            "non_negative_integer",
            format!("{who} must be a non-negative integer, found {}", kind(value)),
        ),
        IntProblem::Fractional => (
            "non_negative_integer",
            format!("{who} must be a whole number, found a fraction"),
        ),
        IntProblem::Negative => ("non_negative_integer", format!("{who} must not be negative")),
        IntProblem::TooLarge => ("count_range", format!("{who} is too large to be a count")),
    };
    out.error(path, rule, message);
}

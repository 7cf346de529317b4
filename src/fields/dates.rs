//! Calendar dates: `wedding_date` (with weekday, season and past check) and the generic `date`.
//!
//! Input is a strict ISO `YYYY-MM-DD` string (surrounding spaces trimmed); anything looser (times, time
//! zones, one-digit months) is rejected because it could silently move the wedding by a day. A date must
//! exist in the proleptic Gregorian calendar: 29 February only in leap years.

use chrono::{Datelike, NaiveDate, Weekday};
use serde_json::{json, Value};

use super::report::{subject, Report};
use super::{PastDatePolicy, Rules};

/// `{"date", "weekday", "season", "in_past"}`.
pub(super) fn wedding_date(value: &Value, rules: &Rules, out: &mut Report) -> Option<Value> {
    let date = read_date(value, "", out)?;
    let in_past = date < rules.today;
    if in_past {
        let message = "the wedding date is before today".to_owned();
        match rules.past_wedding_date {
            PastDatePolicy::Allow => {}
            PastDatePolicy::Warn => out.warn("", "past_date", message),
            PastDatePolicy::Error => {
                out.error("", "past_date", message);
                return None;
            }
        }
    }
    Some(json!({
        "date": iso(date),
        "weekday": weekday(date.weekday()),
        "season": season(date.month()),
        "in_past": in_past,
    }))
}

/// The generic `date` type: the same strict ISO date, normalised to `YYYY-MM-DD`.
pub(super) fn date(value: &Value, out: &mut Report) -> Option<Value> {
    read_date(value, "", out).map(|d| Value::String(iso(d)))
}

/// A strict ISO date at `path`, or an issue (`type` for a non-string, `iso_date` otherwise).
pub(super) fn read_date(value: &Value, path: &str, out: &mut Report) -> Option<NaiveDate> {
    let Value::String(text) = value else {
        out.wrong_type(path, "an ISO date string (YYYY-MM-DD)", value);
        return None;
    };
    match parse_iso_date(text.trim()) {
        Ok(date) => Some(date),
        Err(DateProblem::Format) => {
            out.error(
                path,
                "iso_date",
                format!("{} must be an ISO date written YYYY-MM-DD", subject(path)),
            );
            None
        }
        Err(DateProblem::NoSuchDay) => {
            out.error(
                path,
                "iso_date",
                format!(
                    "{} is not a day of the calendar (29 February exists only in leap years)",
                    subject(path)
                ),
            );
            None
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum DateProblem {
    Format,
    NoSuchDay,
}

fn parse_iso_date(text: &str) -> Result<NaiveDate, DateProblem> {
    let b = text.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(DateProblem::Format);
    }
    let num = |range: std::ops::Range<usize>| -> u32 {
        b[range]
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    if year == 0 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(DateProblem::Format);
    }
    let year = i32::try_from(year).map_err(|_| DateProblem::Format)?;
    NaiveDate::from_ymd_opt(year, month, day).ok_or(DateProblem::NoSuchDay)
}

fn iso(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}

fn weekday(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

/// Northern hemisphere meteorological seasons.
fn season(month: u32) -> &'static str {
    match month {
        3..=5 => "spring",
        6..=8 => "summer",
        9..=11 => "autumn",
        _ => "winter",
    }
}

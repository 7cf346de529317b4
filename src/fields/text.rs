//! What arrives from PostgreSQL as text, read without losing anything silently: a jsonb value, and
//! the wedding context (date and time zone) that travels with every event.
//!
//! A jsonb value that `serde_json` cannot hold exactly is an issue, never a quiet change: nesting
//! deeper than [`MAX_DEPTH`] (`json_depth`), a number outside what a 64-bit integer or a double holds
//! (`number_range`, including `1e-400`, which a double would round to 0), or one with more
//! significant digits than a double keeps (`number_precision`). Text that is not JSON at all comes
//! from a text column and is read as a string.
//!
//! The wedding's date must be a calendar day written `YYYY-MM-DD` between [`MIN_YEAR`] and
//! [`MAX_YEAR`] (PostgreSQL's `infinity` and years BC are not), and its time zone an IANA name.
//! Issues name the path and the rule, never the value.

use std::str::FromStr;

use serde_json::Value;

use super::Issue;

/// The deepest nesting a value may have (serde_json's own limit).
pub const MAX_DEPTH: usize = 128;
/// A double keeps 15 to 17 significant decimal digits; more cannot round-trip.
const MAX_SIGNIFICANT_DIGITS: usize = 17;
pub const MIN_YEAR: i32 = 1900;
pub const MAX_YEAR: i32 = 2199;

/// A jsonb value's text: `Ok(value)`, `Err(None)` when it is not JSON (a text column: the caller
/// keeps it as a string), or `Err(Some(issue))` when it is JSON that cannot be held exactly.
pub fn read_json(text: &str) -> Result<Value, Option<Issue>> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => match lossy_number(text) {
            Some(issue) => Err(Some(issue)),
            None => Ok(value),
        },
        Err(e) => {
            let message = e.to_string();
            if message.starts_with("recursion limit exceeded") {
                Err(Some(issue(
                    "json_depth",
                    format!("the value is nested deeper than {MAX_DEPTH} levels"),
                )))
            } else if message.starts_with("number out of range") {
                Err(Some(range_issue()))
            } else {
                Err(None)
            }
        }
    }
}

fn issue(rule: &'static str, message: String) -> Issue {
    Issue {
        path: String::new(),
        rule,
        message,
    }
}

fn range_issue() -> Issue {
    issue(
        "number_range",
        "a number of the value is outside what a 64-bit integer or a double can hold".to_owned(),
    )
}

/// The first number of a JSON text that a `Value` would not hold exactly.
fn lossy_number(text: &str) -> Option<Issue> {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                if let Some(issue) = lossy(&text[start..i]) {
                    return Some(issue);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn lossy(token: &str) -> Option<Issue> {
    let mantissa = token.split(['e', 'E']).next().unwrap_or_default();
    let is_integer = mantissa.len() == token.len() && !token.contains('.');
    if is_integer {
        return (token.parse::<i64>().is_err() && token.parse::<u64>().is_err()).then(range_issue);
    }
    let parsed: f64 = token.parse().ok()?;
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if parsed.is_infinite() || (parsed == 0.0 && !significant.is_empty()) {
        return Some(range_issue());
    }
    (significant.len() > MAX_SIGNIFICANT_DIGITS).then(|| {
        issue(
            "number_precision",
            format!("a number of the value has more than {MAX_SIGNIFICANT_DIGITS} significant digits, more than a double keeps"),
        )
    })
}

/// Issues of a wedding's context as PostgreSQL gives it (`wedding.wedding_date`,
/// `wedding.timezone`); empty when it is fine or unknown.
pub fn context_issues(date: Option<&str>, timezone: Option<&str>) -> Vec<Issue> {
    let mut out = Vec::new();
    if let Some(date) = date {
        let year = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .filter(|_| date.len() == 10)
            .map(|d| chrono::Datelike::year(&d));
        if !year.is_some_and(|y| (MIN_YEAR..=MAX_YEAR).contains(&y)) {
            out.push(Issue {
                path: "wedding.wedding_date".to_owned(),
                rule: "wedding_date_range",
                message: format!(
                    "the wedding's date must be a day written YYYY-MM-DD between {MIN_YEAR} and {MAX_YEAR}"
                ),
            });
        }
    }
    if let Some(tz) = timezone {
        if chrono_tz::Tz::from_str(tz).is_err() {
            out.push(Issue {
                path: "wedding.timezone".to_owned(),
                rule: "iana_time_zone",
                message: "the wedding's time zone must be an IANA name such as Europe/London".to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Option<&'static str> {
        match read_json(text) {
            Ok(_) => None,
            Err(None) => Some("not json"),
            Err(Some(i)) => Some(i.rule),
        }
    }

    #[test]
    fn values_a_double_or_an_integer_holds_exactly_are_read() {
        for text in [
            "{\"adults\": 120}",
            "-9223372036854775808",
            "18446744073709551615",
            "0.1",
            "1e300",
            "1.5e-300",
            "0.000",
            "-0",
            "12345678901234567",
            "\"1e400 in a string is text\"",
            "[\"\\\"\", 3]",
        ] {
            assert_eq!(rule(text), None, "{text}");
        }
    }

    #[test]
    fn values_that_would_change_silently_are_issues_that_name_the_rule() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(rule(&deep), Some("json_depth"));
        assert_eq!(rule("{\"n\": 1e400}"), Some("number_range"));
        assert_eq!(rule("{\"n\": 1e-400}"), Some("number_range"));
        assert_eq!(rule("123456789012345678901234567890"), Some("number_range"));
        assert_eq!(rule("{\"n\": 3.14159265358979323846}"), Some("number_precision"));
        assert_eq!(rule("{\"adults\": 12"), Some("not json"));
        let i = read_json("{\"secret\": 1e400}").unwrap_err().unwrap();
        assert!(!i.message.contains("1e400"), "{}", i.message);
    }

    #[test]
    fn wedding_context_needs_a_sane_date_and_an_iana_time_zone() {
        assert!(context_issues(Some("2027-06-19"), Some("Europe/London")).is_empty());
        assert!(context_issues(None, None).is_empty());
        assert!(context_issues(Some("2027-06-19"), Some("UTC")).is_empty());
        for date in [
            "infinity",
            "-infinity",
            "0044-03-15 BC",
            "1850-01-01",
            "2300-01-01",
            "27-06-19",
            "2027-6-19",
        ] {
            let got = context_issues(Some(date), None);
            assert_eq!(got.len(), 1, "{date}");
            assert_eq!(got[0].rule, "wedding_date_range");
        }
        for tz in ["Mars/Olympus_Mons", "+99:99", "", "europe/london "] {
            let got = context_issues(None, Some(tz));
            assert_eq!(
                got.iter().map(|i| i.rule).collect::<Vec<_>>(),
                ["iana_time_zone"],
                "{tz:?}"
            );
        }
    }
}

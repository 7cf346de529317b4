//! Generic form fields: `text`, `select`, `number`, `checkbox`, `email`, `phone`.
//!
//! Text and select answers are kept byte for byte (a couple's wording is theirs). Email and phone are
//! normalised so that CRMs can match contacts: email trimmed with a lower-case domain, phone in E.164.

use serde_json::Value;

use super::report::Report;

/// `text` and `select`: any string, unchanged.
pub(super) fn string(value: &Value, out: &mut Report) -> Option<Value> {
    match value {
        Value::String(_) => Some(value.clone()),
        other => {
            out.wrong_type("", "a string", other);
            None
        }
    }
}

/// `number`: a finite JSON number, unchanged.
pub(super) fn number(value: &Value, out: &mut Report) -> Option<Value> {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Some(value.clone()),
        Value::Number(_) => {
            out.error(
                "",
                "finite_number",
                "the value must be a finite number".to_owned(),
            );
            None
        }
        other => {
            out.wrong_type("", "a number", other);
            None
        }
    }
}

/// `checkbox`: a boolean.
pub(super) fn checkbox(value: &Value, out: &mut Report) -> Option<Value> {
    match value {
        Value::Bool(_) => Some(value.clone()),
        other => {
            out.wrong_type("", "a boolean", other);
            None
        }
    }
}

/// `email`: trimmed, domain lower-cased, basic syntax.
pub(super) fn email(value: &Value, out: &mut Report) -> Option<Value> {
    let Value::String(text) = value else {
        out.wrong_type("", "an email address string", value);
        return None;
    };
    match normalize_email(text) {
        Some(address) => Some(Value::String(address)),
        None => {
            out.error(
                "",
                "email_syntax",
                "the value must be an email address: one @, a local part and a domain with a dot".to_owned(),
            );
            None
        }
    }
}

/// Longest address SMTP can carry (RFC 5321 path limit less the angle brackets).
const MAX_EMAIL_LEN: usize = 254;

fn normalize_email(text: &str) -> Option<String> {
    let text = text.trim();
    if text.len() > MAX_EMAIL_LEN || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = text.split_once('@')?;
    if local.is_empty() || domain.contains('@') || !domain.contains('.') {
        return None;
    }
    if domain.split('.').any(str::is_empty) {
        return None; // leading, trailing or doubled dot
    }
    Some(format!("{local}@{}", domain.to_lowercase()))
}

/// `phone`: E.164.
pub(super) fn phone(value: &Value, out: &mut Report) -> Option<Value> {
    let Value::String(text) = value else {
        out.wrong_type("", "a phone number string", value);
        return None;
    };
    match e164(text) {
        Ok(number) => Some(Value::String(number)),
        Err(PhoneProblem::NoInternationalPrefix) => {
            out.error(
                "",
                "e164_phone",
                "the phone number must start with + or 00 and a country code".to_owned(),
            );
            None
        }
        Err(PhoneProblem::Digits) => {
            out.error(
                "",
                "e164_phone",
                "the phone number must have 8 to 15 digits after the prefix, the first not 0".to_owned(),
            );
            None
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum PhoneProblem {
    NoInternationalPrefix,
    Digits,
}

/// `+` and 8–15 digits, after removing spaces, dashes and parentheses and turning `00` into `+`.
pub(super) fn e164(text: &str) -> Result<String, PhoneProblem> {
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '-' | '(' | ')'))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))
        .ok_or(PhoneProblem::NoInternationalPrefix)?;
    let all_digits = digits.bytes().all(|b| b.is_ascii_digit());
    if !all_digits || !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(PhoneProblem::Digits);
    }
    Ok(format!("+{digits}"))
}

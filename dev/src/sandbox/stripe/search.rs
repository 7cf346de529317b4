//! The part of Stripe's search query language the customer search needs: clauses
//! `metadata['key']:'value'`, `email:'…'`, `name:'…'`, `phone:'…'`, `description:'…'` (exact
//! match) and `email~'…'`, `name~'…'`, `phone~'…'` (substring, at least 3 characters), with
//! `\'` escaping a quote in a value, joined by `AND` or by `OR` (never both in one query, as
//! Stripe requires). Other forms are refused with the reason.
//!
//! Assumptions [G]: exact matches are case-sensitive, substring matches are not.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Field {
    Metadata(String),
    Plain(&'static str),
}

#[derive(Debug, PartialEq)]
struct Clause {
    field: Field,
    substring: bool,
    value: String,
}

/// A parsed query: its clauses and whether they are OR-ed (else AND-ed).
#[derive(Debug, PartialEq)]
pub(super) struct Query {
    clauses: Vec<Clause>,
    any: bool,
}

const FIELDS: &[&str] = &["email", "name", "phone", "description"];
const SUBSTRING_FIELDS: &[&str] = &["email", "name", "phone"];

/// A quoted value at the start of `s`: the value and the rest after its closing quote.
fn quoted(s: &str) -> Result<(String, &str), String> {
    let body = s
        .strip_prefix('\'')
        .ok_or_else(|| format!("a value must be quoted with ' at: {s}"))?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => value.push(e),
                None => break,
            },
            '\'' => return Ok((value, &body[i + 1..])),
            c => value.push(c),
        }
    }
    Err(format!("unterminated value: {s}"))
}

fn clause(s: &str) -> Result<(Clause, &str), String> {
    let (field, rest) = if let Some(rest) = s.strip_prefix("metadata[") {
        let (key, rest) = quoted(rest)?;
        let rest = rest
            .strip_prefix(']')
            .ok_or_else(|| format!("']' expected after the metadata key {key:?}"))?;
        (Field::Metadata(key), rest)
    } else {
        let end = s
            .find([':', '~'])
            .ok_or_else(|| format!("':' or '~' expected in: {s}"))?;
        let name = &s[..end];
        let field = FIELDS
            .iter()
            .find(|f| **f == name)
            .ok_or_else(|| format!("customers cannot be searched by {name:?} here"))?;
        (Field::Plain(field), &s[end..])
    };
    let substring = rest.starts_with('~');
    let rest = rest
        .strip_prefix([':', '~'])
        .ok_or_else(|| "':' or '~' expected after the field".to_owned())?;
    let (value, rest) = quoted(rest)?;
    if substring {
        let ok = matches!(&field, Field::Plain(f) if SUBSTRING_FIELDS.contains(f));
        if !ok {
            return Err("'~' (substring) is for email, name and phone".into());
        }
        if value.chars().count() < 3 {
            return Err("a substring search needs at least 3 characters".into());
        }
    }
    Ok((
        Clause {
            field,
            substring,
            value,
        },
        rest,
    ))
}

impl Query {
    pub(super) fn parse(text: &str) -> Result<Query, String> {
        let mut rest = text.trim();
        let mut clauses = Vec::new();
        let mut joiners = Vec::new();
        loop {
            let (c, after) = clause(rest)?;
            clauses.push(c);
            rest = after.trim_start();
            if rest.is_empty() {
                break;
            }
            let (word, after) = rest.split_once(' ').unwrap_or((rest, ""));
            match word {
                "AND" | "OR" => joiners.push(word),
                _ => return Err(format!("AND or OR expected at: {rest}")),
            }
            rest = after.trim_start();
        }
        if joiners.contains(&"AND") && joiners.contains(&"OR") {
            return Err("a query cannot combine AND and OR".into());
        }
        Ok(Query {
            clauses,
            any: joiners.contains(&"OR"),
        })
    }

    pub(super) fn matches(&self, customer: &Value) -> bool {
        let hit = |c: &Clause| {
            let have = match &c.field {
                Field::Metadata(k) => customer["metadata"][k.as_str()].as_str(),
                Field::Plain(f) => customer[*f].as_str(),
            };
            match have {
                None => false,
                Some(h) if c.substring => h.to_lowercase().contains(&c.value.to_lowercase()),
                Some(h) => h == c.value,
            }
        };
        if self.any {
            self.clauses.iter().any(hit)
        } else {
            self.clauses.iter().all(hit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stripe_search_queries_parse_escapes_and_joiners() {
        let c = json!({"email": "amara@example.com", "name": "Amara O'Neil",
            "metadata": {"wedding": "w'1", "venue": "kew"}});
        let yes = |q: &str| Query::parse(q).unwrap().matches(&c);
        assert!(yes(r"metadata['wedding']:'w\'1'"));
        assert!(yes("email:'amara@example.com' AND metadata['venue']:'kew'"));
        assert!(!yes("email:'amara@example.com' AND metadata['venue']:'syon'"));
        assert!(yes("metadata['venue']:'syon' OR name~'o\\'neil'"));
        assert!(Query::parse("email:'a' AND name:'b' OR phone:'c'").is_err());
        assert!(Query::parse("email~'am'").is_err());
        assert!(Query::parse("balance:'0'").is_err());
        assert!(Query::parse("metadata['k']:'unterminated").is_err());
    }
}

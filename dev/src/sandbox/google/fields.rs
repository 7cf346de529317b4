//! Partial responses: the `fields` system parameter every method of the discovery document takes
//! (`fields=id,etag`, `fields=items(id,start/dateTime),nextPageToken`, `*` for every member).
//! A selection applies to each element of an array; members that are absent stay absent.
//! A selector that does not parse is a 400 `invalidParameter` naming `fields` [G: wording].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// What to keep of an object: per member, everything (`None`) or a sub-selection.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Selection(BTreeMap<String, Option<Selection>>);

impl Selection {
    pub(super) fn parse(text: &str) -> Result<Selection, String> {
        let chars: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut at = 0;
        let s = list(&chars, &mut at)?;
        if at != chars.len() {
            return Err(format!("unexpected {:?} at {at}", chars[at]));
        }
        Ok(s)
    }

    fn add(&mut self, name: String, sub: Option<Selection>) {
        match (self.0.get_mut(&name), sub) {
            (Some(Some(have)), Some(more)) => {
                for (k, v) in more.0 {
                    have.add(k, v);
                }
            }
            (Some(slot), None) => *slot = None,
            (Some(None), Some(_)) => {}
            (None, sub) => {
                self.0.insert(name, sub);
            }
        }
    }

    pub(super) fn apply(&self, v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(items.iter().map(|i| self.apply(i)).collect()),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    let sub = match (self.0.get(k), self.0.get("*")) {
                        (Some(sub), _) | (None, Some(sub)) => sub,
                        (None, None) => continue,
                    };
                    out.insert(k.clone(), sub.as_ref().map_or_else(|| x.clone(), |s| s.apply(x)));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }
}

fn list(chars: &[char], at: &mut usize) -> Result<Selection, String> {
    let mut s = Selection::default();
    loop {
        let (name, sub) = item(chars, at)?;
        s.add(name, sub);
        if chars.get(*at) == Some(&',') {
            *at += 1;
        } else {
            return Ok(s);
        }
    }
}

fn item(chars: &[char], at: &mut usize) -> Result<(String, Option<Selection>), String> {
    let start = *at;
    while chars
        .get(*at)
        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '-' | '.' | '@'))
    {
        *at += 1;
    }
    if *at == start {
        return Err(format!("a field name is missing at {start}"));
    }
    let name: String = chars[start..*at].iter().collect();
    match chars.get(*at) {
        Some('/') => {
            *at += 1;
            let (inner, sub) = item(chars, at)?;
            let mut s = Selection::default();
            s.add(inner, sub);
            Ok((name, Some(s)))
        }
        Some('(') => {
            *at += 1;
            let s = list(chars, at)?;
            if chars.get(*at) != Some(&')') {
                return Err(format!("')' is missing at {}", *at));
            }
            *at += 1;
            Ok((name, Some(s)))
        }
        _ => Ok((name, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn google_fields_select_members_paths_and_array_elements() {
        let v = json!({"kind": "k", "items": [{"id": "a", "start": {"dateTime": "t", "timeZone": "z"}, "x": 1}],
            "nextSyncToken": "s"});
        let s = Selection::parse("items(id,start/dateTime),nextSyncToken").unwrap();
        assert_eq!(
            s.apply(&v),
            json!({"items": [{"id": "a", "start": {"dateTime": "t"}}], "nextSyncToken": "s"})
        );
        assert_eq!(Selection::parse("*").unwrap().apply(&v), v);
        assert_eq!(
            Selection::parse("items/id,items").unwrap().apply(&v)["items"],
            v["items"]
        );
        assert!(Selection::parse("items(id").is_err());
        assert!(Selection::parse("a,,b").is_err());
    }
}

//! Contract checks against the vendors' own machine-readable specs, read at test time and never
//! copied into the project. A checker takes one sandbox exchange and lists where the request or
//! the answer departs from the spec: an undeclared path, method or query parameter, a body that
//! does not match its schema, a read-only property sent.
//!
//! Where the documents come from:
//! - Google Calendar v3's discovery document ships inside `google-api-python-client`, which the
//!   test command installs (`scripts/python-clients.sh`); `$FIELDSYNC_API_SPECS` and
//!   `../shared/api-specs/` are looked in first.
//! - The VSCO Workspace OpenAPI document is the vendor's published `openapi.json` and is in no
//!   package: it is read from `$FIELDSYNC_API_SPECS`, else `../shared/api-specs/`. Without it the
//!   VSCO conformance checks do not run and say so on stderr (`scripts/test.sh` says it too);
//!   with `FIELDSYNC_REQUIRE_API_SPECS=1` (CI) a missing document fails the test instead.
//!
//! Schemas are checked for what matters to a client: types, required and unknown properties,
//! enums, lengths, numeric bounds, date formats; `nullable`, `$ref`, `allOf`, `oneOf`/`anyOf`.

use std::path::PathBuf;

use fieldsync_dev::sandbox::Exchange;
use serde_json::Value;

/// Where the VSCO document can be had, for the message when it is missing.
const VSCO_SOURCE: &str = "the \"VSCO Workspace API\" OpenAPI document (openapi.json) published with the \
     vendor's API reference, saved as vsco-workspace-v2.openapi.json in the directory named by \
     $FIELDSYNC_API_SPECS";

/// The directories a vendor document is looked for in, in order.
fn spec_dirs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::env::var_os("FIELDSYNC_API_SPECS")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.push(root.join("../shared/api-specs"));
    dirs
}

/// The first of `candidates` that exists, parsed.
fn load(candidates: &[PathBuf]) -> Option<Value> {
    let path = candidates.iter().find(|p| p.is_file())?;
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the vendor spec {} cannot be read ({e})", path.display()));
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("the vendor spec {} is not JSON ({e})", path.display())),
    )
}

/// A missing document: loud on stderr, or a failure where every check must run.
fn missing(what: &str, source: &str) {
    let message = format!(
        "VENDOR SPEC MISSING: the {what} conformance checks did not run. Looked in {:?}. Get {source}.",
        spec_dirs()
    );
    if std::env::var_os("FIELDSYNC_REQUIRE_API_SPECS").is_some_and(|v| v == "1") {
        panic!("{message}");
    }
    eprintln!("{message}");
}

fn body_json(bytes: &[u8]) -> Option<Result<Value, String>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(serde_json::from_slice(bytes).map_err(|e| format!("body is not JSON ({e})")))
}

fn query_names(e: &Exchange) -> Vec<String> {
    e.query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('=').next().unwrap_or("").to_owned())
        .collect()
}

/// Which template of `templates` matches `path` best (most literal segments).
fn match_template<'a>(templates: impl Iterator<Item = &'a str>, path: &str) -> Option<&'a str> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    templates
        .filter_map(|t| {
            let tparts: Vec<&str> = t.trim_matches('/').split('/').collect();
            if tparts.len() != parts.len() {
                return None;
            }
            let mut literal = 0;
            for (tp, p) in tparts.iter().zip(&parts) {
                if tp.starts_with('{') {
                    continue;
                }
                if tp != p {
                    return None;
                }
                literal += 1;
            }
            Some((literal, t))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, t)| t)
}

fn date_like(s: &str, with_time: bool) -> bool {
    let b = s.as_bytes();
    let date = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !with_time {
        return date && b.len() == 10;
    }
    date && b.len() >= 19 && b[10] == b'T' && b[13] == b':' && b[16] == b':'
}

/// Direction of a body: requests must not carry read-only properties.
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Request,
    Response,
}

// ---- OpenAPI 3.0 (VSCO Workspace) ------------------------------------------------------------

pub struct OpenApi {
    doc: Value,
    /// The base path of the API below the sandbox prefix (`/api/v2`).
    base: &'static str,
}

/// The VSCO Workspace (Tave) API v2 spec; `None` (said on stderr) when it is not on this machine.
pub fn vsco() -> Option<OpenApi> {
    let file = "vsco-workspace-v2.openapi.json";
    let found = load(&spec_dirs().into_iter().map(|d| d.join(file)).collect::<Vec<_>>());
    if found.is_none() {
        missing("VSCO Workspace (Tave)", VSCO_SOURCE);
    }
    Some(OpenApi {
        doc: found?,
        base: "/api/v2",
    })
}

impl OpenApi {
    fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            let mut at = &self.doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            v = at;
        }
        v
    }

    /// Violations of one exchange; exchanges outside the spec's paths (the New Lead API) and
    /// injected faults have none.
    pub fn check(&self, e: &Exchange) -> Vec<String> {
        let mut out = Vec::new();
        let Some(path) = e.path.strip_prefix(self.base) else {
            return out;
        };
        if e.injected {
            return out;
        }
        let paths = self.doc["paths"].as_object().expect("paths");
        let Some(template) = match_template(paths.keys().map(String::as_str), path) else {
            out.push(format!("{} {path}: no such path in the spec", e.method));
            return out;
        };
        let here = format!("{} {template}", e.method);
        let Some(op) = paths[template].get(e.method.to_lowercase()) else {
            out.push(format!("{here}: method not in the spec"));
            return out;
        };
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(paths[template]["parameters"].as_array().into_iter().flatten())
            .map(|p| self.resolve(p))
            .collect();
        for name in query_names(e) {
            if !params
                .iter()
                .any(|p| p["in"] == "query" && p["name"] == name.as_str())
            {
                out.push(format!("{here}: query parameter {name:?} is not declared"));
            }
        }
        if let Some(body) = body_json(&e.request_body) {
            match (body, op.get("requestBody")) {
                (Err(why), _) => out.push(format!("{here} request: {why}")),
                (Ok(_), None) => out.push(format!("{here}: sends a body the spec does not take")),
                (Ok(v), Some(rb)) => {
                    let schema = &self.resolve(rb)["content"]["application/json"]["schema"];
                    self.validate(schema, &v, "request", Dir::Request, &mut out);
                }
            }
        }
        let status = e.status.to_string();
        match op["responses"]
            .get(&status)
            .or_else(|| op["responses"].get("default"))
        {
            None if (200..300).contains(&e.status) => {
                out.push(format!("{here}: status {status} is not declared"))
            }
            None => {}
            Some(r) => {
                let schema = &self.resolve(r)["content"]["application/json"]["schema"];
                match body_json(&e.response_body) {
                    Some(Ok(v)) if !schema.is_null() => {
                        self.validate(schema, &v, &format!("response {status}"), Dir::Response, &mut out)
                    }
                    Some(Err(why)) => out.push(format!("{here} response {status}: {why}")),
                    None if !schema.is_null() => out.push(format!("{here} response {status}: empty body")),
                    _ => {}
                }
            }
        }
        out.iter_mut().for_each(|v| {
            if !v.starts_with(&here) {
                *v = format!("{here} {v}");
            }
        });
        out
    }

    fn validate(&self, schema: &Value, v: &Value, at: &str, dir: Dir, out: &mut Vec<String>) {
        let s = self.resolve(schema);
        if v.is_null() {
            if s["nullable"] != true && s.get("type").is_some_and(|t| t != "null") {
                out.push(format!("{at}: null where the spec does not allow it"));
            }
            return;
        }
        if let Some(all) = s["allOf"].as_array() {
            for sub in all {
                self.validate(sub, v, at, dir, out);
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(any) = s[key].as_array() {
                let chosen = s["discriminator"]["propertyName"]
                    .as_str()
                    .and_then(|p| v.get(p)?.as_str())
                    .and_then(|tag| {
                        let mapped = s["discriminator"]["mapping"][tag].as_str();
                        any.iter().find(|o| {
                            let r = o["$ref"].as_str().unwrap_or("");
                            mapped == Some(r) || r.to_lowercase().ends_with(&format!("/{tag}"))
                        })
                    });
                let fits = |o: &Value| {
                    let mut errs = Vec::new();
                    self.validate(o, v, at, dir, &mut errs);
                    errs
                };
                match chosen {
                    Some(o) => out.extend(fits(o)),
                    None => {
                        let tries: Vec<Vec<String>> = any.iter().map(fits).collect();
                        if !tries.iter().any(Vec::is_empty) {
                            out.push(format!("{at}: matches none of {key}: {:?}", tries.first()));
                        }
                    }
                }
            }
        }
        let ty = s["type"].as_str();
        let ok = match (ty, v) {
            (None, _) => true,
            (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
            (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
            (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
            (Some("number"), Value::Number(_)) => true,
            _ => false,
        };
        if !ok {
            out.push(format!("{at}: expected {}, got {v}", ty.unwrap_or("?")));
            return;
        }
        if let Some(e) = s["enum"].as_array() {
            if !e.contains(v) {
                out.push(format!("{at}: {v} is not one of {e:?}"));
            }
        }
        match v {
            Value::String(text) => {
                let n = text.chars().count() as u64;
                if s["maxLength"].as_u64().is_some_and(|m| n > m)
                    || s["minLength"].as_u64().is_some_and(|m| n < m)
                {
                    out.push(format!("{at}: length {n} outside the spec's bounds"));
                }
                match s["format"].as_str() {
                    Some("date") if !date_like(text, false) => {
                        out.push(format!("{at}: {text:?} is not a date"))
                    }
                    Some("date-time") if !date_like(text, true) => {
                        out.push(format!("{at}: {text:?} is not a date-time"))
                    }
                    _ => {}
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                if s["minimum"].as_f64().is_some_and(|m| x < m)
                    || s["maximum"].as_f64().is_some_and(|m| x > m)
                {
                    out.push(format!("{at}: {x} outside the spec's bounds"));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.validate(&s["items"], item, &format!("{at}[{i}]"), dir, out);
                }
            }
            Value::Object(map) => {
                let props = s["properties"].as_object();
                if dir == Dir::Response {
                    for r in s["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if !map.contains_key(r) {
                            out.push(format!("{at}: required property {r:?} is missing"));
                        }
                    }
                } else {
                    for r in s["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        let read_only = props
                            .and_then(|p| p.get(r))
                            .is_some_and(|p| self.resolve(p)["readOnly"] == true);
                        if !map.contains_key(r) && !read_only {
                            out.push(format!("{at}: required property {r:?} is missing"));
                        }
                    }
                }
                for (k, item) in map {
                    let here = format!("{at}.{k}");
                    match props.and_then(|p| p.get(k)) {
                        Some(p) => {
                            // a property both required and read-only (through a shared id
                            // schema, like JobContact.jobId) is one the request must carry
                            let required = s["required"]
                                .as_array()
                                .is_some_and(|r| r.iter().any(|n| n == k.as_str()));
                            if dir == Dir::Request && self.resolve(p)["readOnly"] == true && !required {
                                out.push(format!("{here}: read-only property sent"));
                            }
                            self.validate(p, item, &here, dir, out);
                        }
                        None => match &s["additionalProperties"] {
                            Value::Bool(false) => out.push(format!("{here}: property not in the spec")),
                            extra @ Value::Object(_) => self.validate(extra, item, &here, dir, out),
                            _ => {}
                        },
                    }
                }
            }
            _ => {}
        }
    }
}

// ---- Google discovery document (Calendar v3) -------------------------------------------------

pub struct Discovery {
    doc: Value,
}

/// Where the Google Calendar API v3 discovery document is: `$FIELDSYNC_API_SPECS`,
/// `../shared/api-specs/`, else the copy google-api-python-client carries (always at hand once the
/// test command has made its virtualenv).
pub fn google_discovery_file() -> PathBuf {
    let mut candidates: Vec<PathBuf> = spec_dirs()
        .into_iter()
        .map(|d| d.join("google-calendar-v3.discovery.json"))
        .collect();
    let venv = std::env::var_os("FIELDSYNC_CLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-clients"));
    if let Ok(libs) = std::fs::read_dir(venv.join("lib")) {
        for python in libs.flatten() {
            candidates.push(
                python
                    .path()
                    .join("site-packages/googleapiclient/discovery_cache/documents/calendar.v3.json"),
            );
        }
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the Google Calendar discovery document is in none of {:?} nor in the client library's \
             virtualenv: run scripts/python-clients.sh (google-api-python-client carries it)",
            spec_dirs()
        )
    })
}

/// The Google Calendar API v3 discovery document.
pub fn google() -> Discovery {
    let doc = load(&[google_discovery_file()]).expect("the file was just found");
    Discovery { doc }
}

impl Discovery {
    /// Violations of one exchange with the calendar API (the token endpoint is not in the
    /// discovery document and has none). Error answers are not described by the document.
    pub fn check(&self, e: &Exchange) -> Vec<String> {
        let mut out = Vec::new();
        let Some(path) = e.path.strip_prefix("/calendar/v3/") else {
            return out;
        };
        if e.injected {
            return out;
        }
        let methods: Vec<&Value> = self.doc["resources"]
            .as_object()
            .expect("resources")
            .values()
            .flat_map(|r| r["methods"].as_object().into_iter().flat_map(|m| m.values()))
            .filter(|m| m["httpMethod"] == e.method.as_str())
            .collect();
        let Some(template) = match_template(methods.iter().filter_map(|m| m["path"].as_str()), path) else {
            out.push(format!(
                "{} {path}: no such method in the discovery document",
                e.method
            ));
            return out;
        };
        let m = methods.iter().find(|m| m["path"] == template).expect("matched");
        let here = m["id"].as_str().unwrap_or(template).to_owned();
        for name in query_names(e) {
            if m["parameters"][&name]["location"] != "query" && self.doc["parameters"].get(&name).is_none() {
                out.push(format!("{here}: query parameter {name:?} is not declared"));
            }
        }
        if let Some(body) = body_json(&e.request_body) {
            match (body, m["request"]["$ref"].as_str()) {
                (Err(why), _) => out.push(format!("{here} request: {why}")),
                (Ok(_), None) => out.push(format!("{here}: sends a body the method does not take")),
                (Ok(v), Some(r)) => self.validate(
                    &serde_json::json!({"$ref": r}),
                    &v,
                    &format!("{here} request"),
                    &mut out,
                ),
            }
        }
        if (200..300).contains(&e.status) {
            match (body_json(&e.response_body), m["response"]["$ref"].as_str()) {
                (Some(Err(why)), _) => out.push(format!("{here} response: {why}")),
                (Some(Ok(v)), Some(r)) => self.validate(
                    &serde_json::json!({"$ref": r}),
                    &v,
                    &format!("{here} response"),
                    &mut out,
                ),
                (None, Some(_)) => out.push(format!("{here} response {}: empty body", e.status)),
                _ => {}
            }
        }
        out
    }

    fn validate(&self, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
        let s = match schema["$ref"].as_str() {
            Some(r) => &self.doc["schemas"][r],
            None => schema,
        };
        if v.is_null() {
            return; // PATCH uses null to delete; the document has no nullability
        }
        let ty = s["type"].as_str();
        let int64 = s["format"] == "int64" || s["format"] == "uint64";
        let ok = match (ty, v) {
            (None | Some("any"), _) => true,
            (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
            (Some("boolean"), Value::Bool(_)) => true,
            (Some("string"), Value::String(_)) => true,
            (Some("string"), Value::Number(_)) => false,
            (Some("integer"), Value::Number(n)) => !int64 && (n.is_i64() || n.is_u64()),
            (Some("integer"), Value::String(t)) => int64 && t.parse::<i64>().is_ok(),
            (Some("number"), Value::Number(_)) => true,
            _ => false,
        };
        if !ok {
            out.push(format!(
                "{at}: expected {}{}, got {v}",
                ty.unwrap_or("?"),
                if int64 { " (int64 as string)" } else { "" }
            ));
            return;
        }
        if let (Some(e), Value::String(text)) = (s["enum"].as_array(), v) {
            if !e.iter().any(|x| x == text) {
                out.push(format!("{at}: {text:?} is not one of {e:?}"));
            }
        }
        match v {
            Value::String(text) => match s["format"].as_str() {
                Some("date") if !date_like(text, false) => out.push(format!("{at}: {text:?} is not a date")),
                Some("date-time") if !date_like(text, true) => {
                    out.push(format!("{at}: {text:?} is not a date-time"))
                }
                _ => {}
            },
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.validate(&s["items"], item, &format!("{at}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let here = format!("{at}.{k}");
                    match s["properties"].get(k) {
                        Some(p) => self.validate(p, item, &here, out),
                        None if s["additionalProperties"].is_object() => {
                            self.validate(&s["additionalProperties"], item, &here, out)
                        }
                        None => out.push(format!(
                            "{here}: property not in the document (the API answers 400 for unknown names)"
                        )),
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn the_checkers_catch_what_they_claim_to() {
    google_checker_catches_what_it_claims_to();
    let Some(spec) = vsco() else {
        return;
    };
    let mut out = Vec::new();
    let job = serde_json::json!({"eventDate": "19/06/2027", "guestCount": "many", "customFields": [{"value": "1"}], "id": "01h35ccwymj5ctckp8px1azhg6", "surprise": 1});
    spec.validate(
        &serde_json::json!({"$ref": "#/components/schemas/Job"}),
        &job,
        "job",
        Dir::Request,
        &mut out,
    );
    let text = out.join("\n");
    for want in ["eventDate", "guestCount", "fieldId", "read-only property sent"] {
        assert!(text.contains(want), "{want} not flagged in:\n{text}");
    }
    let good = serde_json::json!({"eventDate": "2027-06-19", "guestCount": 137, "customFields": [{"fieldId": "01h35ccwymj5ctckp8px1azhg6", "value": "120"}]});
    let mut out = Vec::new();
    spec.validate(
        &serde_json::json!({"$ref": "#/components/schemas/Job"}),
        &good,
        "job",
        Dir::Request,
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
}

fn google_checker_catches_what_it_claims_to() {
    let g = google();
    let mut out = Vec::new();
    let event = serde_json::json!({"id": "abc", "start": {"dateTime": "2027-06-19T13:00:00", "timeZone": "Europe/London"}, "end": {"date": "19 June"}, "sequence": "1", "colour": "red"});
    g.validate(&serde_json::json!({"$ref": "Event"}), &event, "event", &mut out);
    let text = out.join("\n");
    for want in ["end.date", "sequence", "colour"] {
        assert!(text.contains(want), "{want} not flagged in:\n{text}");
    }
}

//! `postgres.url`: a `postgres://` URL or a libpq `key=value` string, parsed by tokio-postgres.
//!
//! tokio-postgres knows only `sslmode=disable|prefer|require` and no `sslrootcert`; we take those two
//! options out of the text first and map them to [`TlsMode`] and a CA file ourselves, so that
//! libpq-style strings with `sslmode=verify-full&sslrootcert=...` work.
//!
//! Errors never contain the text: it may hold a password.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::raw::DEFAULT_PORT;
use crate::pg::TlsMode;
use crate::secret::Secret;

/// What the connection string says; `None` where it says nothing.
#[derive(Debug)]
pub(super) struct ParsedUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret<String>>,
    pub dbname: String,
    pub sslmode: Option<TlsMode>,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
}

const FORM: &str = "use postgres://user[:password]@host[:port]/dbname or key=value pairs such as \
                    \"host=127.0.0.1 user=fieldsync dbname=app\"";

pub(super) fn parse(text: &str) -> Result<ParsedUrl, String> {
    let (rest, taken) = take_options(text, &["sslmode", "sslrootcert"]);
    let mut sslmode = None;
    let mut sslrootcert = None;
    for (key, value) in taken {
        match key {
            "sslmode" => sslmode = Some(tls_mode(&value)?),
            _ => sslrootcert = Some(PathBuf::from(value)),
        }
    }
    let cfg = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| format!("cannot parse the connection string ({}): {FORM}", describe(&e)))?;

    let tcp = cfg.get_hosts().iter().enumerate().find_map(|(i, h)| match h {
        tokio_postgres::config::Host::Tcp(name) => Some((i, name.clone())),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => None,
    });
    let (index, host) = match (tcp, cfg.get_hostaddrs().first()) {
        (Some(found), _) => found,
        (None, Some(addr)) => (0, addr.to_string()),
        (None, None) if cfg.get_hosts().is_empty() => {
            return Err(
                "names no host: add one, e.g. postgres://fieldsync@127.0.0.1:5432/postgres".to_owned(),
            )
        }
        (None, None) => {
            return Err(
                "names only unix-socket hosts: fieldsync connects over TCP, use a host name or IP \
                        address, e.g. postgres://fieldsync@127.0.0.1:5432/postgres"
                    .to_owned(),
            )
        }
    };
    let ports = cfg.get_ports();
    let port = match ports {
        [one] => *one,
        _ => ports.get(index).copied().unwrap_or(DEFAULT_PORT),
    };
    let user = cfg
        .get_user()
        .filter(|u| !u.is_empty())
        .ok_or("names no user: add one, e.g. postgres://fieldsync@127.0.0.1:5432/postgres or user=fieldsync")?
        .to_owned();
    let password = match cfg.get_password() {
        None => None,
        Some(bytes) => Some(Secret::new(
            String::from_utf8(bytes.to_vec()).map_err(|_| "the password is not valid UTF-8".to_owned())?,
        )),
    };
    let dbname = cfg
        .get_dbname()
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    Ok(ParsedUrl {
        host,
        port,
        user,
        password,
        dbname,
        sslmode,
        sslrootcert,
        connect_timeout: cfg.get_connect_timeout().copied(),
        application_name: cfg.get_application_name().map(str::to_owned),
    })
}

fn tls_mode(value: &str) -> Result<TlsMode, String> {
    match value {
        "disable" => Ok(TlsMode::Disable),
        "prefer" => Ok(TlsMode::Prefer),
        "require" => Ok(TlsMode::Require),
        "verify-full" => Ok(TlsMode::VerifyFull),
        "verify-ca" => Err(
            "sslmode=verify-ca is not supported: use sslmode=verify-full (which also checks \
                            the host name) or set postgres.tls"
                .to_owned(),
        ),
        other => Err(format!(
            "sslmode={} is not supported: use disable, prefer, require or verify-full",
            crate::secret::quoted(other)
        )),
    }
}

/// tokio-postgres's message and cause. The cause may quote one character of the text ("but got
/// `x`"), which could belong to a password: that part is cut.
fn describe(err: &tokio_postgres::Error) -> String {
    let mut message = err.to_string();
    if let Some(cause) = std::error::Error::source(err) {
        let mut cause = cause.to_string();
        if let Some(cut) = cause.find(" but got") {
            cause.truncate(cut);
        }
        message = format!("{message}: {cause}");
    }
    message
}

/// Removes the options named in `wanted` from a URL's query or a `key=value` string, returning the
/// remaining text and the removed options (values decoded). Text it cannot read is left untouched
/// for tokio-postgres to report.
fn take_options<'w>(text: &str, wanted: &[&'w str]) -> (String, Vec<(&'w str, String)>) {
    let mut taken = Vec::new();
    let lookup = |key: &str| wanted.iter().copied().find(|w| *w == key);
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let Some((base, query)) = text.split_once('?') else {
            return (text.to_owned(), taken);
        };
        let mut kept = Vec::new();
        for part in query.split('&') {
            match part.split_once('=').and_then(|(k, v)| Some((lookup(k)?, v))) {
                Some((key, value)) => taken.push((key, percent_decode(value))),
                None => kept.push(part),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    let mut rest = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some((start, end, key, value)) = next_pair(text, pos) {
        match lookup(&key) {
            Some(key) => {
                rest.push_str(&text[pos..start]);
                taken.push((key, value));
            }
            None => rest.push_str(&text[pos..end]),
        }
        pos = end;
    }
    rest.push_str(&text[pos..]);
    (rest, taken)
}

/// The next `key = value` pair of a libpq string at or after `from`: (start, end, key, value).
fn next_pair(text: &str, from: usize) -> Option<(usize, usize, String, String)> {
    let bytes = text.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let start = skip_ws(from);
    let mut i = start;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
        i += 1;
    }
    let key = text.get(start..i)?.to_owned();
    i = skip_ws(i);
    if key.is_empty() || bytes.get(i) != Some(&b'=') {
        return None;
    }
    i = skip_ws(i + 1);
    let mut value = String::new();
    let quoted = bytes.get(i) == Some(&b'\'');
    if quoted {
        i += 1;
    }
    let mut chars = text.get(i..)?.char_indices();
    loop {
        let (off, c) = match chars.next() {
            Some(next) => next,
            None if quoted => return None,
            None => return Some((start, text.len(), key, value)),
        };
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' if quoted => return Some((start, i + off + 1, key, value)),
            c if !quoted && c.is_whitespace() => return Some((start, i + off, key, value)),
            c => value.push(c),
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_taken_with_defaults_for_port_and_database() {
        let p = parse("postgres://app:s3cret@db.example:6543/wed?application_name=x").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_str()),
            ("db.example", 6543, "app")
        );
        assert_eq!(p.password.as_ref().map(|s| s.expose().as_str()), Some("s3cret"));
        assert_eq!(p.dbname, "wed");
        assert_eq!(p.application_name.as_deref(), Some("x"));
        let p = parse("postgres://app@db.example").unwrap();
        assert_eq!((p.port, p.dbname.as_str()), (5432, "app"));
        assert!(p.password.is_none());
    }

    #[test]
    fn key_value_strings_work_including_quoted_values() {
        let p = parse("host=h port=7000 user=u password='a b\\'c' dbname=d sslmode=verify-full").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.user.as_str(), p.dbname.as_str()),
            ("h", 7000, "u", "d")
        );
        assert_eq!(p.password.unwrap().expose(), "a b'c");
        assert_eq!(p.sslmode, Some(TlsMode::VerifyFull));
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_from_the_url() {
        let p = parse("postgres://u@h/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3")
            .unwrap();
        assert_eq!(p.sslmode, Some(TlsMode::VerifyFull));
        assert_eq!(p.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(p.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(parse("postgres://u@h/d").unwrap().sslmode, None);
        assert!(parse("postgres://u@h/d?sslmode=verify-ca")
            .unwrap_err()
            .contains("verify-full"));
    }

    #[test]
    fn the_first_tcp_host_is_used_and_unix_sockets_alone_are_rejected() {
        let p = parse("host=/var/run/postgresql,db2 port=1,2 user=u").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("db2", 2));
        let err = parse("host=/var/run/postgresql user=u").unwrap_err();
        assert!(err.contains("unix-socket"), "{err}");
        assert!(parse("user=u").unwrap_err().contains("no host"));
    }

    #[test]
    fn a_missing_user_is_an_error() {
        assert!(parse("postgres://h:5432/db").unwrap_err().contains("no user"));
    }

    #[test]
    fn parse_errors_never_echo_the_text() {
        for bad in [
            "postgres://u:hunter2@h:notaport/db",
            "host=h user=u password='hunter2",
            "bogus hunter2",
        ] {
            let err = parse(bad).err().unwrap_or_default();
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = parse("host=h user=u password=hunter2 x").unwrap_err();
        assert!(!err.contains("hunter2") && !err.contains("`x`"), "{err}");
    }

    #[test]
    fn percent_encoding_round_trips() {
        let s = "we ird@user/ü";
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(percent_encode("plain-1.2_~"), "plain-1.2_~");
    }
}

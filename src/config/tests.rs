use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, DEFAULT_TABLES};
use super::*;
use crate::pg::TlsMode;

const EXAMPLE: &str = include_str!("../../config.example.toml");

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    Config::from_toml_str(text, "test.toml", env)
}

fn err(text: &str, env: &[(&str, &str)]) -> String {
    match load(text, env) {
        Ok(_) => panic!("expected an error for {text:?} with {env:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let c = load("", &[]).unwrap();
    let pg = &c.postgres;
    assert_eq!(
        (pg.host.as_str(), pg.port, pg.user.as_str()),
        ("127.0.0.1", 5432, "fieldsync")
    );
    assert_eq!(pg.dbname, "postgres");
    assert!(pg.password.is_none());
    assert_eq!(pg.tls, TlsMode::Prefer);
    assert_eq!(pg.ca_file, None);
    assert_eq!(pg.connect_timeout, Duration::from_secs(10));
    assert_eq!(pg.application_name, "fieldsync");
    let r = &c.replication;
    assert_eq!(
        (r.slot.as_str(), r.publication.as_str(), r.create_slot),
        ("fieldsync", "fieldsync", true)
    );
    assert_eq!(r.status_interval, Duration::from_secs(1));
    assert_eq!(r.reconnect_backoff_min, Duration::from_millis(500));
    assert_eq!(r.reconnect_backoff_max, Duration::from_secs(30));
    let tables: Vec<String> = c.capture.tables.iter().map(ToString::to_string).collect();
    assert_eq!(tables, DEFAULT_TABLES);
    assert_eq!(c.queue.path, PathBuf::from("./fieldsync-data"));
    assert_eq!(c.queue.cache_capacity_bytes, 64 * 1024 * 1024);
    assert_eq!(c.queue.max_disk_bytes, 10 << 30);
    let sized = load(
        "[queue]\nmax_disk = \"500MB\"\n",
        &[("FIELDSYNC__QUEUE__CACHE_CAPACITY_MB", "8")],
    )
    .unwrap();
    assert_eq!(sized.queue.max_disk_bytes, 500_000_000);
    let from_env = load("", &[("FIELDSYNC__QUEUE__MAX_DISK", "2097152")]).unwrap();
    assert_eq!(from_env.queue.max_disk_bytes, 2 << 20);
    assert_eq!(c.queue.retention, Duration::from_secs(24 * 3600));
    assert_eq!(c.http.listen, "127.0.0.1:9187".parse().unwrap());
    assert_eq!((c.log.level.as_str(), c.log.format), ("info", LogFormat::Text));
    assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
}

#[test]
fn the_example_file_parses_to_the_defaults() {
    let example = load(EXAMPLE, &[]).unwrap();
    assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
}

#[test]
fn the_example_file_mentions_every_key_of_every_section() {
    for section in raw::sections() {
        assert!(
            EXAMPLE.contains(&format!("\n[{section}]\n")),
            "[{section}] missing from the example"
        );
        for key in raw::section_keys(section).unwrap() {
            let written = EXAMPLE.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} = "))
            });
            assert!(written, "{section}.{key} missing from the example");
        }
    }
}

#[test]
fn the_example_file_sets_every_commented_out_key_to_a_valid_value() {
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| {
            let is_key = |rest: &&str| {
                rest.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            };
            l.strip_prefix("# ").filter(is_key).unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = load(&uncommented.replace("\"prefer\"", "\"verify-full\""), &[]).unwrap();
    assert_eq!(
        c.postgres.ca_file,
        Some(PathBuf::from("/etc/ssl/certs/postgres-ca.pem"))
    );
}

#[test]
fn an_unknown_key_in_the_file_names_the_key_and_its_section() {
    let e = err("[replication]\nslots = \"x\"\n", &[]);
    assert!(e.contains(r#"unknown key "slots" in [replication]"#), "{e}");
    assert!(e.contains("test.toml"), "{e}");
    let e = err("[replicaton]\nslot = \"x\"\n", &[]);
    assert!(e.contains("unknown section [replicaton]"), "{e}");
}

#[test]
fn an_unknown_environment_variable_is_an_error_naming_it() {
    let e = err("", &[("FIELDSYNC__REPLICATION__SLOTS", "x")]);
    assert!(
        e.contains("FIELDSYNC__REPLICATION__SLOTS") && e.contains("[replication]"),
        "{e}"
    );
    let e = err("", &[("FIELDSYNC__NOPE__URL", "x")]);
    assert!(e.contains("FIELDSYNC__NOPE__URL"), "{e}");
}

#[test]
fn environment_overrides_each_kind_of_value() {
    let c = load(
        "[log]\nlevel = \"warn\"\n",
        &[
            ("FIELDSYNC__LOG__LEVEL", "debug"),
            ("FIELDSYNC__QUEUE__CACHE_CAPACITY_MB", "32"),
            ("FIELDSYNC__REPLICATION__CREATE_SLOT", "false"),
            ("FIELDSYNC__CAPTURE__TABLES", r#"["public.a", "b"]"#),
            ("FIELDSYNC__REPLICATION__STATUS_INTERVAL", "250ms"),
            ("FIELDSYNC__POSTGRES__URL", "postgres://app@db:6000/wed"),
            ("FIELDSYNC__LOG__FORMAT", "json"),
        ],
    )
    .unwrap();
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.queue.cache_capacity_bytes, 32 * 1024 * 1024);
    assert!(!c.replication.create_slot);
    let tables: Vec<String> = c.capture.tables.iter().map(ToString::to_string).collect();
    assert_eq!(tables, ["public.a", "public.b"]);
    assert_eq!(c.replication.status_interval, Duration::from_millis(250));
    assert_eq!((c.postgres.host.as_str(), c.postgres.port), ("db", 6000));
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn an_environment_value_that_reads_as_toml_is_kept_as_a_string_where_a_string_is_expected() {
    let c = load(
        "",
        &[
            ("FIELDSYNC__POSTGRES__PASSWORD", "12345"),
            ("FIELDSYNC__REPLICATION__SLOT", "true"),
        ],
    )
    .unwrap();
    assert_eq!(c.postgres.password.unwrap().expose(), "12345");
    assert_eq!(c.replication.slot, "true");
}

#[test]
fn a_bad_environment_value_names_the_variable_and_the_key() {
    let e = err("", &[("FIELDSYNC__QUEUE__CACHE_CAPACITY_MB", "lots")]);
    assert!(
        e.contains("environment variable FIELDSYNC__QUEUE__CACHE_CAPACITY_MB"),
        "{e}"
    );
    assert!(e.contains("queue.cache_capacity_mb"), "{e}");
    let e = err("", &[("FIELDSYNC__REPLICATION__SLOT", "My-Slot")]);
    assert!(e.contains("FIELDSYNC__REPLICATION__SLOT"), "{e}");
}

#[test]
fn a_bad_slot_name_is_explained() {
    let e = err("[replication]\nslot = \"My-Slot\"\n", &[]);
    assert_eq!(
        e,
        "test.toml: replication.slot: \"My-Slot\" is not a valid slot name: use lowercase letters, digits \
         and underscores, at most 63 characters"
    );
    assert!(load(&format!("[replication]\nslot = \"{}\"\n", "a".repeat(64)), &[]).is_err());
    assert!(load(&format!("[replication]\nslot = \"{}\"\n", "a_1".repeat(21)), &[]).is_ok());
    assert!(load("[replication]\nslot = \"\"\n", &[]).is_err());
}

#[test]
fn a_bad_listen_address_is_explained() {
    let e = err("[http]\nlisten = \"localhost:9187\"\n", &[]);
    assert!(
        e.contains("http.listen") && e.contains("\"localhost:9187\" is not a socket address"),
        "{e}"
    );
}

#[test]
fn other_invalid_values_name_their_key() {
    let cases = [
        ("[queue]\ncache_capacity_mb = 0\n", "queue.cache_capacity_mb"),
        ("[queue]\ncache_capacity_mb = -1\n", "queue.cache_capacity_mb"),
        ("[queue]\nmax_disk = \"lots\"\n", "queue.max_disk"),
        ("[queue]\nmax_disk = \"2 parsecs\"\n", "queue.max_disk"),
        ("[queue]\nmax_disk = \"1KiB\"\n", "queue.max_disk"),
        ("[queue]\nmax_disk = true\n", "max_disk"),
        ("[queue]\nretention = \"a day\"\n", "queue.retention"),
        ("[queue]\nretention = \"100000days\"\n", "queue.retention"),
        ("[capture]\ntables = []\n", "capture.tables"),
        ("[capture]\ntables = [\"a.b.c\"]\n", "capture.tables"),
        ("[capture]\ntables = [\"a\", \"public.a\"]\n", "listed twice"),
        ("[capture]\ntables = \"public.a\"\n", "capture.tables"),
        (
            "[replication]\nstatus_interval = \"soon\"\n",
            "replication.status_interval",
        ),
        (
            "[replication]\nreconnect_backoff_min = \"1m\"\n",
            "replication.reconnect_backoff_min",
        ),
        (
            "[replication]\nreconnect_backoff_max = \"1ms\"\n",
            "replication.reconnect_backoff_max",
        ),
        ("[postgres]\ntls = \"sometimes\"\n", "postgres.tls"),
        ("[postgres]\nurl = \"postgres://127.0.0.1/db\"\n", "no user"),
        (
            "[postgres]\nconnect_timeout = \"0s\"\n",
            "postgres.connect_timeout",
        ),
        ("[postgres]\nca_file = \"/ca.pem\"\n", "verify-full"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[log]\nlevel = \"\"\n", "log.level"),
        ("replication = 3\n", "must be a section"),
    ];
    for (text, needle) in cases {
        let e = err(text, &[]);
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn users_and_tokens_need_a_known_role_a_long_secret_and_a_name_of_their_own() {
    let admin = |users: &str| {
        format!("[admin]\nlisten = \"127.0.0.1:0\"\npassword = \"twelve chars!\"\nusers = [{users}]\n")
    };
    for (users, says) in [
        (
            r#"{ name = "v", password = "twelve chars!", role = "superuser" }"#,
            &[
                "admin.users[0].role",
                "\"superuser\" is not a role",
                "\"read\"",
                "\"operate\"",
            ][..],
        ),
        (
            r#"{ name = "v", password = "short", role = "read" }"#,
            &["admin.users[0].password", "at least 12"],
        ),
        (
            r#"{ name = "fieldsync", password = "twelve chars!", role = "read" }"#,
            &["\"fieldsync\" is configured twice"],
        ),
        (
            r#"{ name = "v", token = "twelve chars!", role = "read" }"#,
            &["admin.users[0]", "takes a password, not a token"],
        ),
    ] {
        let e = err(&admin(users), &[]);
        assert!(says.iter().all(|s| e.contains(s)), "{users}: {e}");
        assert!(!e.contains("short\"") && !e.contains("twelve chars!"), "{e}");
    }
    let c = load(
        &admin(r#"{ name = "v", password = "twelve chars!", role = "read" }"#),
        &[],
    )
    .unwrap();
    let roles: Vec<(String, Role)> = c
        .admin
        .unwrap()
        .users
        .into_iter()
        .map(|u| (u.name, u.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("fieldsync".to_owned(), Role::Operate),
            ("v".to_owned(), Role::Read)
        ]
    );

    let http = |tokens: &str| format!("[http]\ntokens = [{tokens}]\n");
    let e = err(
        &http(r#"{ name = "ci", token = "too short", role = "operate" }"#),
        &[],
    );
    assert!(
        e.contains("http.tokens[0].token") && e.contains("at least 32"),
        "{e}"
    );
    let long = "x".repeat(32);
    let e = err(
        &http(&format!(r#"{{ name = "", token = "{long}", role = "read" }}"#)),
        &[],
    );
    assert!(e.contains("http.tokens[0].name"), "{e}");
    let c = load(
        &http(&format!(
            r#"{{ name = "ci", token = "{long}", role = "operate" }}"#
        )),
        &[],
    )
    .unwrap();
    assert_eq!(c.http.tokens[0].role, Role::Operate);
    assert!(!format!("{c:?}").contains(&long) && !c.redacted().contains(&long));
    assert!(c.redacted().contains("name = \"ci\""), "{}", c.redacted());
}

#[test]
fn tls_files_must_be_a_certificate_and_its_own_key_and_clear_text_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = write("cert.pem", &one.cert.pem());
    let key = write("key.pem", &one.key_pair.serialize_pem());
    let wrong_key = write("other.pem", &other.key_pair.serialize_pem());
    let http = |extra: &str| format!("[http]\n{extra}");
    let c = load(
        &http(&format!("tls_cert_file = {cert:?}\ntls_key_file = {key:?}\n")),
        &[],
    )
    .unwrap();
    assert!(c.http.tls.is_some());
    for (extra, says) in [
        (
            format!("tls_cert_file = {cert:?}\ntls_key_file = {wrong_key:?}\n"),
            "is not the key of the certificate",
        ),
        (
            format!("tls_cert_file = {cert:?}\n"),
            "set both http.tls_cert_file and http.tls_key_file",
        ),
        (
            format!("tls_cert_file = {key:?}\ntls_key_file = {key:?}\n"),
            "holds no PEM certificate",
        ),
        (
            format!("tls_cert_file = {cert:?}\ntls_key_file = {cert:?}\n"),
            "holds no PEM private key",
        ),
        (
            format!("tls_cert_file = \"/nonexistent/c.pem\"\ntls_key_file = {key:?}\n"),
            "cannot read /nonexistent/c.pem",
        ),
        (
            "listen = \"0.0.0.0:9187\"\n".to_owned(),
            "off loopback and the port has no TLS",
        ),
    ] {
        let e = err(&http(&extra), &[]);
        assert!(e.contains(says), "{extra}: {e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
    }
    let open = load(
        &http("listen = \"0.0.0.0:9187\"\nallow_plaintext_off_loopback = true\n"),
        &[],
    )
    .unwrap();
    assert!(open.http.tls.is_none());
    let tls_off_loopback =
        format!("listen = \"0.0.0.0:9187\"\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n");
    assert!(load(&http(&tls_off_loopback), &[]).is_ok());
    let e = err(
        "[admin]\nlisten = \"0.0.0.0:6433\"\npassword = \"twelve chars!\"\n",
        &[],
    );
    assert!(e.contains("admin.listen") && e.contains("off loopback"), "{e}");
}

#[test]
fn a_stream_signing_key_file_must_hold_a_key_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    let e = err(&format!("[http]\nstream_signing_key_file = {:?}\n", missing), &[]);
    assert!(
        e.contains("http.stream_signing_key_file") && e.contains("cannot read"),
        "{e}"
    );
    assert!(e.contains("fieldsync secret keygen"), "{e}");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "c2hvcnQ=\n").unwrap();
    let e = err(&format!("[http]\nstream_signing_key_file = {:?}\n", short), &[]);
    assert!(
        e.contains("http.stream_signing_key_file") && e.contains("32 bytes in base64"),
        "{e}"
    );
    assert!(!e.contains("c2hvcnQ"), "{e}");
    let good = dir.path().join("good.key");
    std::fs::write(&good, crate::credentials::generate_key()).unwrap();
    let c = load(&format!("[http]\nstream_signing_key_file = {:?}\n", good), &[]).unwrap();
    assert!(c.http.stream_signing_key.is_some());
    assert!(!format!("{c:?}").contains(&std::fs::read_to_string(&good).unwrap()));
    assert!(c.redacted().contains("good.key"));
}

#[test]
fn store_encryption_keys_are_read_from_files_checked_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "bm90IGEga2V5\n").unwrap();
    let e = err(&format!("[queue]\nencryption_key_file = {bad:?}\n"), &[]);
    assert!(
        e.contains("queue.encryption_key_file") && e.contains("32 bytes in base64"),
        "{e}"
    );
    assert!(!e.contains("bm90IGEga2V5"), "{e}");
    let missing = dir.path().join("missing.key");
    let e = err(
        &format!("[queue]\nold_encryption_key_files = [{missing:?}]\n"),
        &[],
    );
    assert!(
        e.contains("queue.old_encryption_key_files[0]") && e.contains("cannot read"),
        "{e}"
    );
    let (new, old) = (dir.path().join("new.key"), dir.path().join("old.key"));
    std::fs::write(&new, crate::credentials::generate_key()).unwrap();
    std::fs::write(&old, crate::credentials::generate_key()).unwrap();
    let c = load(
        &format!("[queue]\nencryption_key_file = {new:?}\nold_encryption_key_files = [{old:?}]\n"),
        &[],
    )
    .unwrap();
    assert!(c.queue.encryption_key.is_some() && c.queue.old_encryption_keys.len() == 1);
    let shown = format!("{c:?}{}", c.redacted());
    for key in [&new, &old] {
        assert!(!shown.contains(std::fs::read_to_string(key).unwrap().trim()));
    }
    assert!(c.redacted().contains("new.key") && c.redacted().contains("old.key"));
}

#[test]
fn a_syntax_error_gives_line_and_column_without_quoting_the_line() {
    let e = err("[postgres]\npassword = \"hunter2\n", &[]);
    assert!(
        e.starts_with("test.toml: TOML syntax error at line 2, column"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn the_password_key_wins_over_the_url_password() {
    let c = load(
        "[postgres]\nurl = \"postgres://app:fromurl@db/wed\"\npassword = \"fromkey\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.postgres.password.unwrap().expose(), "fromkey");
    let c = load("[postgres]\nurl = \"postgres://app:fromurl@db/wed\"\n", &[]).unwrap();
    assert_eq!(c.postgres.password.unwrap().expose(), "fromurl");
    let c = load(
        "[postgres]\nurl = \"postgres://app:fromurl@db/wed\"\n",
        &[("FIELDSYNC__POSTGRES__PASSWORD", "fromenv")],
    )
    .unwrap();
    assert_eq!(c.postgres.password.unwrap().expose(), "fromenv");
}

#[test]
fn sslmode_comes_from_the_url_unless_tls_is_set() {
    let url = "[postgres]\nurl = \"postgres://app@db/wed?sslmode=require\"\n";
    assert_eq!(load(url, &[]).unwrap().postgres.tls, TlsMode::Require);
    let c = load(&format!("{url}tls = \"disable\"\n"), &[]).unwrap();
    assert_eq!(c.postgres.tls, TlsMode::Disable);
    let kv = "[postgres]\nurl = \"host=db user=app sslmode=verify-full sslrootcert=/ca.pem\"\n";
    let c = load(kv, &[]).unwrap();
    assert_eq!(
        (c.postgres.tls, c.postgres.ca_file),
        (TlsMode::VerifyFull, Some(PathBuf::from("/ca.pem")))
    );
}

#[test]
fn passwords_never_appear_in_redacted_output_debug_or_errors() {
    let text = "[postgres]\nurl = \"postgres://app:urlsecret@db:6000/wed\"\n";
    let c = load(text, &[]).unwrap();
    let shown = format!("{}\n{:?}", c.redacted(), c);
    assert!(!shown.contains("urlsecret"), "{shown}");
    let c = load(text, &[("FIELDSYNC__POSTGRES__PASSWORD", "envsecret")]).unwrap();
    let shown = format!("{}\n{:?}", c.redacted(), c);
    assert!(
        !shown.contains("envsecret") && !shown.contains("urlsecret"),
        "{shown}"
    );
    assert!(c.redacted().contains("password = \"***\""), "{}", c.redacted());
    let bad = [
        "[postgres]\nurl = \"postgres://app:urlsecret@db:notaport/wed\"\n",
        "[postgres]\nurl = \"host=db password=urlsecret\"\n",
        "[postgres]\nurl = \"postgres://app:urlsecret@db/wed\"\nconnect_timeout = \"0s\"\n",
        "[postgres]\npassword = 12345\n",
    ];
    for text in bad {
        let e = err(text, &[]);
        assert!(!e.contains("urlsecret") && !e.contains("12345"), "{e}");
    }
}

#[test]
fn the_redacted_rendering_parses_back_to_the_same_configuration() {
    let text = "[postgres]\nurl = \"postgres://us%40er@[::1]:6000/my%20db?application_name=x\"\n\
                [replication]\nslot = \"s1\"\ncreate_slot = false\n[capture]\ntables = [\"w\"]\n\
                [queue]\ncache_capacity_mb = 8\n[log]\nformat = \"json\"\n";
    let c = load(text, &[]).unwrap();
    assert_eq!(
        (c.postgres.user.as_str(), c.postgres.dbname.as_str()),
        ("us@er", "my db")
    );
    let again = load(&c.redacted(), &[]).unwrap();
    assert_eq!(format!("{again:?}"), format!("{c:?}"));
    let defaults = Config::default();
    assert_eq!(
        format!("{:?}", load(&defaults.redacted(), &[]).unwrap()),
        format!("{defaults:?}")
    );
}

#[test]
fn a_missing_file_is_an_error_naming_the_path() {
    let path = Path::new("/nonexistent/fieldsync.toml");
    let e = Config::load(path).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/fieldsync.toml") && e.contains("not found"),
        "{e}"
    );
    let e = Config::load_or_default(Some(path)).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/fieldsync.toml"), "{e}");
}

#[test]
fn a_file_on_disk_is_loaded_and_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "[queue]\ncache_capacity_mb = 0\n").unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: queue.cache_capacity_mb", path.display())),
        "{e}"
    );
}

#[test]
fn a_log_filter_of_unknown_words_and_oversized_names_are_refused_naming_the_key_and_a_short_excerpt() {
    for level in ["verbose", "info,loud", "true"] {
        let e = load(&format!("[log]\nlevel = \"{level}\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level") && e.contains("no level"), "{e}");
    }
    for ok in [
        "info",
        "fieldsync=debug,warn",
        "WARN",
        "fieldsync::dispatch=trace",
    ] {
        load(&format!("[log]\nlevel = \"{ok}\"\n"), &[]).unwrap();
    }
    let long = "a".repeat(1 << 20);
    for (toml, key) in [
        (format!("[replication]\nslot = \"{long}\"\n"), "replication.slot"),
        (
            format!("[postgres]\napplication_name = \"{long}\"\n"),
            "postgres.application_name",
        ),
        (
            format!("[replication]\npublication = \"{long}\"\n"),
            "replication.publication",
        ),
        (format!("[capture]\ntables = [\"{long}\"]\n"), "capture.tables"),
    ] {
        let e = load(&toml, &[]).unwrap_err().to_string();
        assert!(e.contains(key), "{}", &e[..e.len().min(300)]);
        assert!(e.len() < 600, "{key}: the error echoes {} bytes", e.len());
    }
}

//! TLS on the HTTP port: `curl --cacert` reads `/metrics` and the live stream over HTTPS with the
//! certificate verified; a plaintext client gets nothing.

use std::path::PathBuf;
use std::process::Command;

use crate::dispatch::{seed, ORG};
use crate::support::daemon::{self, config_toml, sql};
use crate::support::{cluster_with_schema, pki};

/// A CA and a server certificate for `localhost` and `127.0.0.1`, as files: (CA, certificate, key).
fn write_pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let files = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&files.0, &pki.ca_pem).unwrap();
    std::fs::write(&files.1, &pki.server.cert_pem).unwrap();
    std::fs::write(&files.2, &pki.server.key_pem).unwrap();
    files
}

/// `curl` with the test CA: (exit code, what `-w` printed, the body).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "3"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_with_the_ca_reads_metrics_and_the_live_stream_over_tls_and_plaintext_gets_nothing() {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    seed(&db, 1, "http://127.0.0.1:9/unused").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_pki(dir.path());
    let toml = config_toml(&cluster, &dir.path().join("q"), 0).replace(
        "[http]\n",
        &format!(
            "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nstream_token = \"s3cret-token\"\n",
            cert.display(),
            key.display()
        ),
    );
    let d = daemon::start(&toml).await;
    let port = d.http_addr.port();
    let ca = ca.to_string_lossy().into_owned();

    let (code, body) = curl(&["--cacert", &ca, &format!("https://localhost:{port}/metrics")]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("fieldsync_"), "{body}");
    // verify-full by IP too (the certificate names 127.0.0.1)
    let (code, body) = curl(&["--cacert", &ca, &format!("https://127.0.0.1:{port}/readyz")]);
    assert_eq!(code, 0, "{body}");

    // the live stream answers 200 and stays open (curl's --max-time ends it: exit 28)
    let (code, status) = curl(&[
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Authorization: Bearer s3cret-token",
        &format!("https://localhost:{port}/events/stream?organization={ORG}"),
    ]);
    assert_eq!((code, status.as_str()), (28, "200"));

    // without the CA the certificate does not verify; in clear there is no HTTP answer
    let (code, _) = curl(&[&format!("https://localhost:{port}/metrics")]);
    assert_eq!(code, 60, "curl: the certificate is not trusted");
    let (code, status) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{port}/metrics"),
    ]);
    assert_ne!(code, 0);
    assert_eq!(status, "000", "no HTTP status in clear");
    // and the daemon is none the worse
    let (code, _) = curl(&["--cacert", &ca, &format!("https://localhost:{port}/healthz")]);
    assert_eq!(code, 0);

    // the command line reaches its daemon over HTTPS, trusting the certificate the
    // configuration names (and no other)
    let config = dir.path().join("fieldsync.toml");
    let at = format!("listen = \"{}\"", d.http_addr);
    std::fs::write(&config, toml.replacen("listen = \"127.0.0.1:0\"", &at, 1)).unwrap();
    let (code, out, err) = daemon::cli("deliveries", &config, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("integrations"), "{out}");
    let (code, _, err) = daemon::cli("audit", &config, &[]);
    assert_eq!(code, 0, "{err}");
    d.stop().await.unwrap();
}

/// `psql` to the admin port with `conninfo` (and `sslrootcert` when given): (success, output).
fn psql(bin: &std::path::Path, conninfo: &str) -> (bool, String) {
    let out = Command::new(bin.join("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELECT connected FROM status",
        ])
        .arg(conninfo)
        .env("PGPASSWORD", "correct horse battery staple")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_with_verify_full_reads_the_admin_port_over_tls_and_a_startup_in_clear_gets_28000() {
    let cluster = cluster_with_schema();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_pki(dir.path());
    let toml = config_toml(&cluster, &dir.path().join("q"), 0)
        + &format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"dba\"\npassword = \"correct horse battery staple\"\n\
             tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            cert.display(),
            key.display()
        );
    let d = daemon::start(&toml).await;
    let admin = d.admin_addr.unwrap();
    let bin = cluster.bin_dir().to_path_buf();
    let base = format!("host=localhost port={} user=dba dbname=fieldsync", admin.port());

    let (ok, out) = psql(
        &bin,
        &format!("{base} sslmode=verify-full sslrootcert={}", ca.display()),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "t");
    // a certificate psql cannot verify: refused by the client
    let other = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    let (ok, out) = psql(
        &bin,
        &format!("{base} sslmode=verify-full sslrootcert={}", other_ca.display()),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("SSL error"), "{out}");
    // in clear: refused by the daemon, before any password
    let (ok, out) = psql(&bin, &format!("{base} sslmode=disable"));
    assert!(!ok, "{out}");
    assert!(out.contains("this port takes TLS only"), "{out}");
    let refused = tokio_postgres::connect(
        &format!("{base} password='correct horse battery staple' sslmode=disable"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused in clear");
    assert_eq!(refused.code().map(|c| c.code()), Some("28000"), "{refused}");
    // and the port goes on serving
    let (ok, out) = psql(&bin, &format!("{base} sslmode=require"));
    assert!(ok, "{out}");
    d.stop().await.unwrap();
}

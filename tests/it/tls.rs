//! TLS on the HTTP port: `curl --cacert` reads `/metrics` and the live stream over HTTPS with the
//! certificate verified; a plaintext client gets nothing.

use std::process::Command;

use crate::dispatch::{seed, ORG};
use crate::support::daemon::{self, config_toml, sql};
use crate::support::{cluster_with_schema, pki};

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
    let pki = pki(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&cert, &pki.server.cert_pem).unwrap();
    std::fs::write(&key, &pki.server.key_pem).unwrap();
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

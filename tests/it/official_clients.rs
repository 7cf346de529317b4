//! The sandboxes claim to be faithful enough that the vendors' official client libraries work
//! against them; these tests hold them to it. Each test starts the sandboxes in-process and runs
//! one script of `tests/clients/` with the official Python library (`stripe`,
//! `google-api-python-client` + `google-auth`, versions pinned in `tests/clients/requirements.txt`),
//! which asserts what the library sees; then the exchanges the library made are checked here.
//!
//! The libraries live in a virtualenv that `scripts/python-clients.sh` creates or updates and
//! whose interpreter it prints; the tests run it themselves (once per test binary), so they never
//! skip: without Python 3, venv or PyPI they fail saying what to install.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fieldsync_dev::sandbox::{Api, Running};

use crate::support::crm::sandbox;
use crate::support::spec;

/// A script gets this long (the libraries' own backoff sleeps included).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python, provisioned by `scripts/python-clients.sh` once per test binary.
fn python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let script = root().join("scripts/python-clients.sh");
        let out = Command::new("bash")
            .arg(&script)
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run {}: {e}", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{stderr}\nthe official-client tests need Python 3 with venv and pip \
                 (Debian: apt-get install python3 python3-venv python3-pip) and PyPI to install \
                 tests/clients/requirements.txt",
                script.display(),
                out.status
            ));
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let path = PathBuf::from(path.lines().last().unwrap_or_default());
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} printed no interpreter path (got {path:?}); stderr:\n{stderr}",
                script.display()
            ))
        }
    });
    match found {
        Ok(p) => p,
        Err(why) => panic!("{why}"),
    }
}

/// Runs `tests/clients/{script}` with `args`; panics with its output unless it exits 0 in time.
fn run_script(script: &str, args: &[String]) -> String {
    let python = python();
    let path = root().join("tests/clients").join(script);
    let mut child = Command::new(python)
        .arg(&path)
        .args(args)
        .current_dir(root())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {} {}: {e}", python.display(), path.display()));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default()
    );
    match status {
        Some(s) if s.success() => output,
        Some(s) => panic!("{script} failed ({s}):\n{output}"),
        None => panic!("{script} did not finish within {SCRIPT_DEADLINE:?}:\n{output}"),
    }
}

/// Runs a script against `running` off the async runtime that serves the sandbox.
async fn run(running: &Running, script: &'static str, extra: Vec<String>) -> String {
    let mut args = vec![running.url()];
    args.extend(extra);
    tokio::task::spawn_blocking(move || run_script(script, &args))
        .await
        .expect("the script runner panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripes_official_python_library_works_against_the_stripe_sandbox() {
    let running = sandbox().await;

    let output = run(&running, "stripe_client.py", vec![]).await;
    assert!(output.contains("stripe: all checks passed"), "{output}");

    let exchanges = running.exchanges(Api::Stripe);
    for e in &exchanges {
        assert!(
            e.response_headers.contains_key("request-id"),
            "every answer carries Request-Id: {} {} → {}",
            e.method,
            e.path,
            e.status
        );
    }
    // the library retried the 503s with one idempotency key, and the sandbox served the third try
    let retried: Vec<_> = exchanges
        .iter()
        .filter(|e| e.method == "POST" && e.request_body.as_ref() == b"name=Retried")
        .collect();
    assert_eq!(
        retried.iter().map(|e| e.status).collect::<Vec<_>>(),
        [503, 503, 200],
        "{output}"
    );
    let keys: Vec<_> = retried
        .iter()
        .map(|e| e.request_headers.get("idempotency-key").cloned())
        .collect();
    assert!(
        keys[0].is_some() && keys.iter().all(|k| k == &keys[0]),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googles_official_python_libraries_work_against_the_calendar_sandbox() {
    let running = sandbox().await;
    let discovery = crate::support::spec::google_discovery_file();

    let output = run(
        &running,
        "google_client.py",
        vec![discovery.display().to_string()],
    )
    .await;
    assert!(output.contains("google: all checks passed"), "{output}");

    // what the library sent and the sandbox answered matches the discovery document
    let exchanges = running.exchanges(Api::Google);
    let checker = spec::google();
    let violations: Vec<String> = exchanges.iter().flat_map(|e| checker.check(e)).collect();
    assert!(violations.is_empty(), "{violations:#?}");
    let calls = exchanges
        .iter()
        .filter(|e| e.path.starts_with("/calendar/v3/"))
        .count();
    assert!(calls > 20, "the library made {calls} calendar calls");
}

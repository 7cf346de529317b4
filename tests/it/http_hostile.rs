//! Hostile input at the HTTP port (issue 13): idle and half-sent connections, floods past the
//! open-file limit, many concurrent live-stream replays, too many streams. Against the running
//! daemon over real sockets; the memory and descriptor tests run the real `fieldsync` binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fieldsync_dev::receiver::Receiver;

use crate::dispatch::{add_field, dispatch_toml, seed, wedding, ORG, SECRET};
use crate::support::daemon::{self, http_get, read_queue, sql, Workdir};
use crate::support::{cluster_with_schema, wait_for_async, Cluster};

/// The open-file limit (soft = hard) the flooded daemon runs under: the default under a systemd
/// unit without `LimitNOFILE`.
const NOFILE: u64 = 1024;
const IDLE_CONNECTIONS: usize = 2000;
const HALF_SENT: usize = 20;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The flooded daemon's peak RSS stays under this.
const FLOOD_RSS_BOUND_MIB: u64 = 100;

/// Events written before the replays, and how many replay them at once.
const REPLAY_EVENTS: usize = 25_000;
const REPLAYS: usize = 20;
/// The daemon's peak RSS while 20 full replays run stays under this (see the README's HTTP section).
const REPLAY_RSS_BOUND_MIB: u64 = 120;

const TOKEN: &str = "hostile-stream-token";

/// The real binary with soft = hard `RLIMIT_NOFILE` of `nofile` (when given), killed on drop.
struct Limited {
    child: Child,
}

impl Limited {
    fn spawn(config: &Path, log: &Path, nofile: Option<u64>) -> Limited {
        use std::os::unix::process::CommandExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let binary = std::env::var_os("FIELDSYNC_HOSTILE_BINARY")
            .map(Into::into)
            .unwrap_or_else(daemon::binary);
        let mut command = Command::new(binary);
        command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = nofile {
            // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Limited {
            child: command.spawn().expect("spawn fieldsync"),
        }
    }

    fn proc_status(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn peak_rss_mib(&self) -> u64 {
        self.proc_status("VmHWM:").expect("VmHWM") / 1024
    }

    fn rss_mib(&self) -> u64 {
        self.proc_status("VmRSS:").expect("VmRSS") / 1024
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "daemon exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for fieldsync")
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raises this test process's soft open-file limit to its hard limit (it holds thousands).
fn raise_own_nofile(need: u64) {
    let (soft, hard) = fieldsync::serve::http::nofile_limit().expect("getrlimit");
    if soft < need {
        assert!(
            hard >= need,
            "the test needs {need} descriptors, the hard limit is {hard}"
        );
        fieldsync::serve::http::raise_nofile_limit();
    }
}

/// `[http]` keys (or nothing, for an older binary given by `FIELDSYNC_HOSTILE_BINARY`).
fn http_keys(keys: &str) -> String {
    if std::env::var_os("FIELDSYNC_HOSTILE_BINARY").is_some() {
        String::new()
    } else {
        keys.to_owned()
    }
}

/// Adds `http` to the work directory's `[http]` section and appends `extra`.
fn configure(work: &Workdir, http: &str, extra: &str) {
    let toml = std::fs::read_to_string(&work.config).unwrap();
    let toml = toml.replace("[http]\n", &format!("[http]\n{http}")) + extra;
    std::fs::write(&work.config, toml).unwrap();
}

/// Waits until the receiver has accepted more than `before` events.
async fn delivered_beyond(receiver: &Receiver, before: usize, what: &str) {
    wait_for_async(Duration::from_secs(30), what, || {
        let n = receiver.accepted().len();
        async move { n > before }
    })
    .await;
}

async fn wait_connected(daemon: &mut Limited, work: &Workdir) {
    wait_for_async(Duration::from_secs(60), "the daemon to stream", || {
        daemon.assert_running(&work.log);
        let connected = http_get(work.http, "/status")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|s| s.pointer("/source/connected")?.as_bool())
            == Some(true);
        async move { connected }
    })
    .await;
}

fn stored_records(http: SocketAddr) -> Option<u64> {
    let (code, body) = http_get(http, "/status")?;
    if code != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()?
        .pointer("/queue/records")?
        .as_u64()
}

/// The log without terminal colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(i) = rest.find('\x1b') {
        out += &rest[..i];
        rest = &rest[i..];
        rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
    }
    out + rest
}

/// True once the server closed `s` (EOF or reset), waiting at most until `deadline`.
fn closed_by_server(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. 408 or 503) before the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset
        }
    }
}

/// A daemon under `NOFILE` descriptors with one wedding and a webhook receiver, streaming; `http`
/// goes to its `[http]` section and `extra` after its `[dispatch]` one.
async fn flood_target(
    http: &str,
    extra: &str,
) -> (Cluster, Receiver, tokio_postgres::Client, Workdir, Limited) {
    raise_own_nofile(IDLE_CONNECTIONS as u64 + 512);
    let cluster = cluster_with_schema();
    let receiver = Receiver::start(SECRET).await;
    let db = sql(&cluster).await;
    seed(&db, 1, &receiver.url()).await;
    let work = Workdir::new(&cluster);
    configure(&work, http, &(dispatch_toml(10_000) + extra));
    let mut d = Limited::spawn(&work.config, &work.log, Some(NOFILE));
    wait_connected(&mut d, &work).await;
    (cluster, receiver, db, work, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_under_a_1024_descriptor_limit_leave_healthz_capture_and_delivery_working(
) {
    let (_cluster, receiver, db, work, mut d) = flood_target(
        &http_keys(&format!(
            "header_read_timeout = \"{}s\"\n",
            HEADER_READ_TIMEOUT.as_secs()
        )),
        "",
    )
    .await;
    // one delivery before the flood: the client's pool and the dispatcher are warm
    add_field(&db, &wedding(0)).await;
    wait_for_async(Duration::from_secs(60), "a first delivery", || {
        let n = receiver.accepted().len();
        async move { n >= 1 }
    })
    .await;
    let rss_before = d.rss_mib();
    let fds_before = d.open_fds();
    let log = plain(&std::fs::read_to_string(&work.log).unwrap());
    assert!(
        log.contains("open-file limit") && log.contains(&format!("soft={NOFILE}")),
        "the daemon logs its open-file limit: {log}"
    );

    // the flood: 2,000 connections that send nothing, then some that send half a request head
    let http = work.http;
    let started = Instant::now();
    let (idle, half_sent, half_sent_at) = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..IDLE_CONNECTIONS)
            .map(|i| {
                TcpStream::connect_timeout(&http, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
            })
            .collect();
        let half_sent: Vec<TcpStream> = (0..HALF_SENT)
            .map(|_| {
                let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(10)).unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: fieldsync\r\nX-Slow: ")
                    .unwrap();
                s
            })
            .collect();
        (idle, half_sent, Instant::now())
    })
    .await
    .unwrap();
    let opened_in = started.elapsed();
    eprintln!("opened {IDLE_CONNECTIONS} idle and {HALF_SENT} half-sent connections in {opened_in:?}");

    // while they are held: /healthz answers on a new connection
    let asked = Instant::now();
    let healthz = tokio::task::spawn_blocking(move || http_get(http, "/healthz"))
        .await
        .unwrap();
    let healthz_took = asked.elapsed();
    assert_eq!(
        healthz.as_ref().map(|(code, _)| *code),
        Some(200),
        "/healthz during the flood: {healthz:?}"
    );
    let fds_during = d.open_fds();
    // capture and delivery still work: PostgreSQL and the receiver still get descriptors
    let stored = stored_records(http).expect("/status during the flood");
    let delivered = receiver.accepted().len();
    add_field(&db, &wedding(0)).await;
    wait_for_async(
        Duration::from_secs(30),
        "the change to be captured during the flood",
        || {
            let now = stored_records(http);
            async move { now.is_some_and(|n| n > stored) }
        },
    )
    .await;
    delivered_beyond(
        &receiver,
        delivered,
        "the change to be delivered to the webhook during the flood",
    )
    .await;
    assert_eq!(receiver.stats().bad_signatures, 0);
    let delivered_after = started.elapsed();
    d.assert_running(&work.log);

    // the half-sent ones are closed after the header timeout (not before, not much after); the
    // idle ones are closed too (evicted for newer ones, or after the header timeout)
    let (half_closed_after, idle_closed) = tokio::task::spawn_blocking(move || {
        let deadline = half_sent_at + HEADER_READ_TIMEOUT + Duration::from_secs(5);
        let mut latest = Duration::ZERO;
        for s in &half_sent {
            assert!(
                closed_by_server(s, deadline),
                "a half-sent request is still open {:?} after it was sent",
                half_sent_at.elapsed()
            );
            latest = latest.max(half_sent_at.elapsed());
        }
        let idle_closed = idle.iter().filter(|s| closed_by_server(s, deadline)).count();
        (latest, idle_closed)
    })
    .await
    .unwrap();
    let peak = d.peak_rss_mib();
    let log = std::fs::read_to_string(&work.log).unwrap();
    eprintln!(
        "daemon under RLIMIT_NOFILE={NOFILE}: RSS {rss_before} MiB before the flood, peak {peak} MiB \
         (bound {FLOOD_RSS_BOUND_MIB} MiB); descriptors {fds_before} before, {fds_during} during; \
         /healthz answered in {healthz_took:?}; capture and delivery {delivered_after:?} after the flood \
         began; half-sent requests closed {half_closed_after:?} after they were sent (timeout \
         {HEADER_READ_TIMEOUT:?}); {idle_closed} of {IDLE_CONNECTIONS} idle connections closed by the server"
    );
    assert!(
        !log.contains("Too many open files") && !log.contains("cannot connect to the endpoint"),
        "no descriptor exhaustion: {log}"
    );
    assert!(
        half_closed_after >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
        "closed before the header timeout: {half_closed_after:?}"
    );
    assert_eq!(idle_closed, IDLE_CONNECTIONS, "every idle connection is closed");
    assert!(
        fds_during < NOFILE as usize,
        "{fds_during} descriptors open under a limit of {NOFILE}"
    );
    assert!(
        peak < FLOOD_RSS_BOUND_MIB,
        "peak RSS {peak} MiB over the {FLOOD_RSS_BOUND_MIB} MiB bound"
    );
    // afterwards: back to normal
    assert_eq!(http_get(http, "/healthz").map(|(c, _)| c), Some(200));
    assert!(d.terminate().success());
}

/// The ids of one full replay from the start, checked as they arrive (a sample of the messages'
/// data is parsed: the event of `ORG`), and the bytes read. Reads until `expected` messages came,
/// or, without `expected`, until none came for 3 s (only live events would follow).
async fn replay(url: String, expected: Option<usize>) -> (Vec<String>, usize) {
    let client = reqwest::Client::new();
    let mut resp = client
        .get(&url)
        .bearer_auth(TOKEN)
        .header("last-event-id", "0000000000000000:00000000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut ids = Vec::with_capacity(expected.unwrap_or(REPLAY_EVENTS));
    let mut buf = String::new();
    let mut bytes = 0;
    while expected.map_or(true, |n| ids.len() < n) {
        let wait = if expected.is_some() { 120 } else { 3 };
        let chunk = match tokio::time::timeout(Duration::from_secs(wait), resp.chunk()).await {
            Ok(chunk) => chunk.unwrap().expect("the stream stays open"),
            Err(_) if expected.is_none() => break,
            Err(_) => panic!("replay stalled after {} of {expected:?} messages", ids.len()),
        };
        bytes += chunk.len();
        buf += std::str::from_utf8(&chunk).expect("SSE is UTF-8");
        let mut consumed = 0;
        while let Some(end) = buf[consumed..].find("\n\n") {
            let block = &buf[consumed..consumed + end];
            consumed += end + 2;
            let (mut id, mut data) = (None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ").or_else(|| line.strip_prefix("id:")) {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ").or_else(|| line.strip_prefix("data:")) {
                    data = Some(v);
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                if ids.len() % 97 == 0 {
                    let v: serde_json::Value = serde_json::from_str(data).expect("data is JSON");
                    assert_eq!(v["data"]["organization_id"], ORG);
                }
                ids.push(id);
            }
        }
        buf.drain(..consumed);
    }
    (ids, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_full_replays_of_a_many_megabyte_live_stream_stay_under_the_memory_bound_complete_and_in_order(
) {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    // the organisation and its weddings, no integration: only the stream reads the events
    db.batch_execute(&format!(
        "INSERT INTO organizations (id, name) VALUES ('{ORG}', 'Replayed Weddings');
         INSERT INTO weddings (id, organization_id, couple_names)
           SELECT ('0d000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, '{ORG}', 'Couple ' || i
           FROM generate_series(0, 9) i;"
    ))
    .await
    .unwrap();
    let work = Workdir::new(&cluster);
    configure(&work, &format!("stream_token = \"{TOKEN}\"\n"), "");
    let mut d = Limited::spawn(&work.config, &work.log, None);
    wait_connected(&mut d, &work).await;
    let base = stored_records(work.http).unwrap();
    for batch in 0..5 {
        db.batch_execute(&format!(
            "INSERT INTO form_field_values (organization_id, wedding_id, field_id, field_type, value)
               SELECT '{ORG}', ('0d000000-0000-4000-8000-' || lpad(to_hex(i % 10), 12, '0'))::uuid,
                      gen_random_uuid(), 'guest_count_matrix',
                      jsonb_build_object('adults', i % 300, 'children', {batch}, 'infants', 1,
                                         'notes', repeat(md5(i::text), 4))
               FROM generate_series(1, {}) i;",
            REPLAY_EVENTS / 5
        ))
        .await
        .unwrap();
    }
    let http = work.http;
    wait_for_async(Duration::from_secs(300), "the events to be stored", || {
        d.assert_running(&work.log);
        let n = stored_records(http);
        async move { n.is_some_and(|n| n >= base + REPLAY_EVENTS as u64) }
    })
    .await;
    let rss_before = d.rss_mib();
    let peak_before = d.peak_rss_mib();

    let url = format!("http://{http}/events/stream?organization={ORG}");
    // one replay alone first: how many events and bytes a replay is
    let started = Instant::now();
    let (first, bytes) = replay(url.clone(), None).await;
    let expected_count = first.len();
    eprintln!(
        "one replay alone: {expected_count} messages, {:.1} MiB of SSE, in {:?} (3 s of quiet included)",
        bytes as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
    assert!(bytes > 10 << 20, "a replay is many MB: {bytes} bytes");
    assert!(
        expected_count >= REPLAY_EVENTS,
        "{expected_count} events replayed"
    );

    // two more that open a replay and never read: their streams must wait, not buffer
    let client = reqwest::Client::new();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let resp = client
            .get(&url)
            .bearer_auth(TOKEN)
            .header("last-event-id", "0000000000000000:00000000")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        stalled.push(resp);
    }
    let started = Instant::now();
    let replays: Vec<_> = (0..REPLAYS)
        .map(|_| tokio::spawn(replay(url.clone(), Some(expected_count))))
        .collect();
    let mut results = Vec::new();
    for r in replays {
        results.push(r.await.unwrap().0);
    }
    let took = started.elapsed();
    let peak = d.peak_rss_mib();
    let rss_after = d.rss_mib();
    drop(stalled);
    assert!(d.terminate().success());

    let expected: Vec<String> = read_queue(&work.queue)
        .into_iter()
        .filter(|r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.data.organization_id.as_deref() == Some(ORG))
        })
        .map(|r| r.id.to_string())
        .collect();
    assert!(first == expected, "the first replay is complete and in order");
    for (i, ids) in results.iter().enumerate() {
        assert!(ids == &expected, "replay {i} is not complete and in order");
    }
    eprintln!(
        "{REPLAYS} concurrent full replays (+2 stalled) of {expected_count} events in {took:?}: RSS \
         {rss_before} MiB before (peak {peak_before} MiB), peak {peak} MiB during (bound \
         {REPLAY_RSS_BOUND_MIB} MiB), {rss_after} MiB after"
    );
    assert!(
        peak < REPLAY_RSS_BOUND_MIB,
        "peak RSS {peak} MiB over the {REPLAY_RSS_BOUND_MIB} MiB bound"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_streams_a_live_stream_gets_503_with_retry_after_and_a_json_reason() {
    let cluster = cluster_with_schema();
    let db = sql(&cluster).await;
    seed(&db, 1, "http://127.0.0.1:9/unused").await;
    let dir = tempfile::tempdir().unwrap();
    let toml = daemon::config_toml(&cluster, &dir.path().join("q"), 0).replace(
        "[http]\n",
        &format!("[http]\nstream_token = \"{TOKEN}\"\nmax_streams = 2\nidle_timeout = \"1s\"\n"),
    );
    let d = daemon::start(&toml).await;
    let url = format!("http://{}/events/stream?organization={ORG}", d.http_addr);
    let client = reqwest::Client::new();
    let open = |c: &reqwest::Client| c.get(&url).bearer_auth(TOKEN).send();
    let first = open(&client).await.unwrap();
    let second = open(&client).await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));

    let refused = open(&client).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: serde_json::Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many live streams")
            && body["limit"] == "[http] max_streams"
            && body["max_streams"] == 2,
        "{body}"
    );
    // the other endpoints still answer
    assert_eq!(http_get(d.http_addr, "/healthz").map(|(c, _)| c), Some(200));

    // a stream closed by its client gives its place back (noticed at its next write)
    drop(first);
    wait_for_async(
        Duration::from_secs(30),
        "a stream's place to come back",
        || async {
            add_field(&db, &wedding(0)).await;
            let r = open(&client).await.unwrap();
            r.status() == 200
        },
    )
    .await;

    // a kept-alive connection with no request in progress is closed after idle_timeout
    let mut kept = TcpStream::connect(d.http_addr).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: fieldsync\r\n\r\n")
        .unwrap();
    let answered = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        closed_by_server(&kept, Instant::now() + Duration::from_secs(10))
    })
    .await
    .unwrap();
    let idle_for = answered.elapsed();
    assert!(closed, "the idle kept-alive connection was closed");
    assert!(
        idle_for >= Duration::from_millis(900) && idle_for < Duration::from_secs(4),
        "closed after {idle_for:?}, idle_timeout is 1s"
    );
    drop(second);
    d.stop().await.unwrap();
}

#[test]
fn each_http_limit_is_validated_and_its_error_names_the_key() {
    let base = "[http]\nlisten = \"127.0.0.1:0\"\n";
    for (line, key) in [
        ("header_read_timeout = \"0s\"", "http.header_read_timeout"),
        ("idle_timeout = \"0s\"", "http.idle_timeout"),
        ("max_streams = 0", "http.max_streams"),
        ("max_connections = 10\nmax_streams = 10", "http.max_streams"),
        ("max_connections = 2000000", "http.max_connections"),
        ("max_connections = -1", "http.max_connections"),
    ] {
        let text = format!("{base}{line}\n");
        let e =
            fieldsync::config::Config::from_toml_str(&text, "test", std::iter::empty::<(String, String)>())
                .err()
                .unwrap_or_else(|| panic!("{line:?} was accepted"))
                .to_string();
        assert!(e.contains(key), "{line:?}: {e}");
    }
    let ok = fieldsync::config::Config::from_toml_str(
        &format!("{base}max_connections = 100\nmax_streams = 8\nheader_read_timeout = \"3s\"\n"),
        "test",
        std::iter::empty::<(String, String)>(),
    )
    .unwrap();
    assert_eq!(ok.http.max_connections, Some(100));
    assert_eq!(ok.http.header_read_timeout, Duration::from_secs(3));
    assert_eq!(fieldsync::serve::http::derived_max_connections(1024), 768);
    assert_eq!(fieldsync::serve::http::derived_max_connections(65536), 4096);
    assert_eq!(fieldsync::serve::http::derived_max_connections(100), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_to_the_admin_port_under_a_1024_descriptor_limit_leave_healthz_capture_and_delivery_working(
) {
    let admin = SocketAddr::from(([127, 0, 0, 1], crate::support::daemon::free_port()));
    let (_cluster, receiver, db, work, mut d) = flood_target(
        "",
        &format!("[admin]\nlisten = \"{admin}\"\nuser = \"dba\"\npassword = \"a-long-admin-password\"\n"),
    )
    .await;
    let fds_before = d.open_fds();

    // the flood: 2,000 connections to the admin port that never log in
    let held = tokio::task::spawn_blocking(move || {
        (0..IDLE_CONNECTIONS)
            .map(|i| {
                TcpStream::connect_timeout(&admin, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("admin connection {i}: {e}"))
            })
            .collect::<Vec<TcpStream>>()
    })
    .await
    .unwrap();
    let fds_during = d.open_fds();

    // while they are held: /healthz answers, a change is captured and delivered
    let http = work.http;
    let healthz = tokio::task::spawn_blocking(move || http_get(http, "/healthz"))
        .await
        .unwrap();
    assert_eq!(healthz.map(|(code, _)| code), Some(200));
    let delivered = receiver.accepted().len();
    add_field(&db, &wedding(0)).await;
    delivered_beyond(
        &receiver,
        delivered,
        "a change delivered while the admin port is flooded",
    )
    .await;
    d.assert_running(&work.log);
    drop(held);
    let log = std::fs::read_to_string(&work.log).unwrap();
    eprintln!(
        "admin flood under RLIMIT_NOFILE={NOFILE}: descriptors {fds_before} before, {fds_during} during"
    );
    assert!(
        !log.contains("Too many open files") && !log.contains("cannot connect to the endpoint"),
        "no descriptor exhaustion: {log}"
    );
    assert!(
        fds_during < fds_before + 200,
        "the admin port holds at most its caps: {fds_during} descriptors"
    );
    d.terminate();
}

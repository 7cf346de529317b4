//! The SQL admin port under hostile input, against the real `fieldsync` binary over real sockets
//! (issue 13): long operator chains, oversized and malformed protocol messages, connection floods,
//! idle and half-sent connections, password guessing, arithmetic overflow, too many columns,
//! unknown integrations, and random bytes. After each, the daemon still runs (`/healthz`) and a
//! normal login and query work on a new connection.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dispatch::dispatch_toml;
use crate::support::daemon::{free_port, http_get, DaemonProcess, Workdir};
use crate::support::{cluster_with_schema, wait_for_async, Cluster};

const DEADLINE: Duration = Duration::from_secs(60);
const USER: &str = "dba";
const PASSWORD: &str = "correct horse battery staple";
/// The defaults the daemon runs with (`[admin]` in `config.example.toml`).
const MAX_CONNECTIONS: usize = 64;
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A `fieldsync` child process with the admin port on.
struct Hostile {
    work: Workdir,
    daemon: DaemonProcess,
    admin: SocketAddr,
    _cluster: Cluster,
}

impl Hostile {
    async fn start() -> Hostile {
        let cluster = cluster_with_schema();
        let work = Workdir::new(&cluster);
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut config = std::fs::read_to_string(&work.config).unwrap();
        config += &format!("\n[admin]\nlisten = \"{admin}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n");
        config += &dispatch_toml(2);
        std::fs::write(&work.config, config).unwrap();
        let mut daemon = DaemonProcess::spawn(&work.config, work.http, &work.log);
        let start = Instant::now();
        loop {
            assert!(daemon.try_wait().is_none(), "the daemon exited:\n{}", log(&work));
            // a probe that logs in, then leaves and waits for its connection to end, so that it
            // holds no slot when the test starts
            let probe = conninfo(admin, PASSWORD).connect(tokio_postgres::NoTls).await;
            if let Ok((client, conn)) = probe {
                drop(client);
                let _ = conn.await;
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the admin port never answered:\n{}",
                log(&work)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Hostile {
            work,
            daemon,
            admin,
            _cluster: cluster,
        }
    }

    /// Still running, `/healthz` answers, and a new connection logs in and queries.
    async fn lives(&mut self) {
        assert!(
            self.daemon.try_wait().is_none(),
            "the daemon died:\n{}",
            log(&self.work)
        );
        assert_eq!(
            http_get(self.work.http, "/healthz").map(|(code, _)| code),
            Some(200)
        );
        let client = driver(self.admin, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("a normal login fails: {e}\n{}", log(&self.work)));
        let connected: bool = client
            .query_one("SELECT connected FROM status", &[])
            .await
            .expect("a normal query")
            .get(0);
        let _ = connected;
    }

    fn rss_kib(&self) -> u64 {
        proc_status_kib(self.daemon.pid(), "VmRSS:")
    }

    fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.daemon.pid(), "VmHWM:")
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn log(work: &Workdir) -> String {
    let text = std::fs::read_to_string(&work.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn conninfo(admin: SocketAddr, password: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(admin.ip().to_string())
        .port(admin.port())
        .user(USER)
        .password(password)
        .dbname("fieldsync")
        .connect_timeout(Duration::from_secs(10));
    c
}

async fn driver(admin: SocketAddr, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = conninfo(admin, password).connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A login from another loopback address (`127.0.0.2`): the throttle counts per address.
async fn driver_from(
    local: IpAddr,
    admin: SocketAddr,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let stream = socket.connect(admin).await.expect("tcp connect");
    let (client, conn) = conninfo(admin, password)
        .connect_raw(stream, tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// The SQLSTATE a simple query fails with (`None` when it succeeds).
async fn refused(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    match client.simple_query(sql).await {
        Ok(_) => None,
        Err(e) => Some(sqlstate(&e).unwrap_or("no sqlstate").to_owned()),
    }
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = (3i32 << 16).to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "fieldsync")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Reads backend messages until an ErrorResponse (its SQLSTATE) or the end of the stream
/// (`None`); a reset counts as the end.
async fn error_code<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.ok()?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let mut body = vec![0u8; usize::try_from(len).ok()?.checked_sub(4)?];
        s.read_exact(&mut body).await.ok()?;
        if head[0] == b'E' {
            return body
                .split(|b| *b == 0)
                .find(|f| f.first() == Some(&b'C'))
                .map(|f| String::from_utf8_lossy(&f[1..]).into_owned());
        }
    }
}

/// Reads until the server closes; panics past `deadline`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, deadline: Duration) {
    let mut sink = [0u8; 4096];
    let read_to_end = async {
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(deadline, read_to_end)
        .await
        .expect("the daemon closes the connection");
}

fn chain(first: &str, term: &str, terms: usize) -> String {
    format!("SELECT {first}{}", term.repeat(terms - 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_chain_of_20000_terms_is_refused_as_too_complex_and_the_daemon_lives() {
    let mut d = Hostile::start().await;
    let client = driver(d.admin, PASSWORD).await.unwrap();
    for (first, term) in [("true", " OR true"), ("1", "+1"), ("'a'", "||'a'")] {
        let sql = chain(first, term, 1_500);
        assert_eq!(
            refused(&client, &sql).await.as_deref(),
            Some("54001"),
            "{term} x 1500"
        );
        // the longest chain admitted (64 operators) runs in the daemon; one more is refused
        assert_eq!(
            refused(&client, &chain(first, term, 65)).await,
            None,
            "{term} x 65"
        );
        assert_eq!(
            refused(&client, &chain(first, term, 66)).await.as_deref(),
            Some("54001"),
            "{term} x 66"
        );
    }
    // nesting (sqlparser admits about 25 levels of parentheses), a chain inside each level, runs
    let nested = format!("SELECT {}1{}", "(1+".repeat(20), ")".repeat(20));
    assert_eq!(refused(&client, &nested).await, None, "{nested}");
    // 20,000 terms: `1+1+…` is 40 KB, within max_query_bytes (64 KiB), and too complex; the OR
    // and || chains are over 64 KiB and refused for their length before they are tokenized
    assert_eq!(
        refused(&client, &chain("1", "+1", 20_000)).await.as_deref(),
        Some("54001")
    );
    for (first, term) in [("true", " OR true"), ("'a'", "||'a'")] {
        let sql = chain(first, term, 20_000);
        assert_eq!(
            refused(&client, &sql).await.as_deref(),
            Some("54000"),
            "{term} x 20000"
        );
    }
    // and by the extended protocol (a driver's Parse)
    let e = client.prepare(&chain("1", "+1", 20_000)).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("54001"));
    // the same connection carries on
    let one: i64 = client.query_one("SELECT 1 + 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 2);
    d.lives().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_too_many_columns_and_unknown_integrations_get_their_sqlstates() {
    let mut d = Hostile::start().await;
    let client = driver(d.admin, PASSWORD).await.unwrap();
    for (sql, code) in [
        ("SELECT -9223372036854775808 / -1", "22003"),
        ("SELECT 9223372036854775807 + 1", "22003"),
        ("SELECT abs(-9223372036854775808)", "22003"),
        ("SELECT 1 / 0", "22012"),
        ("SELECT requeue('nope')", "42704"),
        ("SELECT pause('nope')", "42704"),
        ("SELECT resume('nope')", "42704"),
    ] {
        assert_eq!(refused(&client, sql).await.as_deref(), Some(code), "{sql}");
    }
    let e = client.simple_query("SELECT requeue('nope')").await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert!(db.hint().is_some_and(|h| h.contains("integrations")), "{db:?}");

    let columns = |n: usize| format!("SELECT {}", vec!["1"; n].join(","));
    assert_eq!(refused(&client, &columns(1_665)).await.as_deref(), Some("54011"));
    // 70,000 columns: 140 KB of text, refused for its length; the protocol stays in step
    assert_eq!(refused(&client, &columns(70_000)).await.as_deref(), Some("54000"));
    let e = client.prepare(&columns(1_665)).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("54011"));
    let rows = client.simple_query(&columns(1_664)).await.unwrap();
    assert!(!rows.is_empty(), "1664 columns are fine");
    let one: i64 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the connection is still in step");
    d.lives().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_startup_message_is_refused_without_growing_the_daemon_and_a_malformed_one_closes_only_its_connection(
) {
    const SENT_PER_CONNECTION: usize = 32 << 20;
    const CONNECTIONS: usize = 4;
    /// The daemon's resident memory may grow by at most this while 4 clients each claim a
    /// 100 MB startup packet and try to send 32 MB of it.
    const RSS_BOUND_KIB: u64 = 16 * 1024;

    let mut d = Hostile::start().await;
    let before = (d.rss_kib(), d.peak_rss_kib());
    let mut sent_total = 0;
    let mut floods = Vec::new();
    for _ in 0..CONNECTIONS {
        let admin = d.admin;
        floods.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
            s.write_all(&100_000_000i32.to_be_bytes()).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < SENT_PER_CONNECTION {
                match tokio::time::timeout(Duration::from_secs(5), s.write(&chunk)).await {
                    Ok(Ok(n)) if n > 0 => sent += n,
                    _ => break, // closed, reset, or no longer read
                }
            }
            let code = error_code(&mut s).await;
            (sent, code)
        }));
    }
    for f in floods {
        let (sent, code) = f.await.unwrap();
        sent_total += sent;
        // the refusal, or a reset when our unread bytes beat it
        assert!(code.is_none() || code.as_deref() == Some("08P01"), "{code:?}");
    }
    let after = (d.rss_kib(), d.peak_rss_kib());
    let grew = after
        .0
        .saturating_sub(before.0)
        .max(after.1.saturating_sub(before.1));
    eprintln!(
        "oversized startup: {CONNECTIONS} connections sent {} KiB in all; RSS {} -> {} KiB, peak {} -> {} KiB",
        sent_total / 1024,
        before.0,
        after.0,
        before.1,
        after.1
    );
    assert!(grew < RSS_BOUND_KIB, "RSS grew by {grew} KiB");

    // a malformed SASL message before login: that connection closes with 08P01 ...
    let survivor = driver(d.admin, PASSWORD).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(d.admin).await.unwrap();
    s.write_all(&startup_packet(USER)).await.unwrap();
    let mut bad = b"SCRAM-SHA-256\0".to_vec();
    bad.extend(1_000_000i32.to_be_bytes());
    bad.extend(b"n,,n=,r=abc");
    s.write_all(b"p").await.unwrap();
    s.write_all(&((bad.len() + 4) as i32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bad).await.unwrap();
    assert_eq!(error_code(&mut s).await.as_deref(), Some("08P01"));
    closed_within(&mut s, Duration::from_secs(10)).await;
    // ... and so does a query before login, and an impossible message length
    for frame in [
        [b"Q".as_slice(), &13i32.to_be_bytes(), b"SELECT 1\0"].concat(),
        [b"p".as_slice(), &(-5i32).to_be_bytes()].concat(),
    ] {
        let mut s = tokio::net::TcpStream::connect(d.admin).await.unwrap();
        s.write_all(&startup_packet(USER)).await.unwrap();
        s.write_all(&frame).await.unwrap();
        assert_eq!(error_code(&mut s).await.as_deref(), Some("08P01"));
        closed_within(&mut s, Duration::from_secs(10)).await;
    }
    // ... while the other connection carries on
    let one: i64 = survivor.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert!(
        !std::fs::read_to_string(&d.work.log).unwrap().contains("panicked"),
        "no task panicked:\n{}",
        log(&d.work)
    );
    d.lives().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_53300_and_an_idle_unauthenticated_one_is_closed_after_the_auth_timeout(
) {
    let mut d = Hostile::start().await;
    // all the slots, held by connections that never say a word (and one that sent half a length)
    let opened = Instant::now();
    let mut idle = Vec::new();
    for i in 0..MAX_CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(d.admin).await.unwrap();
        if i == 0 {
            s.write_all(&[0, 0]).await.unwrap();
        }
        idle.push(s);
    }
    // Every one of them holds a slot: under load the probe of `start` may still have held one
    // when they came, and one was refused (53300 at once, then closed); it is opened again.
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut refused = 0;
        for s in idle.iter_mut().skip(1) {
            let mut byte = [0u8; 1];
            if !matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                *s = tokio::net::TcpStream::connect(d.admin).await.unwrap();
                refused += 1;
            }
        }
        if refused == 0 {
            break;
        }
        assert!(
            opened.elapsed() < AUTH_TIMEOUT / 2,
            "the slots never all went to the idle connections"
        );
    }
    let Err(e) = driver(d.admin, PASSWORD).await else {
        panic!("a connection past the limit was accepted")
    };
    assert_eq!(sqlstate(&e), Some("53300"), "{e}");
    let mut raw = tokio::net::TcpStream::connect(d.admin).await.unwrap();
    assert_eq!(error_code(&mut raw).await.as_deref(), Some("53300"));
    assert!(
        opened.elapsed() < AUTH_TIMEOUT,
        "the refusals came before the idle ones timed out"
    );

    // the idle ones are closed after the authentication timeout, with a word
    for s in &mut idle {
        assert_eq!(error_code(s).await.as_deref(), Some("57014"));
    }
    let waited = opened.elapsed();
    assert!(
        waited >= AUTH_TIMEOUT - Duration::from_millis(500) && waited < AUTH_TIMEOUT * 2,
        "closed after {waited:?}"
    );
    // and their slots are free again
    wait_for_async(DEADLINE, "a login once the slots are free", || async {
        driver(d.admin, PASSWORD).await.is_ok()
    })
    .await;
    d.lives().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_logged_without_the_password_and_throttled_per_address() {
    const GUESS: &str = "hunter2-guessed-password";
    let mut d = Hostile::start().await;
    let guesser: IpAddr = [127, 0, 0, 2].into();
    for _ in 0..5 {
        let Err(e) = driver_from(guesser, d.admin, GUESS).await else {
            panic!("a wrong password was accepted")
        };
        assert_eq!(sqlstate(&e), Some("28P01"), "{e}");
    }
    // the sixth attempt from that address is refused even with the right password, after a delay
    let asked = Instant::now();
    let Err(e) = driver_from(guesser, d.admin, PASSWORD).await else {
        panic!("not throttled")
    };
    assert_eq!(sqlstate(&e), Some("28000"), "{e}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "{:?}",
        asked.elapsed()
    );
    // another address logs in as usual, meanwhile
    let other = driver(d.admin, PASSWORD)
        .await
        .expect("127.0.0.1 is not throttled");
    let one: i64 = other.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    wait_for_async(DEADLINE, "the failures in the log", || async {
        std::fs::read_to_string(&d.work.log)
            .unwrap_or_default()
            .matches("password authentication failed")
            .count()
            >= 5
    })
    .await;
    let text = std::fs::read_to_string(&d.work.log).unwrap();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("password authentication failed"))
        .collect();
    for line in &failures {
        assert!(line.contains(&format!("{USER:?}")), "names the user: {line}");
        assert!(line.contains("127.0.0.2"), "names the address: {line}");
    }
    assert!(!text.contains(GUESS), "the password is never logged");
    assert!(!text.contains(PASSWORD), "nor the right one");
    assert!(text.contains("too many failed attempts"), "{}", log(&d.work));
    d.lives().await;
}

/// Random bytes on real admin sockets, some after a valid startup packet (so they reach the
/// SASL exchange): each connection is answered or closed, and nothing else is touched.
#[test]
fn random_bytes_on_a_real_admin_socket_close_that_connection_and_nothing_else() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut d = rt.block_on(Hostile::start());
    let admin = d.admin;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let input = (any::<bool>(), prop::collection::vec(any::<u8>(), 0..4096));
    runner
        .run(&input, |(after_startup, bytes)| {
            let mut s = std::net::TcpStream::connect(admin).expect("connect");
            s.set_read_timeout(Some(AUTH_TIMEOUT * 2)).unwrap();
            let mut sent = if after_startup {
                startup_packet(USER)
            } else {
                Vec::new()
            };
            sent.extend(&bytes);
            let _ = s.write_all(&sent);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            match s.read_to_end(&mut sink) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => return Err(TestCaseError::fail(format!("not closed: {e}"))),
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(d.lives());
}

//! Slow, idle and too many clients against the real server on loopback: idle sockets are
//! closed, slow bodies cut, a health check is answered over the connection limit once the
//! idle ones are dropped, a body over the limit is 413 without being read, and the memory of
//! the real binary stays bounded under many clients uploading at once.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{FakeGitHub, Harness, SECRET};
use kubeharden::edge::Limits;

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(2),
        body_min_rate: 0,
        max_body: 1024 * 1024,
        body_buffer: 4 * 1024 * 1024,
        max_connections: 64,
    }
}

async fn connect(url: &str) -> TcpStream {
    TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Read until the server closes the connection (or `within` passes); what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A webhook head with a signature that only the body could refute.
fn webhook_head(url: &str, length: Option<usize>) -> String {
    let addr = url.trim_start_matches("http://");
    let length = match length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    format!(
        "POST /api/github/webhooks HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: pull_request\r\n\
         X-GitHub-Delivery: d-1\r\nX-Hub-Signature-256: sha256={}\r\n{length}\r\n",
        "0".repeat(64)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_and_an_idle_kept_alive_connection_are_closed() {
    let h = Harness::start_with_limits(Limits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..limits()
    })
    .await;
    // Never a byte: closed after the header timeout.
    let mut silent = connect(&h.url).await;
    let started = Instant::now();
    let answer = read_to_close(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(answer.as_deref(), Some(""), "closed without an answer");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // Half a head, never finished: the same.
    let mut slow_head = connect(&h.url).await;
    slow_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut slow_head, Duration::from_secs(10))
            .await
            .is_some()
    );

    // A kept-alive connection gets its answer, then the idle timeout (longer than the header
    // timeout: the wait for a next request is not held to the head's deadline).
    let mut kept = connect(&h.url).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut kept, Duration::from_secs(10))
        .await
        .expect("the idle connection was not closed");
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1800), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_by_its_deadline_and_by_the_minimum_rate() {
    for (limits, cut_before) in [
        // 20 bytes a second against a 2 s deadline.
        (limits(), Duration::from_secs(5)),
        // 20 bytes a second against a minimum of 1000 (after the first second), no deadline
        // in reach.
        (
            Limits {
                body_timeout: Duration::from_secs(60),
                body_min_rate: 1000,
                ..limits()
            },
            Duration::from_secs(4),
        ),
    ] {
        let h = Harness::start_with_limits(limits).await;
        let mut stream = connect(&h.url).await;
        stream
            .write_all(webhook_head(&h.url, Some(100_000)).as_bytes())
            .await
            .unwrap();
        let (mut read, mut write) = stream.into_split();
        let trickle = tokio::spawn(async move {
            while write.write_all(b"{\"a\":1}  ").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut answer)).await;
        trickle.abort();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status(&answer), 408, "{answer}");
        assert!(started.elapsed() < cut_before, "{:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_connection_limit_a_health_check_is_answered_once_idle_ones_are_dropped() {
    let h = Harness::start_with_limits(Limits {
        max_connections: 8,
        header_timeout: Duration::from_secs(2),
        ..limits()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(&h.url).await);
    }
    // More than the limit: these wait in the backlog, neither refused nor failing the server.
    for _ in 0..20 {
        idle.push(connect(&h.url).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(30),
        crate::support::get(&h.url, "/healthz"),
    )
    .await
    .expect("the health check was never answered");
    assert_eq!((status, body.as_str()), (200, "ok"));
    // It waited for the idle connections' header timeout, not for ever.
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    for mut socket in idle.drain(..8) {
        assert!(
            read_to_close(&mut socket, Duration::from_secs(1))
                .await
                .is_some()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_declared_or_chunked_and_never_buffered_whole() {
    let h = Harness::start_with_limits(limits()).await;
    // Declared: answered from the head alone; not a byte of the body is sent.
    let mut stream = connect(&h.url).await;
    stream
        .write_all(webhook_head(&h.url, Some(100 * 1024 * 1024)).as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("no answer without the body");
    assert_eq!(status(&answer), 413, "{answer}");

    // Chunked, growing past the limit: 413 as soon as it is over, while the client still sends.
    let stream = connect(&h.url).await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(webhook_head(&h.url, None).as_bytes())
        .await
        .unwrap();
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0usize;
        for _ in 0..(8 * 16) {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if write.write_all(&frame).await.is_err() {
                break;
            }
            sent += chunk.len();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sent
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut answer))
        .await
        .expect("no answer")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert_eq!(status(&answer), 413, "{answer}");
    let sent = sender.await.unwrap();
    assert!(sent < 8 * 1024 * 1024, "the client sent it all: {sent}");
    // The buffer held the limit's worth at most.
    let peak = h.state.body_budget.peak();
    assert!(peak <= 1024 * 1024 + 64 * 1024, "peak buffered {peak}");
    assert!(h.github.calls().is_empty());
}

/// Peak resident memory of a process, in bytes (Linux's `VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("no VmHWM")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_uploading_24_mb_each_do_not_raise_the_binarys_memory_past_its_budget() {
    let key = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/github/test-app-key.pub.pem"),
    )
    .unwrap();
    let github = FakeGitHub::start(crate::support::APP_ID, &key).await;
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("kubeharden.db").display());
    let budget = 32 * 1024 * 1024;
    let app = crate::crash::start_with(
        &github.url,
        &db,
        crate::support::free_port(),
        &tmp.path().join("app.log"),
        &[
            ("BODY_BUFFER_BYTES", &budget.to_string()),
            ("RUST_LOG", "info"),
        ],
    );
    crate::crash::ready(&app).await;
    let before = peak_rss(app.child.id());
    const SIZE: usize = 24 * 1024 * 1024;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let url = app.url.clone();
        clients.push(tokio::spawn(async move {
            let stream = connect(&url).await;
            let (mut read, mut write) = stream.into_split();
            let head = webhook_head(&url, Some(SIZE));
            let sender = tokio::spawn(async move {
                if write.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 256 * 1024];
                for _ in 0..SIZE / chunk.len() {
                    if write.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut answer)).await;
            sender.abort();
            status(&String::from_utf8_lossy(&answer))
        }));
    }
    let mut statuses = Vec::new();
    for c in clients {
        statuses.push(c.await.unwrap());
    }
    let after = peak_rss(app.child.id());
    // Each is refused: a wrong signature once read (401), or no room in the budget (503).
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503 || *s == 0),
        "{statuses:?}"
    );
    assert!(statuses.contains(&503), "{statuses:?}");
    let growth = after.saturating_sub(before);
    println!(
        "20 clients × 24 MB: peak RSS {} MiB → {} MiB (+{} MiB), budget {} MiB; answers {statuses:?}",
        before >> 20,
        after >> 20,
        growth >> 20,
        budget >> 20
    );
    // Unbounded, the bodies alone were 480 MB; the budget plus connection buffers and the
    // allocator's slack stay far under that.
    assert!(
        growth < 160 * 1024 * 1024,
        "peak RSS grew by {} MiB",
        growth >> 20
    );
    // And the server still takes a signed delivery.
    let event = crate::support::pull_request_event("labeled", 1, "base", "head");
    assert_eq!(
        crate::support::deliver_to(&app.url, "pull_request", &event, Some(SECRET), "d-ok").await,
        200
    );
    crate::crash::kill(app);
}

//! What a client can hold: idle and slowloris connections, oversized and trickled bodies, the
//! answers the HTTP layer writes itself, the connection cap and the shutdown deadline. Each test
//! talks raw TCP to a server started on a free 127.0.0.1 port.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use aisle_serve::{Limits, ServeOptions};
use support::DemoServer;

fn server(limits: Limits) -> DemoServer {
    DemoServer::start_with(ServeOptions {
        limits,
        ..ServeOptions::default()
    })
    .expect("server")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// Reads one whole answer (the server closes after it, or it has a content-length); returns the
/// status, the head and the body.
fn answer(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return (status, head, body);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a whole answer: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "reading the answer: {e} (so far {:?})",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

/// `{"error": "..."}` with a non-empty message, or a panic naming what came instead.
fn error_message(head: &str, body: &str) -> String {
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "not JSON: {head}"
    );
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    let msg = v["error"].as_str().unwrap_or_default().to_string();
    assert!(!msg.is_empty(), "no error message: {body}");
    msg
}

/// Whether the server has closed `s` (EOF or reset); waits up to `wait` for it.
fn closed_by_server(s: &mut TcpStream, wait: Duration) -> bool {
    let _ = s.set_read_timeout(Some(wait));
    let mut b = [0u8; 512];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// One GET on a fresh connection: status and how long it took.
fn timed_get(url: &str) -> (u16, Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .max_idle_connections(0)
        .build()
        .into();
    let t = Instant::now();
    let status = agent
        .get(url)
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (status, t.elapsed())
}

/// The bound stated in docs/serving.md: under 2,000 hostile connections a `/healthz` or a
/// `/search` on a new connection still answers within it.
const ANSWER_BOUND: Duration = Duration::from_secs(2);

#[test]
fn two_thousand_idle_and_slowloris_connections_do_not_starve_the_server() {
    const IDLE: usize = 1500;
    const SLOW: usize = 500;
    // Client and server share this process's descriptors: 2,000 client sockets plus the
    // server's side of each connection it holds.
    match aisle_serve::raise_open_file_limit() {
        Ok(limits) => eprintln!("open files (before, after): {limits:?}"),
        Err(e) => eprintln!("open files: could not raise the soft limit: {e}"),
    }
    let soft = aisle_serve::open_file_limit().map_or(u64::MAX, |l| l.soft) as usize;
    let room = soft.saturating_sub(IDLE + SLOW + 256);
    assert!(
        room >= 256,
        "the open-file limit ({soft}) leaves no room for 2,000 client sockets and the server's \
         side of them: run with `ulimit -n 4096` or more"
    );
    let cap = room.min(1024);
    let header_timeout = Duration::from_secs(3);
    let server = server(Limits {
        max_connections: cap,
        header_timeout,
        ..Limits::default()
    });
    let addr = server.addr();
    let user = server.user_with_history();
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(addr)).collect();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = connect(addr);
            // A request head that never ends: one more header byte every 500 ms.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            s
        })
        .collect();
    eprintln!(
        "{} connections opened in {:.2} s (server cap {cap})",
        idle.len() + slow.len(),
        started.elapsed().as_secs_f64()
    );

    // Probe while the slowloris clients trickle.
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    let mut last_trickle = Instant::now();
    for i in 0..24 {
        if last_trickle.elapsed() >= Duration::from_millis(500) {
            for s in &mut slow {
                let _ = s.write_all(b"a");
            }
            last_trickle = Instant::now();
        }
        let path = if i % 2 == 0 {
            "/healthz".to_string()
        } else {
            format!("/search?q=usb+cable&user={user}&k=10")
        };
        let (status, took) = timed_get(&format!("{}{path}", server.url()));
        assert_eq!(status, 200, "{path}");
        assert!(
            took < ANSWER_BOUND,
            "{path} took {took:?} under 2,000 hostile connections (bound {ANSWER_BOUND:?})"
        );
        worst = worst.max(took);
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = server.app().connections().expect("connection table");
    eprintln!("{probes} probes, slowest {worst:?}; connections now {seen:?}");
    assert!(seen.open <= cap, "{} open over the cap {cap}", seen.open);
    assert!(
        seen.evicted > 0,
        "2,000 connections over a cap of {cap} evicted none: {seen:?}"
    );

    // Every hostile connection is closed by the server: evicted, or past the header timeout
    // (the slowloris ones although they keep sending).
    let deadline = started + header_timeout * 2 + Duration::from_secs(5);
    let mut still_open = 0;
    for mut s in idle.into_iter().chain(slow) {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if !closed_by_server(&mut s, wait) {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open,
        0,
        "hostile connections still open {:?} after they began (header timeout {header_timeout:?})",
        started.elapsed()
    );
    // And the server is whole afterwards.
    assert_eq!(timed_get(&format!("{}/healthz", server.url())).0, 200);
    server.stop();
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = server(Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    });
    let mut s = connect(server.addr());
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (status, _, _) = answer(&mut s);
    assert_eq!(status, 200);
    // Kept alive for the next request, but not for ever.
    let t = Instant::now();
    assert!(
        closed_by_server(&mut s, Duration::from_secs(5)),
        "an idle keep-alive connection was still open after 5 s (header timeout 1 s)"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    server.stop();
}

#[test]
fn a_declared_oversized_body_is_refused_at_once_and_a_trickled_one_times_out() {
    let server = server(Limits {
        body_timeout: Duration::from_secs(1),
        ..Limits::default()
    });
    // 10^12 bytes announced, none sent: answered without waiting for them.
    let mut s = connect(server.addr());
    let t = Instant::now();
    s.write_all(
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000000000000\r\n\r\n",
    )
    .expect("write");
    let (status, head, body) = answer(&mut s);
    assert_eq!(status, 413, "{head}\n{body}");
    assert!(
        error_message(&head, &body).contains("1000000000000"),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // 100 bytes announced, 10 sent, then nothing: a 408 after the body timeout.
    let mut s = connect(server.addr());
    let t = Instant::now();
    s.write_all(
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"q\": \"us",
    )
    .expect("write");
    let (status, head, body) = answer(&mut s);
    assert_eq!(status, 408, "{head}\n{body}");
    error_message(&head, &body);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    server.stop();
}

#[test]
fn the_answers_of_the_http_layer_are_json_too() {
    let server = server(Limits::default());
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "garbage request line",
            b"THIS IS NOT HTTP\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a header without a colon",
            b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a 100 KiB header",
            {
                let mut r = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
                r.extend(std::iter::repeat_n(b'a', 100 * 1024));
                r.extend_from_slice(b"\r\n\r\n");
                r
            },
            431,
        ),
    ];
    for (what, request, want) in cases {
        let mut s = connect(server.addr());
        // The server may answer and close before the whole request is written.
        let _ = s.write_all(&request);
        let (status, head, body) = answer(&mut s);
        assert_eq!(status, want, "{what}: {head}\n{body}");
        let msg = error_message(&head, &body);
        eprintln!("{what}: {status} {msg}");
    }
    // A very long request target: refused by the HTTP layer (414 or 431), with JSON.
    let mut s = connect(server.addr());
    let long = format!(
        "GET /search?q={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let _ = s.write_all(long.as_bytes());
    let (status, head, body) = answer(&mut s);
    assert!(matches!(status, 414 | 431), "{head}\n{body}");
    error_message(&head, &body);
    // The server is still up.
    assert_eq!(timed_get(&format!("{}/healthz", server.url())).0, 200);
    server.stop();
}

#[test]
fn at_the_cap_with_every_connection_busy_a_new_one_gets_a_503_at_once() {
    let server = server(Limits {
        max_connections: 2,
        body_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
        ..Limits::default()
    });
    // Two connections made busy: each has sent a request head and is trickling its body.
    let mut busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(server.addr());
            s.write_all(
                b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 100\r\n\r\n{",
            )
            .expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut s = connect(server.addr());
    let t = Instant::now();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, head, body) = answer(&mut s);
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(error_message(&head, &body).contains("cap"), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let seen = server.app().connections().expect("connection table");
    assert_eq!((seen.cap, seen.shed), (2, 1), "{seen:?}");

    // Shutdown does not wait 30 s for the trickling bodies: they get the 1 s grace.
    let t = Instant::now();
    server.stop();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for s in &mut busy {
        assert!(closed_by_server(s, Duration::from_secs(2)));
    }
}

#[test]
fn at_the_cap_a_new_connection_takes_the_place_of_the_longest_idle_one() {
    let server = server(Limits {
        max_connections: 3,
        ..Limits::default()
    });
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = connect(server.addr());
            std::thread::sleep(Duration::from_millis(50));
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _) = timed_get(&format!("{}/healthz", server.url()));
    assert_eq!(status, 200);
    // The oldest one made room; the two others are still served.
    assert!(closed_by_server(&mut idle[0], Duration::from_secs(2)));
    for s in &mut idle[1..] {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        assert_eq!(answer(s).0, 200);
    }
    let seen = server.app().connections().expect("connection table");
    assert!(seen.evicted >= 1, "{seen:?}");
    server.stop();
}

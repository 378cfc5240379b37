//! What a client can hold: the accept loop, the cap on open connections, the timeouts, and the
//! JSON bodies of the answers that hyper writes on its own.
//!
//! `axum::serve` has no header-read timeout, no idle timeout and no connection cap: 1,100 idle
//! TCP connections under `ulimit -n 1024` made every `/healthz` time out, and slowloris clients
//! held their sockets for ever. So aisle drives hyper's HTTP/1 connections itself:
//! - **header timeout** ([`Limits::header_timeout`]): a request head (or, on a keep-alive
//!   connection, the next one) must arrive whole within it, or the connection is closed. This
//!   is hyper's `header_read_timeout`, which restarts while a connection waits for its next
//!   request (hyper >= 1.6), so it is the idle timeout too;
//! - **connection cap** ([`Limits::max_connections`]): at the cap, a new connection takes the
//!   place of the one that has waited longest without a request in flight (it is closed), so
//!   idle clients can never lock active ones out; when every connection has a request in
//!   flight, the new one gets a 503 at once (load shedding) instead of waiting;
//! - **body timeout and size** (in [`crate::api`]): a declared oversized body is a 413 before a
//!   byte of it is read, and a body must arrive within [`Limits::body_timeout`];
//! - **shutdown deadline** ([`Limits::shutdown_grace`]): requests in flight get that long to
//!   finish, then their connections are dropped;
//! - **JSON everywhere**: the 400, 414 and 431 answers hyper writes itself for requests it cannot
//!   parse get a `{"error": ...}` body ([`JsonErrors`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Limits of the HTTP layer (see the module docs).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most; the effective cap is also kept below the process's open-file
    /// limit ([`effective_cap`]).
    pub max_connections: usize,
    /// Time for a whole request head to arrive, and for an idle keep-alive connection to send
    /// its next one.
    pub header_timeout: Duration,
    /// Time for a whole request body to arrive.
    pub body_timeout: Duration,
    /// Time requests in flight get to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Largest request head (request line and headers), in bytes; hyper's minimum is 8,192.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_head_bytes: 64 * 1024,
        }
    }
}

/// File descriptors kept free of client connections: the model, index and log files, the
/// listener, a reload's files.
const FD_RESERVE: u64 = 64;

/// The connection cap actually applied: `wanted`, but never more than the open-file limit
/// leaves room for (a full descriptor table makes `accept` fail for everyone, `/healthz`
/// included).
pub fn effective_cap(wanted: usize) -> usize {
    match open_file_limit() {
        Some(FileLimit { soft, .. }) => wanted.min(soft.saturating_sub(FD_RESERVE).max(1) as usize),
        None => wanted,
    }
}

/// The limits on open files (`ulimit -n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// What the process may open now.
    pub soft: u64,
    /// What the soft limit may be raised to without privileges.
    pub hard: u64,
}

/// The soft and hard limits on open files, where the platform has them.
pub fn open_file_limit() -> Option<FileLimit> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit through a valid pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            return Some(FileLimit {
                soft: lim.rlim_cur,
                hard: lim.rlim_max,
            });
        }
        None
    }
    #[cfg(not(unix))]
    None
}

/// Raises the soft open-file limit to the hard one (a server must not run out of descriptors
/// at the common default of 1,024 while the system allows more). Returns the limits before and
/// after; `None` where the platform has no such limit.
pub fn raise_open_file_limit() -> io::Result<Option<(FileLimit, FileLimit)>> {
    #[cfg(unix)]
    {
        let Some(before) = open_file_limit() else {
            return Err(io::Error::last_os_error());
        };
        if before.soft < before.hard {
            let lim = libc::rlimit {
                rlim_cur: before.hard,
                rlim_max: before.hard,
            };
            // SAFETY: setrlimit reads one rlimit through a valid pointer.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(open_file_limit().map(|after| (before, after)))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// Connections the kernel may hold completed but not yet accepted. The common default (128)
/// overflowed while 2,000 clients connected at once, and each overflow cost its client a 1 s
/// SYN retransmission; the kernel still caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` (a `host:port`, resolved; the first address that binds wins) with a deep
/// accept backlog.
pub async fn bind(addr: &str) -> io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Raises the open-file limit ([`raise_open_file_limit`]) and says what it did and the connection
/// cap that results for `max_connections`, in one line for the operator.
pub fn raise_open_files_and_say(max_connections: usize) -> String {
    let raised = raise_open_file_limit();
    let cap = effective_cap(max_connections);
    match raised {
        Ok(Some((before, after))) => format!(
            "open files: soft limit {} -> {} (hard {}); at most {cap} connections",
            before.soft, after.soft, after.hard
        ),
        Ok(None) => format!("at most {cap} connections"),
        Err(e) => {
            format!("open files: could not raise the soft limit ({e}); at most {cap} connections")
        }
    }
}

/// One open connection as the cap sees it.
struct Slot {
    /// A request is being answered on it.
    busy: AtomicBool,
    /// Milliseconds after [`Table::epoch`] of its last request's end (or its opening).
    idle_since_ms: AtomicU64,
    /// Set to close it: it was chosen to make room for a new connection.
    evict: tokio::sync::Notify,
}

/// The open connections.
pub(crate) struct Table {
    cap: usize,
    epoch: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    evicted: AtomicU64,
    shed: AtomicU64,
}

/// What [`Table::admit`] decided for a new connection.
enum Admit {
    /// Served, in this slot (possibly after closing the longest-idle connection).
    Yes(Ticket),
    /// At the cap with every connection busy: answered 503 and closed.
    Full,
}

/// A connection's place in the table; frees it when dropped.
pub(crate) struct Ticket {
    id: u64,
    slot: Arc<Slot>,
    table: Arc<Table>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock() {
            open.remove(&self.id);
        }
    }
}

/// Marks its connection busy for as long as it lives (one request).
pub(crate) struct Busy {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot
            .idle_since_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.slot.busy.store(false, Ordering::Release);
    }
}

impl Table {
    pub(crate) fn new(cap: usize) -> Arc<Table> {
        Arc::new(Table {
            cap: cap.max(1),
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            evicted: AtomicU64::new(0),
            shed: AtomicU64::new(0),
        })
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.open.lock().map_or(0, |o| o.len())
    }

    /// Connections closed to make room for new ones, and connections refused with a 503.
    pub(crate) fn evicted_and_shed(&self) -> (u64, u64) {
        (
            self.evicted.load(Ordering::Relaxed),
            self.shed.load(Ordering::Relaxed),
        )
    }

    /// Closes the connection idle the longest with no request in flight, if there is one.
    fn evict_idlest(&self, open: &mut HashMap<u64, Arc<Slot>>) -> bool {
        let victim = open
            .iter()
            .filter(|(_, s)| !s.busy.load(Ordering::Acquire))
            .min_by_key(|(id, s)| (s.idle_since_ms.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(slot) => {
                // `notify_one` keeps the permit if the task is not waiting yet.
                slot.evict.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Out of descriptors: an evicted connection leaves the table at once but frees its
    /// descriptor only when its task runs, so a burst of new connections can briefly hold more
    /// than the cap. Closing the longest-idle connection makes room for `accept` again.
    fn make_room(&self) -> bool {
        match self.open.lock() {
            Ok(mut open) => self.evict_idlest(&mut open),
            Err(_) => false,
        }
    }

    fn admit(self: &Arc<Self>) -> Admit {
        let Ok(mut open) = self.open.lock() else {
            return Admit::Full;
        };
        if open.len() >= self.cap && !self.evict_idlest(&mut open) {
            self.shed.fetch_add(1, Ordering::Relaxed);
            return Admit::Full;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            busy: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            evict: tokio::sync::Notify::new(),
        });
        open.insert(id, Arc::clone(&slot));
        Admit::Yes(Ticket {
            id,
            slot,
            table: Arc::clone(self),
        })
    }
}

impl Ticket {
    fn busy(&self) -> Busy {
        self.slot.busy.store(true, Ordering::Release);
        Busy {
            slot: Arc::clone(&self.slot),
            epoch: self.table.epoch,
        }
    }
}

/// The answer to a connection over the cap while every connection is busy.
fn shed_answer() -> Vec<u8> {
    let body = r#"{"error":"the server is at its connection cap and every connection is busy: retry soon"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`; then stops
/// accepting, lets requests in flight finish for up to `limits.shutdown_grace`, and drops the
/// connections still open.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    table: Arc<Table>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Accept errors said, at most once a second.
    let mut said: Option<Instant> = None;
    let mut unsaid = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors (EMFILE, ENFILE): close the longest-idle
                        // connection. Either way give closing connections a moment instead of
                        // spinning, and say what happened without flooding the log.
                        let out_of_files = is_out_of_files(&e);
                        let freed = out_of_files && table.make_room();
                        if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            eprintln!(
                                "aisle-serve: accept: {e}{}{}",
                                if freed { "; closed the longest-idle connection" } else { "" },
                                if unsaid > 0 { format!(" ({unsaid} more since the last message)") } else { String::new() }
                            );
                            said = Some(Instant::now());
                            unsaid = 0;
                        } else {
                            unsaid += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(if freed { 2 } else { 20 })).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match table.admit() {
                    Admit::Yes(ticket) => {
                        tasks.spawn(connection(
                            stream,
                            peer,
                            router.clone(),
                            ticket,
                            limits.clone(),
                            stop_rx.clone(),
                        ));
                    }
                    Admit::Full => {
                        tasks.spawn(shed(stream));
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => {
                eprintln!(
                    "aisle-serve: {} connection(s) still open after the {:?} shutdown grace: dropped",
                    tasks.len(),
                    limits.shutdown_grace
                );
                tasks.abort_all();
                break;
            }
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    Ok(())
}

/// Whether `accept` failed for want of file descriptors (the process's or the system's).
fn is_out_of_files(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Answers 503 and closes: the connection cap is reached and every connection is busy.
async fn shed(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&shed_answer()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One HTTP/1 connection, until the client closes it, a timeout closes it, it is evicted to make
/// room, or shutdown ends it (after its request in flight, if any).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    ticket: Ticket,
    limits: Limits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ticket = Arc::new(ticket);
    let service = {
        let ticket = Arc::clone(&ticket);
        let max_head = limits.max_head_bytes;
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let busy = ticket.busy();
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            let head = head_bytes(&req);
            async move {
                let answer = if head > max_head {
                    Ok(head_too_large(head, max_head))
                } else {
                    tower::ServiceExt::oneshot(router, req.map(axum::body::Body::new)).await
                };
                drop(busy);
                answer
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(JsonErrors::new(stream)), service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = ticket.slot.evict.notified() => {
                // Chosen while idle: closed now, its descriptor freed. Should a request have
                // arrived since, that one still finishes.
                if !ticket.slot.busy.load(Ordering::Acquire) {
                    break;
                }
                conn.as_mut().graceful_shutdown();
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The size of a request head as it came on the wire, near enough: request line and headers.
fn head_bytes<B>(req: &hyper::Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// A 431 for a head over the limit. hyper's own check (`max_header_size`) runs only while a head
/// is still incomplete, so a head that arrives whole in one large read passes it; this one
/// does not depend on how the bytes arrived.
fn head_too_large(head: usize, max: usize) -> axum::response::Response {
    let body = serde_json::json!({
        "error": format!("the request head is {head} bytes: at most {max} are allowed")
    });
    let mut answer = axum::response::IntoResponse::into_response((
        axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        axum::Json(body),
    ));
    answer.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    answer
}

/// The statuses hyper answers by itself, before any handler runs, and what aisle says in them.
fn http_layer_message(status: &[u8]) -> Option<&'static str> {
    Some(match status {
        b"400" => "malformed HTTP request: the request line or a header could not be parsed",
        b"414" => "the request target (path and query) is too long",
        b"431" => "the request head is too large (too many or too long headers, or a too long request line)",
        _ => return None,
    })
}

/// A connection's socket, with the bodiless 400 / 414 / 431 answers that hyper writes for
/// requests it cannot parse rewritten into the same `{"error": ...}` JSON every other error has.
/// Every answer aisle's handlers give has a body, so a 4xx head with `content-length: 0` that
/// starts a write can only be hyper's; it is replaced whole, and the replacement is written out
/// before anything else (hyper closes the connection after it). Vectored writes are declined so
/// that hyper hands a response head over as one buffer.
pub(crate) struct JsonErrors<T> {
    inner: T,
    /// Rewritten bytes still to write, from `sent`.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> JsonErrors<T> {
    pub(crate) fn new(inner: T) -> Self {
        JsonErrors {
            inner,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

/// The JSON-bodied replacement of one of hyper's own error answers, or `None` when `head` is
/// not one.
fn rewrite_bare_error(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let message = http_layer_message(status)?;
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if end != head.len() {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut bodiless = false;
    let mut kept = String::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            bodiless = value.trim() == "0";
        } else if !name.eq_ignore_ascii_case("connection")
            && !name.eq_ignore_ascii_case("content-type")
        {
            kept.push_str(line);
            kept.push_str("\r\n");
        }
    }
    if !bodiless {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n{kept}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes out what a rewrite left pending; `Ready(Ok)` once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if buf.starts_with(b"HTTP/1.1 4") {
            if let Some(replacement) = rewrite_bare_error(buf) {
                this.pending = replacement;
                // Taken whole: what is left goes out on the next write, flush or shutdown.
                if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_error_heads_get_a_json_body_and_nothing_else_changes() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sat, 05 Dec 2026 02:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_bare_error(head).expect("rewritten")).expect("utf-8");
        let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains("date: Sat, 05 Dec 2026"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("too large")));
        // A handler's answers have bodies; 2xx, 404 and bodied 4xx heads pass through.
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(rewrite_bare_error(other).is_none(), "{other:?}");
        }
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let table = Table::new(2);
        let Admit::Yes(a) = table.admit() else {
            panic!("room")
        };
        std::thread::sleep(Duration::from_millis(5));
        let Admit::Yes(b) = table.admit() else {
            panic!("room")
        };
        // Full, both idle: the older (a) goes.
        let Admit::Yes(c) = table.admit() else {
            panic!("evicts")
        };
        assert_eq!(table.open(), 2);
        assert!(!table.open.lock().expect("lock").contains_key(&a.id));
        // Both left busy: a new connection is shed.
        let (_b_busy, _c_busy) = (b.busy(), c.busy());
        assert!(matches!(table.admit(), Admit::Full));
        assert_eq!(table.evicted_and_shed(), (1, 1));
        drop((_b_busy, _c_busy));
        drop(b);
        assert_eq!(table.open(), 1);
        assert!(matches!(table.admit(), Admit::Yes(_)));
    }
}

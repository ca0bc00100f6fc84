//! A fault-injecting HTTP/1.1 proxy for the integration tests, placed between `rossfs` and the
//! S3 server (`-o url=<proxy.url()>`), controlled by the test while the mount runs.
//!
//! The proxy listens on a loopback port and forwards each request to the real server over a
//! fresh upstream connection; the client side is HTTP/1.1 keep-alive (requests and responses
//! are framed by `Content-Length` or `chunked`, so one client connection carries many
//! requests). Before forwarding, each request is matched against the installed [`Fault`]s (by
//! method, path, query and header); the first fault that matches and still has budget acts:
//!
//! * [`Action::Status`]: answer with an S3 error (`500 InternalError`, `503 SlowDown`, a
//!   `301 PermanentRedirect` naming the bucket's region) whose body is a proper S3 XML error
//!   document, without forwarding;
//! * [`Action::Reset`]: read the request, then reset the connection (RST);
//! * [`Action::Delay`]: forward, then hold the response back for a while;
//! * [`Action::CutBody`]: forward, then send the response head and half of the body and reset;
//! * [`Action::GoDown`]: reset the connection and "stop the server" for a while.
//!
//! "Server stopped" ([`FaultProxy::stop_server`], or a [`Action::GoDown`] window) closes the
//! listening socket, so new connections are refused (`ECONNREFUSED`), and resets every open
//! client connection; [`FaultProxy::start_server`] (or the end of the window) binds the same
//! port again.
//!
//! Everything is bounded: a fault acts `times(n)` times or on a `fraction` of requests, the
//! proxy stops accepting after [`MAX_LIFETIME`], upstream exchanges time out, and dropping the
//! [`FaultProxy`] shuts its runtime down (tests end, the proxy ends).
#![allow(dead_code)]

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// The proxy stops accepting connections this long after it started.
pub const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body buffered (requests and responses are forwarded whole).
const MAX_BODY: usize = 256 << 20;
/// Upper bound for one upstream exchange.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Which requests a fault applies to. Every field that is set must match.
#[derive(Clone, Debug, Default)]
pub struct Match {
    method: Option<String>,
    path_contains: Option<String>,
    query_contains: Vec<String>,
    query_lacks: Vec<String>,
    header: Option<String>,
}

impl Match {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Requests with this method (`GET`, `PUT`, `HEAD`, ...).
    pub fn method(method: &str) -> Self {
        Self {
            method: Some(method.to_ascii_uppercase()),
            ..Self::default()
        }
    }

    /// ... whose path (before `?`) contains `s`.
    pub fn path(mut self, s: &str) -> Self {
        self.path_contains = Some(s.to_string());
        self
    }

    /// ... whose query string contains `s` (e.g. `partNumber=`).
    pub fn query(mut self, s: &str) -> Self {
        self.query_contains.push(s.to_string());
        self
    }

    /// ... whose query string does not contain `s`.
    pub fn query_lacks(mut self, s: &str) -> Self {
        self.query_lacks.push(s.to_string());
        self
    }

    /// ... that carry this header (name, case-insensitive).
    pub fn header(mut self, name: &str) -> Self {
        self.header = Some(name.to_ascii_lowercase());
        self
    }

    /// `HeadObject`.
    pub fn head_object() -> Self {
        Self::method("HEAD")
    }

    /// `ListObjectsV2` (and v1: a bucket GET without `uploads`).
    pub fn list_objects() -> Self {
        Self::method("GET").query("list-type=")
    }

    /// `GetObject` (a GET that is not a listing).
    pub fn get_object() -> Self {
        Self::method("GET")
            .query_lacks("list-type=")
            .query_lacks("uploads")
            .query_lacks("prefix=")
    }

    /// `PutObject` (not a part, not a copy).
    pub fn put_object() -> Self {
        Self {
            method: Some("PUT".into()),
            query_lacks: vec!["partNumber=".into()],
            ..Self::default()
        }
        .not_copy()
    }

    fn not_copy(mut self) -> Self {
        // Encoded as a header that must be absent: see `matches`.
        self.header = Some("!x-amz-copy-source".into());
        self
    }

    /// `UploadPart`.
    pub fn upload_part() -> Self {
        Self::method("PUT").query("partNumber=")
    }

    /// `CreateMultipartUpload`.
    pub fn create_multipart() -> Self {
        Self::method("POST").query("uploads")
    }

    /// `CompleteMultipartUpload`.
    pub fn complete_multipart() -> Self {
        Self::method("POST").query("uploadId=")
    }

    /// `AbortMultipartUpload`.
    pub fn abort_multipart() -> Self {
        Self::method("DELETE").query("uploadId=")
    }

    /// `CopyObject` (what chmod/chown/touch and rename send).
    pub fn copy_object() -> Self {
        Self::method("PUT").header("x-amz-copy-source")
    }

    fn matches(&self, req: &RequestHead) -> bool {
        if self.method.as_deref().is_some_and(|m| m != req.method) {
            return false;
        }
        if self
            .path_contains
            .as_deref()
            .is_some_and(|p| !req.path().contains(p))
        {
            return false;
        }
        let query = req.query();
        if !self.query_contains.iter().all(|q| query.contains(q.as_str())) {
            return false;
        }
        if self.query_lacks.iter().any(|q| query.contains(q.as_str())) {
            return false;
        }
        match self.header.as_deref() {
            Some(h) => match h.strip_prefix('!') {
                Some(absent) => req.header(absent).is_none(),
                None => req.header(h).is_some(),
            },
            None => true,
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![self.method.clone().unwrap_or_else(|| "*".into())];
        if let Some(p) = &self.path_contains {
            parts.push(format!("path~{p}"));
        }
        for q in &self.query_contains {
            parts.push(format!("?{q}"));
        }
        for q in &self.query_lacks {
            parts.push(format!("!?{q}"));
        }
        if let Some(h) = &self.header {
            parts.push(format!("hdr:{h}"));
        }
        write!(f, "{}", parts.join(" "))
    }
}

/// What a fault does to a request it matches.
#[derive(Clone, Debug)]
pub enum Action {
    /// Answer with this status and S3 error code, without forwarding.
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code in the XML body.
        code: &'static str,
        /// One more response header, name and value.
        header: Option<(&'static str, &'static str)>,
    },
    /// Read the request, then reset the client connection.
    Reset,
    /// Forward, then hold the response back this long.
    Delay(Duration),
    /// Forward, then send the head and half of the body (or half of the head when there is no
    /// body) and reset.
    CutBody,
    /// Reset this connection and refuse every connection for this long.
    GoDown(Duration),
}

/// One installed fault.
#[derive(Clone, Debug)]
pub struct Fault {
    on: Match,
    action: Action,
    /// How many more times it may act (`None`: until removed).
    remaining: Option<u64>,
    /// Share of matching requests it acts on (1.0: all).
    fraction: f64,
}

impl Fault {
    fn new(action: Action) -> Self {
        Self {
            on: Match::any(),
            action,
            remaining: None,
            fraction: 1.0,
        }
    }

    /// An answer with `status` and the S3 error `code`.
    pub fn status(status: u16, code: &'static str) -> Self {
        Self::new(Action::Status {
            status,
            code,
            header: None,
        })
    }

    /// `500 InternalError`.
    pub fn error500() -> Self {
        Self::status(500, "InternalError")
    }

    /// `503 SlowDown`.
    pub fn slow_down() -> Self {
        Self::status(503, "SlowDown")
    }

    /// The error answer also carries the header `name: value`.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Self {
        if let Action::Status { header, .. } = &mut self.action {
            *header = Some((name, value));
        }
        self
    }

    /// Connection reset after the request was read.
    pub fn reset() -> Self {
        Self::new(Action::Reset)
    }

    /// The response is held back for `d`.
    pub fn delay(d: Duration) -> Self {
        Self::new(Action::Delay(d))
    }

    /// The response is cut midway.
    pub fn cut_body() -> Self {
        Self::new(Action::CutBody)
    }

    /// The server goes away for `d` (connections refused), starting with this request.
    pub fn go_down(d: Duration) -> Self {
        Self::new(Action::GoDown(d))
    }

    /// Only requests matching `m`.
    pub fn on(mut self, m: Match) -> Self {
        self.on = m;
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u64) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Only a share `f` (0..=1) of matching requests, chosen at random (seeded).
    pub fn fraction(mut self, f: f64) -> Self {
        self.fraction = f.clamp(0.0, 1.0);
        self
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.action {
            Action::Status { status, code, .. } => format!("{status} {code}"),
            Action::Reset => "reset".into(),
            Action::Delay(d) => format!("delay {}s", d.as_secs_f32()),
            Action::CutBody => "cut body".into(),
            Action::GoDown(d) => format!("down {}s", d.as_secs_f32()),
        };
        let how = match (self.remaining, self.fraction < 1.0) {
            (Some(n), _) => format!(" x{n}"),
            (None, true) => format!(" {:.0}%", self.fraction * 100.0),
            (None, false) => " always".into(),
        };
        write!(f, "{what}{how} on {}", self.on)
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Names of its headers (lower case).
    pub headers: Vec<String>,
    /// The fault that acted on it, if any.
    pub fault: Option<String>,
}

struct Shared {
    upstream: SocketAddr,
    faults: Mutex<Vec<Fault>>,
    rng: Mutex<u64>,
    /// `Some(t)`: the server is "down" until `t`.
    down_until: Mutex<Option<Instant>>,
    /// Bumped whenever the server goes down, so open connections drop.
    epoch: watch::Sender<u64>,
    seen: Mutex<Vec<Seen>>,
    seen_changed: Condvar,
    injected: AtomicU64,
    request_ids: AtomicU64,
    /// The listening socket is open.
    listening: AtomicBool,
}

impl Shared {
    fn is_down(&self) -> bool {
        let mut guard = self.down_until.lock().unwrap();
        match *guard {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    fn go_down(&self, until: Instant) {
        *self.down_until.lock().unwrap() = Some(until);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn random(&self) -> f64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the fault for a request (consuming one of its uses) and logs the request.
    fn decide(&self, req: &RequestHead) -> Option<Fault> {
        let chosen = {
            let mut faults = self.faults.lock().unwrap();
            let mut chosen = None;
            for fault in faults.iter_mut() {
                if fault.remaining == Some(0) || !fault.on.matches(req) {
                    continue;
                }
                if fault.fraction < 1.0 && self.random() >= fault.fraction {
                    continue;
                }
                if let Some(n) = fault.remaining.as_mut() {
                    *n -= 1;
                }
                chosen = Some(fault.clone());
                break;
            }
            chosen
        };
        if chosen.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        self.seen.lock().unwrap().push(Seen {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect(),
            fault: chosen.as_ref().map(|f| f.to_string()),
        });
        self.seen_changed.notify_all();
        chosen
    }
}

/// A running proxy. Dropping it stops it.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Starts a proxy on a loopback port in front of `upstream` (an `http://host:port` URL).
    pub fn start(upstream: &str) -> FaultProxy {
        let hostport = upstream
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the fault proxy speaks plain HTTP only, not {upstream}"))
            .trim_end_matches('/');
        let upstream_addr = hostport
            .to_socket_addrs()
            .unwrap_or_else(|e| panic!("resolve {hostport}: {e}"))
            .next()
            .unwrap_or_else(|| panic!("{hostport} resolves to nothing"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("build the fault proxy runtime");
        let listener = runtime
            .block_on(bind(None))
            .expect("bind a loopback port for the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let seed = std::process::id() as u64 ^ ((port as u64) << 32) | 1;
        let (epoch, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            upstream: upstream_addr,
            faults: Mutex::new(Vec::new()),
            rng: Mutex::new(seed),
            down_until: Mutex::new(None),
            epoch,
            seen: Mutex::new(Vec::new()),
            seen_changed: Condvar::new(),
            injected: AtomicU64::new(0),
            request_ids: AtomicU64::new(0),
            listening: AtomicBool::new(true),
        });
        runtime.spawn(accept_loop(listener, port, shared.clone()));
        FaultProxy {
            port,
            shared,
            runtime: Some(runtime),
        }
    }

    /// The URL to give rossfs as `url=`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Installs a fault (after those already installed: earlier ones match first).
    pub fn add(&self, fault: Fault) {
        self.shared.faults.lock().unwrap().push(fault);
    }

    /// Replaces every installed fault with `fault`.
    pub fn set(&self, fault: Fault) {
        *self.shared.faults.lock().unwrap() = vec![fault];
    }

    /// Removes every fault and brings the server back if it was down.
    pub fn clear(&self) {
        self.shared.faults.lock().unwrap().clear();
        self.start_server();
    }

    /// Waits (bounded) until the listening socket is open or closed as asked.
    fn wait_listening(&self, open: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.listening.load(Ordering::SeqCst) != open && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// "Stops the server": refuses every connection and resets open ones until
    /// [`Self::start_server`].
    pub fn stop_server(&self) {
        self.shared
            .go_down(Instant::now() + Duration::from_secs(365 * 24 * 3600));
        self.wait_listening(false);
    }

    /// "Starts the server" again.
    pub fn start_server(&self) {
        *self.shared.down_until.lock().unwrap() = None;
        self.wait_listening(true);
    }

    /// True while the server is "down".
    pub fn is_down(&self) -> bool {
        self.shared.is_down()
    }

    /// How many times a fault acted.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests matching `m` were seen.
    pub fn count(&self, m: &Match) -> usize {
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| m.matches(&RequestHead::from_seen(s)))
            .count()
    }

    /// Waits until `n` requests matching `m` were seen; false on timeout.
    pub fn wait_for(&self, m: &Match, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut seen = self.shared.seen.lock().unwrap();
        loop {
            let have = seen
                .iter()
                .filter(|s| m.matches(&RequestHead::from_seen(s)))
                .count();
            if have >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            seen = self
                .shared
                .seen_changed
                .wait_timeout(seen, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

async fn bind(port: Option<u16>) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))))?;
    socket.listen(128)
}

async fn accept_loop(listener: TcpListener, port: u16, shared: Arc<Shared>) {
    let started = Instant::now();
    let mut listener = Some(listener);
    while started.elapsed() < MAX_LIFETIME {
        if shared.is_down() {
            // Closing the listening socket makes new connections fail with ECONNREFUSED.
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let Some(l) = listener.as_ref() else {
            match bind(Some(port)).await {
                Ok(l) => {
                    listener = Some(l);
                    shared.listening.store(true, Ordering::SeqCst);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            continue;
        };
        // Wake up now and then to notice a "stop".
        let accepted = tokio::time::timeout(Duration::from_millis(25), l.accept()).await;
        if let Ok(Ok((stream, _))) = accepted {
            if shared.is_down() {
                let _ = stream.set_zero_linger();
                continue;
            }
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, shared.clone()));
        }
    }
}

/// A parsed request or response head.
#[derive(Debug, Clone)]
struct RequestHead {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn from_seen(s: &Seen) -> Self {
        Self {
            method: s.method.clone(),
            target: s.target.clone(),
            headers: s.headers.iter().map(|n| (n.clone(), String::new())).collect(),
        }
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A socket with a read buffer, for HTTP/1.1 framing.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilEof,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next head (through the blank line); `None` on a clean EOF before any byte.
    async fn read_head(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(Some(head));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("head too large"));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    async fn read_exact_buf(&mut self, n: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }

    async fn read_line(&mut self, out: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                out.extend_from_slice(&line);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD || self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a body framed as `framing`, returning its raw bytes (chunk framing kept).
    async fn read_body(&mut self, framing: Framing) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match framing {
            Framing::None => {}
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(std::io::Error::other("body too large"));
                }
                self.read_exact_buf(n, &mut out).await?;
            }
            Framing::Chunked => loop {
                let line = self.read_line(&mut out).await?;
                let text = String::from_utf8_lossy(&line);
                let size_text = text.trim().split(';').next().unwrap_or("").trim().to_string();
                let size = usize::from_str_radix(&size_text, 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size {size_text:?}")))?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        let line = self.read_line(&mut out).await?;
                        if line == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                if out.len() + size > MAX_BODY {
                    return Err(std::io::Error::other("body too large"));
                }
                self.read_exact_buf(size + 2, &mut out).await?;
            },
            Framing::UntilEof => {
                while self.fill().await? > 0 {
                    if self.buf.len() > MAX_BODY {
                        return Err(std::io::Error::other("body too large"));
                    }
                }
                out.append(&mut self.buf);
            }
        }
        Ok(out)
    }

    fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a head into its first line and headers.
fn parse_head(head: &[u8]) -> Option<(String, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Some((first, headers))
}

fn body_framing(headers: &[(String, String)]) -> Option<Framing> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Some(Framing::Chunked);
    }
    match header(headers, "content-length") {
        Some(v) => v.parse().ok().map(Framing::Length),
        None => None,
    }
}

/// Serves one client connection: request after request until EOF, a fault or "down".
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut epoch = shared.epoch.subscribe();
    let mut client = Conn::new(stream);
    loop {
        let head = tokio::select! {
            h = client.read_head() => h,
            _ = epoch.changed() => {
                client.reset();
                return;
            }
        };
        let Ok(Some(head)) = head else {
            return;
        };
        let Some((line, headers)) = parse_head(&head) else {
            return client.reset();
        };
        let mut parts = line.split(' ');
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return client.reset();
        };
        let req = RequestHead {
            method: method.to_ascii_uppercase(),
            target: target.to_string(),
            headers,
        };
        let framing = body_framing(&req.headers).unwrap_or(Framing::None);
        let Ok(body) = client.read_body(framing).await else {
            return client.reset();
        };
        if shared.is_down() {
            return client.reset();
        }
        let close_after = header(&req.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let fault = shared.decide(&req);
        let action = fault.map(|f| f.action);
        match action {
            Some(Action::Reset) => return client.reset(),
            Some(Action::GoDown(d)) => {
                shared.go_down(Instant::now() + d);
                return client.reset();
            }
            Some(Action::Status { status, code, header }) => {
                let n = shared.request_ids.fetch_add(1, Ordering::Relaxed);
                let response = error_response(&req, status, code, header, n, close_after);
                if client.stream.write_all(&response).await.is_err() {
                    return;
                }
            }
            other => {
                let upstream =
                    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(&shared, &req, &head, &body)).await;
                let Ok(Ok((resp_head, resp_body))) = upstream else {
                    // The real server failed us: the client sees a reset, as it would.
                    return client.reset();
                };
                let resp_head = rewrite_response_head(&resp_head, close_after);
                match other {
                    Some(Action::Delay(d)) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = epoch.changed() => return client.reset(),
                        }
                    }
                    Some(Action::CutBody) => {
                        let mut partial = resp_head.clone();
                        if resp_body.is_empty() {
                            partial.truncate(resp_head.len() / 2);
                        } else {
                            partial.extend_from_slice(&resp_body[..resp_body.len() / 2]);
                        }
                        let _ = client.stream.write_all(&partial).await;
                        let _ = client.stream.flush().await;
                        return client.reset();
                    }
                    _ => {}
                }
                let mut out = resp_head;
                out.extend_from_slice(&resp_body);
                if client.stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
        if close_after {
            let _ = client.stream.shutdown().await;
            return;
        }
    }
}

/// Sends one request to the real server over a fresh connection and reads its response.
async fn exchange(
    shared: &Shared,
    req: &RequestHead,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let stream = TcpStream::connect(shared.upstream).await?;
    let _ = stream.set_nodelay(true);
    let mut upstream = Conn::new(stream);
    let mut out = rewrite_request_head(head);
    out.extend_from_slice(body);
    upstream.stream.write_all(&out).await?;
    loop {
        let resp_head = upstream
            .read_head()
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let (status_line, headers) =
            parse_head(&resp_head).ok_or_else(|| std::io::Error::other("bad response head"))?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        if (100..200).contains(&status) {
            continue; // informational: not forwarded (we removed Expect)
        }
        let framing = if req.method == "HEAD" || status == 204 || status == 304 {
            Framing::None
        } else {
            body_framing(&headers).unwrap_or(Framing::UntilEof)
        };
        let resp_body = upstream.read_body(framing).await?;
        return Ok((resp_head, resp_body));
    }
}

/// The request head for the upstream: no `Expect` (the body is already here), no keep-alive.
fn rewrite_request_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if i > 0 && matches!(name.as_str(), "expect" | "connection" | "keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// The response head for the client: its own connection handling.
fn rewrite_response_head(head: &[u8], close: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    for (i, line) in text.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if i > 0 && matches!(name.as_str(), "connection" | "keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        301 => "Moved Permanently",
        400 => "Bad Request",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Error",
    }
}

/// An S3 error response as a real server sends it.
fn error_response(
    req: &RequestHead,
    status: u16,
    code: &str,
    extra_header: Option<(&str, &str)>,
    n: u64,
    close: bool,
) -> Vec<u8> {
    let request_id = format!("FAULTPROXY{n:08}");
    let message = match code {
        "SlowDown" => "Please reduce your request rate.",
        "InternalError" => "We encountered an internal error. Please try again.",
        _ => "Injected by the rossfs test fault proxy.",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <Resource>{}</Resource><RequestId>{request_id}</RequestId></Error>",
        xml_escape(req.path())
    );
    let body = if req.method == "HEAD" { String::new() } else { body };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: {request_id}\r\nServer: rossfs-fault-proxy\r\n",
        reason(status),
        body.len()
    );
    if let Some((name, value)) = extra_header {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

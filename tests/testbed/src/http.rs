//! A scripted in-process HTTP/1.1 server (std::net, one request per connection).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Largest request body the server accepts.
const MAX_BODY: usize = 64 << 20;

/// One HTTP request as received.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method, e.g. "GET".
    pub method: String,
    /// Path without the query, e.g. "/v2/team/app/tags/list".
    pub path: String,
    /// Raw query string without '?', "" if none.
    pub query: String,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body bytes (Content-Length or chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Value of query parameter `name` (percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_form(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Path plus "?query" if there is one.
    pub fn uri(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// What the scripted server answers.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (Content-Length and Connection are added by the server).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Sleep this long before answering.
    pub delay: Option<Duration>,
    /// Declare a longer Content-Length than the body and close early.
    pub truncate: bool,
}

impl Default for Response {
    fn default() -> Self {
        Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            truncate: false,
        }
    }
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            ..Response::default()
        }
    }

    /// A JSON response (`application/json`).
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    /// A text response (`text/plain`).
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(text)
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replace the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Answer after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Response {
        self.delay = Some(delay);
        self
    }

    /// Declare a longer Content-Length than the body and close the connection early.
    pub fn truncated(mut self) -> Response {
        self.truncate = true;
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync + 'static;

struct Shared {
    stop: AtomicBool,
    requests: Mutex<Vec<Request>>,
    arrived: Condvar,
    handler: Box<Handler>,
}

/// An in-process HTTP/1.1 server on 127.0.0.1 answering with a handler; stops on drop.
pub struct Scripted {
    /// "http://127.0.0.1:PORT".
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Scripted {
    /// Start serving on a free port; each request is recorded, then answered by `handler`.
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            handler: Box::new(handler),
        });
        let accept_shared = shared.clone();
        let accept = thread::Builder::new()
            .name(format!("scripted-{}", addr.port()))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn accept thread");
        Scripted {
            base_url: format!("http://{addr}"),
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Wait until at least `n` requests arrived (or `timeout`); returns all received so far.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.shared.requests.lock().unwrap();
        while reqs.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            reqs = self.shared.arrived.wait_timeout(reqs, left).unwrap().0;
        }
        reqs.clone()
    }

    /// "http://127.0.0.1:PORT" + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        let _ = thread::Builder::new()
            .name("scripted-conn".into())
            .spawn(move || {
                let _ = serve(stream, &shared);
            });
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut interim = stream.try_clone()?;
    let Some(req) = read_request(&mut reader, &mut interim)? else {
        return Ok(());
    };
    {
        let mut reqs = shared.requests.lock().unwrap();
        reqs.push(req.clone());
        shared.arrived.notify_all();
    }
    let resp = (shared.handler)(&req);
    if let Some(delay) = resp.delay {
        let until = Instant::now() + delay;
        while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
            thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20)),
            );
        }
    }
    write_response(stream, &req, &resp)
}

fn read_request(
    reader: &mut impl BufRead,
    interim: &mut impl Write,
) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let mut req = Request {
        method: method.to_string(),
        path,
        query,
        ..Request::default()
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            req.headers
                .push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if req
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        interim.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = req
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("0");
            let size = usize::from_str_radix(size_hex, 16).unwrap_or(0);
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let mut t = String::new();
                    if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if req.body.len() + size > MAX_BODY {
                return Ok(None);
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            reader.read_exact(&mut req.body[start..])?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else if let Some(len) = req
        .header("Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > MAX_BODY {
            return Ok(None);
        }
        req.body.resize(len, 0);
        reader.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn write_response(mut stream: TcpStream, req: &Request, resp: &Response) -> std::io::Result<()> {
    let declared = if resp.truncate {
        resp.body.len() * 2 + 16
    } else {
        resp.body.len()
    };
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("connection") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {declared}\r\nConnection: close\r\n\r\n"
    ));
    stream.write_all(head.as_bytes())?;
    if req.method != "HEAD" {
        stream.write_all(&resp.body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Parse `a=1&b=x%20y` (form or query encoding) into decoded pairs.
pub(crate) fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

//! podproxy against real upstreams on loopback: hyper servers run by the test (echo, slow,
//! WebSocket-style upgrade echo) and busybox httpd (a second, independent HTTP implementation).

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podkit_tests::ReservedPort;

const LIMIT: Duration = Duration::from_secs(30);

/// A loopback port free a moment ago, for podproxy to bind at once (a port that must stay
/// free for a while is a [`ReservedPort`]).
fn free_port() -> u16 {
    podkit_tests::free_loopback_port()
}

/// The test upstream: a hyper server on a runtime of its own.
struct Upstream {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A body that sends `tick\n` every 200ms, `left` times.
struct Drip {
    left: u32,
    tick: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::future::Future;
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        if self.tick.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + Duration::from_millis(200);
        self.tick.as_mut().reset(next);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"tick\n",
        )))))
    }
}

async fn upstream_handler(req: Request<Incoming>) -> Result<Response<TestBody>, Infallible> {
    if req.uri().path() == "/drip" {
        // 25 ticks, 5 seconds: a streaming answer.
        return Ok(Response::new(
            Drip {
                left: 25,
                tick: Box::pin(tokio::time::sleep(Duration::ZERO)),
            }
            .boxed(),
        ));
    }
    upstream_answer(req).await.map(|r| r.map(|b| b.boxed()))
}

async fn upstream_answer(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/big" {
        // 192 MiB in one response: podproxy must stream it, not hold it.
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 192 << 20]))));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code.parse::<u16>().expect("a status code");
        return Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::new()))
            .expect("response"));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path == "/slowish" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .body(Full::new(Bytes::new()))
            .expect("response"));
    }
    let mut text = format!(
        "path={}\nquery={}\nversion={:?}\n",
        path,
        req.uri().query().unwrap_or(""),
        req.version()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("{}={}\n", k, v.to_str().unwrap_or("?")));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    text.push_str(&format!("body-bytes={}\n", body.len()));
    Ok(Response::builder()
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .body(Full::new(Bytes::from(text)))
        .expect("response"))
}

impl Upstream {
    fn start() -> Upstream {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&served);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = std::sync::Arc::clone(&counter);
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            hyper::service::service_fn(move |req| {
                                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                upstream_handler(req)
                            }),
                        )
                        .await;
                });
            }
        });
        Upstream {
            addr,
            _rt: rt,
            served,
        }
    }

    /// Requests the upstream has been asked so far.
    fn requests(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// podproxy as a child process, killed on drop.
struct Podproxy {
    child: Child,
    port: u16,
    admin: u16,
    dir: tempfile::TempDir,
}

impl Podproxy {
    /// podproxy on ports the kernel picks (`:0`), read back from its log: no port is ever
    /// free between a pick and podproxy's bind for another listener to take.
    fn start(routes: &[String], extra: &[&str]) -> Podproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_podproxy"));
        cmd.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args([
                "--access-log",
                &dir.path().join("access.log").display().to_string(),
            ])
            .args([
                "--ready-file",
                &dir.path().join("ready").display().to_string(),
            ])
            .args(["--log-format", "text"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for r in routes {
            cmd.arg("--route").arg(r);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().expect("spawn podproxy");
        // "podproxy listening on 127.0.0.1:P[, more]: routes" (this --listen is the first) and
        // "admin endpoints on http://127.0.0.1:A: ...".
        let start = Instant::now();
        let (port, admin) = loop {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            let port = podkit_tests::port_in_log(&log, "podproxy listening on 127.0.0.1:");
            let admin = podkit_tests::port_in_log(&log, "admin endpoints on http://127.0.0.1:");
            if let (Some(port), Some(admin)) = (port, admin) {
                break (port, admin);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("podproxy exited ({status}) before listening: {log}");
            }
            assert!(start.elapsed() < LIMIT, "podproxy never listened: {log}");
            std::thread::sleep(Duration::from_millis(10));
        };
        Podproxy {
            child,
            port,
            admin,
            dir,
        }
    }

    /// Sends SIGTERM, as the kubelet does to start a drain.
    fn sigterm(&self) {
        self.signal("TERM");
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
    }

    /// Waits for the process to exit (at most [`LIMIT`]); its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            assert!(
                start.elapsed() < LIMIT,
                "podproxy did not exit after draining"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access log line is JSON"))
            .collect()
    }
}

impl Drop for Podproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes, reads the whole answer (the request should say Connection: close).
fn raw(port: u16, request: &[u8]) -> String {
    try_raw(port, request).expect("connect")
}

/// As [`raw`], or None when nothing listens yet.
fn try_raw(port: u16, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn get(port: u16, path: &str) -> String {
    raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn routes_by_longest_prefix_strip_and_404() {
    let front = Upstream::start();
    let back = Upstream::start();
    let p = Podproxy::start(
        &[
            format!("/=http://{}", front.addr),
            format!("/api=http://{},strip", back.addr),
        ],
        &[],
    );
    let r = get(p.port, "/api/items?x=1");
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.contains("path=/items\n") && r.contains("query=x=1\n"),
        "{r}"
    );
    let r = get(p.port, "/apiary");
    assert!(r.contains("path=/apiary\n"), "the / route, not /api: {r}");
    // `//api` is `/api` (as app servers merge slashes, a route in front of /api, such as an
    // auth proxy, must not be skipped), and path parameters do not hide the prefix.
    let before = back.requests();
    let r = get(p.port, "//api//items");
    assert!(r.contains("path=/items\n"), "{r}");
    let r = get(p.port, "/api;jsessionid=7/items;v=2");
    assert!(r.contains("path=/items;v=2\n"), "{r}");
    assert_eq!(back.requests() - before, 2, "both went to /api's upstream");
    // A dot segment with parameters (Tomcat's `..;`) is refused, not routed by `/`.
    assert_eq!(status(&get(p.port, "/x/..;/api/items")), 400);
    // Normalization first: the dot segments cannot reach /api's upstream under another name,
    // and an encoded prefix is still the prefix.
    let r = get(p.port, "/static/../api/x");
    assert!(r.contains("path=/x\n"), "{r}");
    let r = get(p.port, "/%61pi/y");
    assert!(r.contains("path=/y\n"), "{r}");
    // A route that keeps the path: a normalized path is sent as normalized, an already normal
    // one as it came, the query with either.
    let r = get(p.port, "/static/./a/../b?q=2");
    assert!(
        r.contains("path=/static/b\n") && r.contains("query=q=2\n"),
        "{r}"
    );
    let r = get(p.port, "/plain/x?y=3&z");
    assert!(
        r.contains("path=/plain/x\n") && r.contains("query=y=3&z\n"),
        "{r}"
    );
    assert_eq!(status(&get(p.port, "/a%zz")), 400);

    let only_api = Podproxy::start(&[format!("/api=http://{}", back.addr)], &[]);
    // A refused request keeps the client's X-Request-Id, in its answer and its log line.
    let r = raw(
        only_api.port,
        b"GET /other HTTP/1.1\r\nHost: a\r\nX-Request-Id: lost-7\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 404);
    assert!(
        r.to_ascii_lowercase().contains("x-request-id: lost-7\r\n"),
        "{r}"
    );
    let start = Instant::now();
    while only_api.access_log().is_empty() {
        assert!(start.elapsed() < LIMIT, "no access log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(only_api.access_log()[0]["request_id"], "lost-7");
}

#[test]
fn headers_are_shaped_on_the_way_through() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--trusted-proxies", "10.0.0.0/8"],
    );
    let r = raw(
        p.port,
        b"GET /h HTTP/1.1\r\nHost: shop.test\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nKeep-Alive: timeout=5\r\nX-Request-Id: req-42\r\n\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    // What the upstream saw:
    assert!(
        r.contains("x-forwarded-for=127.0.0.1\n"),
        "untrusted peer's XFF replaced: {r}"
    );
    assert!(
        !r.contains("6.6.6.6"),
        "an untrusted peer's claim passed: {r}"
    );
    assert!(
        r.contains("x-forwarded-proto=http\n") && r.contains("x-forwarded-host=shop.test\n"),
        "{r}"
    );
    assert!(r.contains("x-request-id=req-42\n"), "{r}");
    assert!(
        !r.contains("x-secret=") && !r.contains("keep-alive="),
        "hop-by-hop passed: {r}"
    );
    // What the client saw: both cookies, no upstream hop-by-hop header, the request id.
    assert_eq!(r.matches("set-cookie: ").count(), 2, "{r}");
    assert!(!r.contains("must not pass"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("x-request-id: req-42"),
        "{r}"
    );
}

/// Bound to the IPv4-mapped loopback address: an IPv6 socket that IPv4 clients reach, as a
/// dual-stack `[::]` listener is, with the traffic kept on loopback.
#[test]
fn an_ipv4_client_of_a_dual_stack_listener_is_named_as_ipv4() {
    let up = Upstream::start();
    let dual = free_port();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--listen", &format!("[::ffff:127.0.0.1]:{dual}")],
    );
    let r = raw(
        dual,
        b"GET /v4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("x-forwarded-for=127.0.0.1\n"), "{r}");
    let start = Instant::now();
    while p.access_log().is_empty() {
        assert!(start.elapsed() < LIMIT, "no access log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(p.access_log()[0]["client"], "127.0.0.1");
}

#[test]
fn an_absolute_form_target_for_a_host_route_wins_over_the_host_header() {
    let up = Upstream::start();
    // The host-less route goes nowhere: a request routed by its Host header would be a 502.
    let p = Podproxy::start(
        &[
            format!("shop.test/=http://{}", up.addr),
            "/=http://127.0.0.1:1".to_string(),
        ],
        &[],
    );
    let r = raw(
        p.port,
        b"GET http://shop.test/x?y=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.contains("path=/x\n") && r.contains("query=y=1\n"),
        "origin-form upstream: {r}"
    );
    assert!(
        r.contains("host=shop.test\n") && r.contains("x-forwarded-host=shop.test\n"),
        "the target's host, not the Host header's: {r}"
    );
    // Userinfo in the target is refused (RFC 9110 section 4.2.4), never routed or passed on.
    let r = raw(
        p.port,
        b"GET http://user:pw@shop.test/x HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 400, "{r}");
    assert!(!r.contains("user:pw"), "{r}");
    let r = raw(
        p.port,
        b"GET /x HTTP/1.1\r\nHost: user:pw@shop.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&r), 400, "{r}");
}

#[test]
fn upstream_down_is_a_fast_502_and_slow_is_a_504() {
    let up = Upstream::start();
    let held = ReservedPort::new();
    let dead = held.port();
    let p = Podproxy::start(
        &[
            format!("/down=http://127.0.0.1:{dead}"),
            format!("/=http://{}", up.addr),
        ],
        &["--upstream-response-timeout", "1s"],
    );
    let t = Instant::now();
    let down = get(p.port, "/down");
    assert_eq!(status(&down), 502);
    // podproxy's own answer carries the id its log line has, made for it here.
    assert!(
        down.to_ascii_lowercase().contains("x-request-id: "),
        "{down}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a refused upstream must not wait for a timeout"
    );
    assert_eq!(status(&get(p.port, "/slow")), 504);

    // On one kept-alive connection the upstream waits share a timer, moved on at each request:
    // a fast request after a 504 is served, a slow one after it is cut again (the timer fired
    // once and is set anew), and one well after the last request's deadline is not cut early.
    let mut kept = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    kept.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut ask = |path: &str| {
        let head = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n");
        kept.write_all(head.as_bytes()).expect("write");
        let mut buf = [0u8; 8192];
        let n = kept.read(&mut buf).expect("answer");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // A 504 one timeout (1s) after the slow request was sent, not sooner, nor much later.
    let slow_is_cut = |ask: &mut dyn FnMut(&str) -> String| {
        let t = Instant::now();
        assert_eq!(status(&ask("/slow")), 504);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900), "cut after {took:?}");
        assert!(took < Duration::from_millis(2900), "cut after {took:?}");
    };
    slow_is_cut(&mut ask);
    assert_eq!(status(&ask("/")), 200);
    slow_is_cut(&mut ask);
    assert_eq!(status(&ask("/")), 200);
    std::thread::sleep(Duration::from_millis(1500));
    slow_is_cut(&mut ask);
}

#[test]
fn an_upstream_status_outside_100_to_599_is_a_502() {
    let up = Upstream::start();
    let p = Podproxy::start(&[format!("/=http://{}", up.addr)], &[]);
    // hyper reads any three digits; RFC 9110 section 15 makes 100-599 the valid ones.
    assert_eq!(status(&get(p.port, "/status/999")), 502);
    assert_eq!(status(&get(p.port, "/status/600")), 502);
    // The edges of the valid range, and an unregistered code inside it, pass as they are.
    assert_eq!(status(&get(p.port, "/status/599")), 599);
    assert_eq!(status(&get(p.port, "/status/299")), 299);
    let start = Instant::now();
    while p.access_log().len() < 4 {
        assert!(start.elapsed() < LIMIT, "{:?}", p.access_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = p.access_log();
    let statuses: Vec<u64> = log.iter().filter_map(|l| l["status"].as_u64()).collect();
    assert_eq!(statuses, [502, 502, 599, 299], "{log:?}");
}

#[test]
fn smuggling_absolute_form_and_limits_are_refused() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--max-body-bytes", "1KiB", "--max-header-bytes", "8KiB"],
    );
    // Both framings, in either order: refused with 400, the connection closed, the upstream
    // never asked. On a kept-alive connection the request before it is served as usual (the
    // framing sniffer follows each body to the next head).
    for both in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    ] {
        let mut pipelined =
            b"POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi".to_vec();
        pipelined.extend_from_slice(both);
        let before = up.requests();
        let answers = raw(p.port, &pipelined);
        let statuses: Vec<&str> = answers
            .lines()
            .filter(|l| l.starts_with("HTTP/1.1 "))
            .collect();
        assert_eq!(
            statuses,
            vec!["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"],
            "{answers}"
        );
        assert!(answers.contains("both Transfer-Encoding and Content-Length"), "{answers}");
        assert!(answers.to_ascii_lowercase().contains("connection: close"), "{answers}");
        assert_eq!(up.requests() - before, 2, "the upstream saw only the two good requests");
    }
    // obs-fold (a header line continued on the next, RFC 9112 5.2) is refused by the parser.
    let folded = raw(
        p.port,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&folded), 400, "{folded}");
    let twice = raw(p.port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcd");
    assert_eq!(status(&twice), 400, "{twice}");
    // Two Host headers (RFC 9112 section 3.2): routed by one, an app could read the other.
    let before = up.requests();
    let hosts = raw(
        p.port,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: admin.internal\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&hosts), 400, "{hosts}");
    assert_eq!(
        up.requests(),
        before,
        "a request with two Hosts reached the upstream"
    );
    let absolute = raw(
        p.port,
        b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&absolute), 400, "{absolute}");
    let big = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(2000)
    );
    assert_eq!(status(&raw(p.port, big.as_bytes())), 413);
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(20_000)
    );
    assert_eq!(status(&raw(p.port, huge_header.as_bytes())), 431);
    let ok = raw(
        p.port,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    );
    assert!(ok.contains("body-bytes=4"), "{ok}");
}

#[test]
fn the_request_timeout_blames_the_slow_side_and_cuts_a_stream() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &[
            "--request-timeout",
            "1s",
            "--upstream-response-timeout",
            "20s",
        ],
    );
    // The upstream is slow to answer: 504 at the request deadline, not the upstream's.
    let t = Instant::now();
    assert_eq!(status(&get(p.port, "/slow")), 504);
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    // The client sent its whole body (by Content-Length) and the upstream is slow: still 504.
    let r = raw(
        p.port,
        b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    );
    assert_eq!(status(&r), 504, "{r}");
    // The client is slow to send its body: 408.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        .expect("write");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(status(&String::from_utf8_lossy(&out)), 408);
    // A streaming answer is cut at the deadline: the chunked body never gets its last chunk.
    let t = Instant::now();
    let dripped = get(p.port, "/drip");
    assert_eq!(status(&dripped), 200);
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
    assert!(dripped.contains("tick"), "{dripped}");
    assert!(!dripped.ends_with("0\r\n\r\n"), "{dripped}");
    // Turned off, the stream runs to its end.
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--request-timeout", "0"],
    );
    let whole = get(p.port, "/drip");
    assert_eq!(whole.matches("tick").count(), 25, "{whole}");
}

#[test]
fn idle_client_connections_are_closed() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--idle-timeout", "1s"],
    );
    // A kept-alive connection after its request.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let waited = t.elapsed();
    assert_eq!(status(&String::from_utf8_lossy(&out)), 200);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // A connection that never sends a byte (so never says which protocol it speaks).
    let mut silent = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    silent.set_read_timeout(Some(LIMIT)).expect("timeout");
    let t = Instant::now();
    let n = silent.read(&mut [0u8; 16]).unwrap_or(0);
    let waited = t.elapsed();
    assert_eq!(n, 0, "a silent connection got bytes");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "silent connection closed after {waited:?}"
    );
    // A request in flight longer than the idle timeout is not idle: /drip streams for 5s with
    // a byte every 200ms, /slow is silent for 3s while the request is in flight.
    assert_eq!(get(p.port, "/drip").matches("tick").count(), 25);
    assert_eq!(status(&get(p.port, "/slow")), 200);
    // An upgraded connection that goes quiet is closed too.
    let mut ws = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .expect("write");
    ws.set_read_timeout(Some(LIMIT)).expect("timeout");
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = ws.read_to_end(&mut out);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 101"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn slowloris_is_cut_off_after_the_header_read_timeout() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--header-read-timeout", "1s"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .expect("write");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "the connection stayed open"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[test]
fn a_head_dripped_byte_by_byte_is_cut_and_a_waiting_keep_alive_connection_is_not() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--header-read-timeout", "1s", "--idle-timeout", "30s"],
    );
    // A keep-alive connection that waits longer than the header timeout for its next request
    // is under --idle-timeout, and serves that request.
    let mut kept = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    kept.set_read_timeout(Some(LIMIT)).expect("timeout");
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    kept.write_all(get).expect("write");
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).expect("first answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // Bytes keep coming, a few a second, but the head never ends: cut about a second after it
    // began (within a quarter of the timeout), though the connection is never quiet.
    let mut drip = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    drip.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in head.iter().cycle().take(200) {
        if drip.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        match drip.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => panic!("an answer to a head that never ended"),
            Err(_) => {}
        }
    }
    assert!(closed, "the dripping head was never cut");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );

    // Well past the header timeout, the waiting connection still serves its next request.
    std::thread::sleep(Duration::from_millis(1500));
    kept.write_all(get).expect("write again");
    let n = kept.read(&mut buf).expect("second answer");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[test]
fn upgrades_pass_through_after_101() {
    let up = Upstream::start();
    // The tunnel's bytes are not request heads: pauses longer than the header read timeout
    // between messages do not cut it.
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--header-read-timeout", "1s"],
    );
    let mut s = open_tunnel(p.port);
    for msg in [&b"hello"[..], b"through the proxy"] {
        assert!(echoes(&mut s, msg), "no echo of {msg:?}");
        std::thread::sleep(Duration::from_millis(1600));
    }
    assert!(echoes(&mut s, b"after the pauses"));
}

/// Opens a WebSocket-style tunnel through podproxy to the test upstream's echo: the upstream's
/// 101 and its `Upgrade` header pass through.
fn open_tunnel(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s
}

fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    let mut echo = vec![0u8; msg.len()];
    s.write_all(msg).is_ok() && s.read_exact(&mut echo).is_ok() && echo == msg
}

fn metric(admin: u16, name: &str) -> Option<f64> {
    let text = raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn upgraded_connections_are_counted_and_the_drain_waits_for_them_until_its_timeout() {
    let up = Upstream::start();
    let mut p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--drain-delay", "0s", "--drain-timeout", "4s"],
    );
    let mut ws = open_tunnel(p.port);
    assert!(echoes(&mut ws, b"hello"));
    // hyper's connection task has ended; the tunnel still counts as an open connection.
    assert_eq!(metric(p.admin, "podproxy_upgraded_connections"), Some(1.0));
    assert_eq!(metric(p.admin, "podproxy_open_connections"), Some(1.0));
    p.sigterm();
    // Past the second the drain gives connections to leave: HTTP connections are gone, the
    // tunnel still carries its messages (before, podproxy exited here and cut it).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        echoes(&mut ws, b"during the drain"),
        "the tunnel was cut before --drain-timeout"
    );
    assert_eq!(p.child.try_wait().expect("wait"), None, "exited early");
    // At --drain-timeout it is closed, and podproxy exits 0: a tunnel cut at the drain's end
    // is the drain working, not a request failing.
    assert_eq!(p.wait_exit(), Some(0));
    assert_eq!(ws.read(&mut [0u8; 16]).unwrap_or(0), 0);
}

#[test]
fn a_tunnel_still_counts_against_max_connections() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--max-connections", "1"],
    );
    let mut ws = open_tunnel(p.port);
    assert!(echoes(&mut ws, b"hello"));
    // The tunnel holds the one place: the next client waits in the accept queue.
    let mut other = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    other
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let early = other.read(&mut buf);
    assert!(
        early.is_err(),
        "served beside the tunnel, beyond --max-connections 1: {early:?}"
    );
    // The tunnel ends: its place goes to the waiting client.
    drop(ws);
    other.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut answer = String::new();
    other.read_to_string(&mut answer).expect("answer");
    assert_eq!(status(&answer), 200, "{answer}");
}

#[test]
fn a_tunnel_closed_during_the_drain_lets_podproxy_exit_before_the_drain_timeout() {
    let up = Upstream::start();
    let mut p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--drain-delay", "0s", "--drain-timeout", "60s"],
    );
    let mut ws = open_tunnel(p.port);
    assert!(echoes(&mut ws, b"hello"));
    p.sigterm();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        p.child.try_wait().expect("wait"),
        None,
        "exited with a tunnel open"
    );
    drop(ws);
    // Well before the 60s drain timeout (wait_exit allows LIMIT).
    assert_eq!(p.wait_exit(), Some(0));
}

#[test]
fn http2_prior_knowledge_from_clients() {
    let up = Upstream::start();
    let p = Podproxy::start(&[format!("/=http://{}", up.addr)], &[]);
    let rt = current_thread();
    let body = rt.block_on(async {
        let stream = connect(p.port).await;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get(format!("http://127.0.0.1:{}/h2", p.port))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let first = resp.into_body().collect().await.expect("body").to_bytes();
        // A Host header that names another host, or another port, than :authority: refused
        // (RFC 9113 section 8.3.1), and nothing reaches the upstream.
        let before = up.requests();
        for other in [
            "other.test".to_string(),
            format!("127.0.0.1:{}", p.port + 1),
        ] {
            let req = Request::get(format!("http://127.0.0.1:{}/h2", p.port))
                .header("host", other.as_str())
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = send.send_request(req).await.expect("response");
            assert_eq!(resp.status(), 400, "Host {other}");
        }
        assert_eq!(
            up.requests(),
            before,
            "a refused request reached the upstream"
        );
        // The same host in other case, and a Host without the port where :authority has the
        // default one: the same entity, served.
        let req = Request::get(format!("http://LOCALHOST:{}/h2", p.port))
            .header("host", format!("localhost:{}", p.port))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let req = Request::get("http://localhost:80/h2")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let second = resp.into_body().collect().await.expect("body").to_bytes();
        let second = String::from_utf8_lossy(&second).into_owned();
        assert!(second.contains("host=localhost:80\n"), "{second}");
        // Cookies sent as several fields (as browsers do over HTTP/2) reach the HTTP/1.1
        // upstream as one Cookie header (RFC 9113 section 8.2.3).
        let req = Request::get(format!("http://127.0.0.1:{}/h2", p.port))
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        let cookies = resp.into_body().collect().await.expect("body").to_bytes();
        let cookies = String::from_utf8_lossy(&cookies).into_owned();
        assert_eq!(
            cookies.matches("cookie=").count(),
            1,
            "one Cookie header: {cookies}"
        );
        assert!(cookies.contains("cookie=a=1; b=2\n"), "{cookies}");
        first
    });
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("path=/h2\n") && text.contains("version=HTTP/1.1"),
        "{text}"
    );
    // :authority, the HTTP/2 request's host, reaches the HTTP/1.1 upstream as Host and as
    // X-Forwarded-Host.
    let authority = format!("127.0.0.1:{}", p.port);
    assert!(
        text.contains(&format!("host={authority}\n"))
            && text.contains(&format!("x-forwarded-host={authority}\n")),
        "{text}"
    );
}

#[test]
fn an_http2_connection_that_only_pings_is_closed_when_idle() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--idle-timeout", "1s"],
    );
    let rt = current_thread();
    rt.block_on(async {
        let stream = connect(p.port).await;
        // A client that PINGs every 200 ms, with no stream open: no work for the proxy.
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let req = Request::get(format!("http://127.0.0.1:{}/first", p.port))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
        // Closed after --idle-timeout (and a sweep), PINGs notwithstanding.
        let ended = tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("a PINGing HTTP/2 connection was kept open past --idle-timeout")
            .expect("the connection task");
        // With GOAWAY first (RFC 9113 section 6.8): hyper's client ends cleanly, where a
        // connection just dropped ends in a broken pipe.
        assert!(ended.is_ok(), "closed without GOAWAY: {ended:?}");
    });
}

/// A current-thread tokio runtime for a test's async client.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
}

/// A client connection to podproxy's port.
async fn connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Reads one HTTP/1.1 answer (framed by Content-Length) from a kept-alive connection; its status.
fn read_answer(r: &mut std::io::BufReader<TcpStream>) -> u16 {
    use std::io::BufRead;
    let mut status = 0;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("answer head");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(code) = line.strip_prefix("HTTP/1.1 ") {
            status = code[..3].parse().expect("status");
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body).expect("answer body");
    status
}

/// One HTTP/2 frame (RFC 9113 section 4.1): 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// The HPACK block (RFC 7541) of `GET http://127.0.0.1/`: :method GET, :scheme http, :path /
/// from the static table, then :authority as a literal without indexing (section 6.2.2).
fn h2_get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend(b"127.0.0.1");
    block
}

/// Reads (and drops: SETTINGS, a GOAWAY) until podproxy closes the connection; how long that
/// took. Fails if it is still open after 15 s.
fn closed_within_15s(s: &mut TcpStream, what: &str) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("{what}: still open after {:?} ({e})", start.elapsed()),
        }
    }
}

/// Reads frames from an HTTP/2 connection until the answer's HEADERS (type 1) on stream 1.
fn read_h2_answer_on_stream_1(s: &mut TcpStream) {
    let answered = |mut b: &[u8]| {
        while b.len() >= 9 {
            let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff;
            if b[3] == 1 && stream == 1 {
                return true;
            }
            b = &b[(9 + len).min(b.len())..];
        }
        false
    };
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    while !answered(&seen) {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "podproxy closed the connection");
        seen.extend(&buf[..n]);
    }
}

#[test]
fn an_http2_preface_or_header_block_left_unfinished_is_cut_after_the_header_read_timeout() {
    // Neither hyper nor h2 times an HTTP/2 header block, and --idle-timeout (30s here) would
    // leave a dripping client a minute by default: the header read timeout covers them, from
    // the first byte of the preface on, as it does an HTTP/1 head.
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--header-read-timeout", "1s", "--idle-timeout", "30s"],
    );
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut settings = preface.to_vec();
    settings.extend(h2_frame(4, 0, 0, b""));
    // HEADERS (type 1) flagged END_STREAM (1) but not END_HEADERS (4): a CONTINUATION is owed.
    let mut no_end = settings.clone();
    no_end.extend(h2_frame(1, 1, 1, &h2_get_block()));
    // A whole HEADERS frame's header, and only part of its block.
    let mut part = settings.clone();
    let headers = h2_frame(1, 5, 1, &h2_get_block());
    part.extend(&headers[..headers.len() - 4]);
    let clients = [
        ("half a preface", preface[..10].to_vec()),
        ("a HEADERS frame without END_HEADERS", no_end),
        ("part of a header block", part),
    ]
    .map(|(what, sent)| {
        let port = p.port;
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(&sent).expect("write");
            (what, closed_within_15s(&mut s, what))
        })
    });
    for client in clients {
        let (what, took) = client.join().expect("client thread");
        assert!(
            took >= Duration::from_millis(900),
            "{what}: cut after {took:?}"
        );
        assert!(took < Duration::from_secs(8), "{what}: cut after {took:?}");
    }

    // A client that has said all it began, then only PINGs with no stream open, is not cut:
    // past the header read timeout it still gets its request answered.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(&settings).expect("write");
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&h2_frame(6, 0, 0, b"podkit!!")).expect("PING");
    }
    s.write_all(&headers).expect("write request");
    read_h2_answer_on_stream_1(&mut s);
}

#[test]
fn an_http2_header_block_left_unfinished_is_cut_with_a_stream_in_flight() {
    // A header block holds the whole connection until it ends (RFC 9113 sections 4.3 and
    // 6.10), so a stream in flight (here an upload the upstream waits for) does not shield
    // one left unfinished: without that, it held until --request-timeout.
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &[
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "30s",
            "--request-timeout",
            "60s",
            "--upstream-response-timeout",
            "60s",
        ],
    );
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    start.extend(h2_frame(4, 0, 0, b""));
    // POST / on stream 1 (HPACK static index 3 for :method POST): END_HEADERS (4), not
    // END_STREAM, so its body is still to come and the upstream waits for it.
    let mut post = h2_get_block();
    post[0] = 0x83;
    start.extend(h2_frame(1, 4, 1, &post));
    s.write_all(&start).expect("write");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    // Past the header read timeout with the stream in flight and no block open: not cut.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        match s.read(&mut buf) {
            Ok(0) => panic!("closed with a stream in flight and no header block open"),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("closed with a stream in flight and no header block open ({e})"),
        }
    }
    // GET on stream 3, HEADERS without END_HEADERS: a CONTINUATION is owed, and never comes.
    s.write_all(&h2_frame(1, 1, 3, &h2_get_block()))
        .expect("write");
    let took = closed_within_15s(
        &mut s,
        "a HEADERS frame without END_HEADERS beside a stream",
    );
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    assert!(took < Duration::from_secs(8), "cut after {took:?}");
}

#[test]
fn a_client_cannot_flood_the_log_with_http2_protocol_slips() {
    // h2 logs each PING ack it never asked for at WARN: 2,000 such frames (34 KB) made 2,000
    // log lines (about 300 KB). The h2 crate is kept to errors unless a directive names it.
    let up = Upstream::start();
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_podproxy"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--route", &format!("/=http://{}", up.addr)])
        .args(["--access-log", "off", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("spawn podproxy");
    let start = Instant::now();
    let mut s = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(start.elapsed() < LIMIT, "podproxy never listened");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, b""));
    for _ in 0..2000 {
        // PING (type 6) with ACK (flag 1) for a ping podproxy never sent.
        out.extend(h2_frame(6, 1, 0, b"podkit!!"));
    }
    s.write_all(&out).expect("write frames");
    // The connection still serves: a request on stream 1 after the frames gets its answer, so
    // every frame before it was read.
    s.write_all(&h2_frame(1, 5, 1, &h2_get_block()))
        .expect("write request");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    read_h2_answer_on_stream_1(&mut s);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr).expect("stderr");
    let pings = log.lines().filter(|l| l.contains("PING")).count();
    assert!(
        pings < 5,
        "{pings} log lines about PING frames:\n{}",
        &log[..log.len().min(2000)]
    );
}

#[test]
fn a_stdout_nobody_reads_neither_stalls_requests_nor_health() {
    let up = Upstream::start();
    let (port, admin) = (free_port(), free_port());
    // One CPU: podproxy runs tokio's current-thread scheduler, whose one thread a blocked
    // write to stdout would stop whole.
    let mut child = Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_podproxy")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--route", &format!("/=http://{}", up.addr)])
        .args(["--access-log", "stdout", "--log-format", "text"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn podproxy");
    let start = Instant::now();
    let stream = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        assert!(start.elapsed() < LIMIT, "podproxy never listened");
        std::thread::sleep(Duration::from_millis(10));
    };
    stream.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = std::io::BufReader::new(stream);
    // About 2.5 MB of log lines: the pipe (64 KiB) fills at once, then the writer's queue.
    for i in 0..10_000 {
        writer
            .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        assert_eq!(read_answer(&mut reader), 200, "request {i}");
    }
    let live = raw(
        admin,
        b"GET /live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&live), 200, "{live}");
    let dropped = metric(admin, "podproxy_access_log_dropped_total").expect("metric");
    assert!(dropped > 0.0, "the lines nobody could take are counted");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_request_whose_client_leaves_before_the_answer_is_logged_and_counted_as_499() {
    let up = Upstream::start();
    let p = Podproxy::start(&[format!("/=http://{}", up.addr)], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Request-Id: gone-1\r\n\r\n")
        .expect("write");
    // The upstream takes 3s; the client gives up before.
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    let start = Instant::now();
    while p.access_log().is_empty() {
        assert!(
            start.elapsed() < LIMIT,
            "no access log line for the abandoned request"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = &p.access_log()[0];
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["path"], "/slow", "{line}");
    assert_eq!(line["request_id"], "gone-1", "{line}");
    let counted = raw(
        p.admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        counted
            .lines()
            .any(|l| l.starts_with("podproxy_requests_total{")
                && l.contains("4xx")
                && l.ends_with(" 1")),
        "{counted}"
    );
}

#[test]
fn busybox_httpd_behind_the_proxy_and_the_access_log() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.path().join("index.html"), "from busybox\n").expect("write");
    let port = free_port();
    let mut httpd = Command::new("busybox")
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
        .arg(root.path())
        .spawn()
        .expect("this test needs busybox (apt-get install busybox-static)");
    std::thread::sleep(Duration::from_millis(200));
    let p = Podproxy::start(
        &[format!("/=http://127.0.0.1:{port}")],
        &["--access-log-redact-query"],
    );
    let r = get(p.port, "/index.html?token=secret");
    assert!(r.contains("from busybox"), "{r}");
    let start = Instant::now();
    while p.access_log().is_empty() {
        assert!(start.elapsed() < LIMIT, "no access log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = &p.access_log()[0];
    assert_eq!(line["status"], 200);
    assert_eq!(line["path"], "/index.html");
    assert_eq!(line["query"], "REDACTED");
    assert_eq!(line["bytes_out"], 13);
    assert_eq!(line["upstream"], format!("http://127.0.0.1:{port}"));
    assert_eq!(line["method"], "GET");
    assert!(line["request_id"].as_str().is_some_and(|id| id.len() == 32));

    // Rotated away: the next line goes to a new file under the same name.
    std::fs::rename(
        p.dir.path().join("access.log"),
        p.dir.path().join("access.log.1"),
    )
    .expect("rotate");
    let start = Instant::now();
    loop {
        get(p.port, "/index.html");
        std::thread::sleep(Duration::from_millis(200));
        if !p.access_log().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the access log was not reopened after rotation"
        );
    }
    let _ = httpd.kill();
    let _ = httpd.wait();
}

#[test]
fn sigterm_drains_in_flight_requests_and_the_ready_file_goes() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--drain-delay", "500ms", "--drain-timeout", "10s"],
    );
    let port = p.port;
    let start = Instant::now();
    while !p.dir.path().join("ready").exists() {
        assert!(
            start.elapsed() < LIMIT,
            "podproxy never wrote its ready file"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Requests in flight when SIGTERM arrives: /slow takes 3s.
    let inflight: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(port, "/slow")))
        .collect();
    // Connections that hold no request do not hold up the drain: one that has sent nothing
    // yet, and one kept alive after its answer.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    kept.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    kept.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut answer = [0u8; 512];
    let n = kept.read(&mut answer).expect("kept-alive answer");
    assert_eq!(status(&String::from_utf8_lossy(&answer[..n])), 200);
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    p.sigterm();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !p.dir.path().join("ready").exists(),
        "the ready file must go at once"
    );
    let ready = raw(
        p.admin,
        b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&ready), 503, "{ready}");
    // Still accepting during the drain delay.
    assert_eq!(status(&get(port, "/during-delay")), 200);
    for t in inflight {
        let r = t.join().expect("request thread");
        assert_eq!(
            status(&r),
            200,
            "an in-flight request failed during the drain: {r}"
        );
    }
    let mut p = p;
    assert_eq!(p.wait_exit(), Some(0));
    // Well before --drain-timeout (10s): /slow's 3s, the grace and the log flush.
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "the drain took {:?}",
        signalled.elapsed()
    );
    silent.set_read_timeout(Some(LIMIT)).expect("timeout");
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap_or(0), 0);
    assert_eq!(kept.read(&mut [0u8; 16]).unwrap_or(0), 0);
}

#[test]
fn sigterm_serves_connections_queued_beyond_max_connections() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &[
            "--max-connections",
            "1",
            "--drain-delay",
            "300ms",
            "--drain-timeout",
            "10s",
        ],
    );
    // The one connection allowed, kept alive after its answer: it holds the permit.
    let mut kept = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    kept.set_read_timeout(Some(LIMIT)).expect("timeout");
    kept.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let mut answer = [0u8; 512];
    let n = kept.read(&mut answer).expect("kept-alive answer");
    assert_eq!(status(&String::from_utf8_lossy(&answer[..n])), 200);
    // A second one: the kernel completes its handshake and queues it, and its request waits
    // there, as podproxy takes no connection beyond --max-connections.
    let mut queued = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    queued.set_read_timeout(Some(LIMIT)).expect("timeout");
    queued
        .write_all(b"GET /queued HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.requests(),
        1,
        "the queued request was served before the drain"
    );
    p.sigterm();
    // The listener closes after the drain delay with the queued connection still waiting for
    // a permit: it is taken and served all the same, and told to close.
    let mut got = Vec::new();
    let _ = queued.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert_eq!(status(&got), 200, "the queued request failed: {got:?}");
    assert!(got.contains("path=/queued"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );
    // The kept-alive one is closed once idle, and podproxy exits having drained everything.
    assert_eq!(kept.read(&mut [0u8; 16]).unwrap_or(0), 0);
    let mut p = p;
    assert_eq!(p.wait_exit(), Some(0));
}

fn ready_status(admin: u16) -> u16 {
    try_raw(
        admin,
        b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .map(|r| status(&r))
    .unwrap_or(0)
}

#[test]
fn ready_only_once_every_upstream_answers_and_the_health_check_passes() {
    // The / route's upstream is not up yet; /api is checked with GET /healthz (answered 200).
    let late = ReservedPort::new();
    let late_port = late.port();
    let api = Upstream::start();
    let p = Podproxy::start(
        &[
            format!("/=http://127.0.0.1:{late_port}"),
            format!("/api=http://{}", api.addr),
        ],
        &[
            "--health-check",
            "/api=/healthz",
            "--health-interval",
            "100ms",
        ],
    );
    let ready_file = p.dir.path().join("ready");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ready_status(p.admin),
        503,
        "ready while the / upstream is down"
    );
    assert!(
        !ready_file.exists(),
        "ready file written while an upstream is down"
    );

    let late = late.listen();
    let start = Instant::now();
    while ready_status(p.admin) != 200 {
        assert!(
            start.elapsed() < LIMIT,
            "never ready after the upstream came up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready_file.exists(), "no ready file once ready");
    // The upstream goes away: not ready again.
    drop(late);
    let start = Instant::now();
    while ready_status(p.admin) != 503 {
        assert!(
            start.elapsed() < LIMIT,
            "still ready after the upstream went away"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_turns_ready_off_at_once_even_during_a_slow_probe_round() {
    let up = Upstream::start();
    // Three routes whose health checks take 1.5s each: a probe round takes 4.5s.
    let routes: Vec<String> = ["/a", "/b", "/c"]
        .iter()
        .map(|r| format!("{r}=http://{}", up.addr))
        .collect();
    let p = Podproxy::start(
        &routes,
        &[
            "--health-check",
            "/a=/slowish",
            "--health-check",
            "/b=/slowish",
            "--health-check",
            "/c=/slowish",
            "--health-interval",
            "100ms",
            "--drain-delay",
            "5s",
        ],
    );
    let start = Instant::now();
    while ready_status(p.admin) != 200 {
        assert!(start.elapsed() < LIMIT, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Into the next round.
    std::thread::sleep(Duration::from_millis(700));
    p.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ready_status(p.admin), 503, "/ready still 200 after SIGTERM");
    assert!(
        !p.dir.path().join("ready").exists(),
        "the ready file must go at once"
    );
}

#[test]
fn a_failing_health_check_keeps_the_proxy_unready() {
    let up = Upstream::start();
    // The test upstream answers /ws with 101, which is not a health answer.
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--health-check", "/=/ws", "--health-interval", "100ms"],
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(ready_status(p.admin), 503);
    let bad = Command::new(env!("CARGO_BIN_EXE_podproxy"))
        .args([
            "--route",
            "/=http://127.0.0.1:1",
            "--health-check",
            "/nope=/healthz",
        ])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no --route has the prefix"));
}

/// A Kubernetes-style Secret volume: `tls.crt` and `tls.key` are links into `..data`, itself a
/// link to a versioned directory; an update swaps `..data` atomically.
fn write_secret(dir: &std::path::Path, version: &str, cert_pem: &str, key_pem: &str) {
    let data = dir.join(version);
    std::fs::create_dir_all(&data).expect("version dir");
    std::fs::write(data.join("tls.crt"), cert_pem).expect("cert");
    std::fs::write(data.join("tls.key"), key_pem).expect("key");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("link");
        }
    }
}

fn self_signed() -> (String, String, rustls_pki_types::CertificateDer<'static>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    (
        c.cert.pem(),
        c.key_pair.serialize_pem(),
        c.cert.der().clone(),
    )
}

/// A TLS client configuration trusting only `root`.
fn client_tls(
    root: &rustls_pki_types::CertificateDer<'static>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Connects with TLS trusting only `root`; returns the response text and the served cert.
fn tls_get(
    port: u16,
    root: &rustls_pki_types::CertificateDer<'static>,
    path: &str,
) -> Result<(String, Vec<u8>), String> {
    let rt = current_thread();
    rt.block_on(async {
        let config = client_tls(root)?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((String::from_utf8_lossy(&body).into_owned(), served))
    })
}

#[test]
fn tls_termination_and_certificate_rotation_by_symlink_swap() {
    let up = Upstream::start();
    let secret = tempfile::tempdir().expect("tempdir");
    let (cert1, key1, der1) = self_signed();
    write_secret(secret.path(), "v1", &cert1, &key1);
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &[
            "--tls-cert",
            &secret.path().join("tls.crt").display().to_string(),
            "--tls-key",
            &secret.path().join("tls.key").display().to_string(),
        ],
    );
    let (body, served) = tls_get(p.port, &der1, "/secure").expect("TLS request");
    assert!(
        body.contains("path=/secure\n") && body.contains("x-forwarded-proto=https\n"),
        "{body}"
    );
    assert_eq!(served, der1.to_vec());

    // The Secret is updated: new connections get the new certificate.
    let (cert2, key2, der2) = self_signed();
    write_secret(secret.path(), "v2", &cert2, &key2);
    let start = Instant::now();
    loop {
        if let Ok((_, served)) = tls_get(p.port, &der2, "/") {
            assert_eq!(served, der2.to_vec());
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A broken update (key of another certificate) is refused: the second pair stays.
    let (_, other_key, _) = self_signed();
    write_secret(secret.path(), "v3", &cert1, &other_key);
    std::thread::sleep(Duration::from_millis(2500));
    let (_, served) =
        tls_get(p.port, &der2, "/").expect("still served with the second certificate");
    assert_eq!(served, der2.to_vec());
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn large_bodies_stream_both_ways_in_bounded_memory() {
    let up = Upstream::start();
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--max-body-bytes", "1GiB"],
    );
    // Down: 192 MiB from the upstream.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("download failed after {total} bytes: {e}"),
        }
    }
    assert!(total > 192 << 20, "only {total} bytes came through");
    // Up: 192 MiB to the upstream, written in pieces.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    let size = 192usize << 20;
    s.write_all(
        format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("head");
    let chunk = vec![b'y'; 1 << 20];
    for _ in 0..192 {
        s.write_all(&chunk).expect("body");
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.contains(&format!("body-bytes={size}")),
        "{}",
        &answer[..answer.len().min(300)]
    );
    // Neither direction was buffered whole: podproxy's peak stays far below one body. (This
    // debug build peaks at 35-50 MiB here, read buffers and allocator caches included; one
    // body held whole would add 192 MiB.)
    let peak = peak_rss_kib(p.child.id());
    assert!(
        peak > 0 && peak < 96 * 1024,
        "podproxy peak RSS {peak} KiB while moving 192 MiB each way"
    );
}

#[test]
fn nginx_as_the_upstream() {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("this test needs nginx (apt-get install nginx; .ci/run installs it)");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("www/api")).expect("www");
    std::fs::write(dir.path().join("www/api/items"), "[\"apple\",\"pear\"]\n").expect("file");
    let port = free_port();
    std::fs::write(
        dir.path().join("nginx.conf"),
        format!(
            "worker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\nevents {{ worker_connections 256; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www; location /echo-host {{ return 200 \"host=$host xff=$http_x_forwarded_for\\n\"; }} }} }}\n"
        ),
    )
    .expect("conf");
    let mut server = Command::new(nginx)
        .args([
            "-p",
            &d,
            "-c",
            &format!("{d}/nginx.conf"),
            "-g",
            "daemon off;",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < LIMIT, "nginx never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = Podproxy::start(&[format!("/=http://127.0.0.1:{port}")], &[]);
    let r = get(p.port, "/api/items");
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("[\"apple\",\"pear\"]"), "{r}");
    let r = get(p.port, "/echo-host");
    assert!(r.contains("host=shop.test xff=127.0.0.1"), "{r}");
    assert_eq!(status(&get(p.port, "/api/missing")), 404);
    // SIGQUIT: nginx's graceful stop, which takes its worker along (SIGKILL orphans it).
    let _ = Command::new("kill")
        .args(["-QUIT", &server.id().to_string()])
        .status();
    let _ = server.wait();
}

/// An HTTP/2 cleartext (prior knowledge) upstream in the style of a gRPC server: every request
/// body frame is echoed back at once as a response frame, and the response ends with the
/// trailer `grpc-status: 0`; it also answers with the request's `te` header.
fn h2c_echo_upstream() -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let te = req
                        .headers()
                        .get("te")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    let (tx, rx) = tokio::sync::mpsc::channel(8);
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Ok(data) = frame.into_data() {
                                if tx.send(hyper::body::Frame::data(data)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = tx.send(hyper::body::Frame::trailers(trailers)).await;
                    });
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/grpc")
                            .header("x-te-seen", te)
                            .body(ChannelBody(rx))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rt)
}

/// A body fed frame by frame from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<hyper::body::Frame<Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

#[test]
fn grpc_style_bidirectional_stream_over_an_h2c_route() {
    let (upstream, _rt) = h2c_echo_upstream();
    let p = Podproxy::start(&[format!("/=http://{upstream},h2c")], &[]);
    let rt = current_thread();
    rt.block_on(async {
        let stream = connect(p.port).await;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let req = Request::post(format!("http://127.0.0.1:{}/echo.Echo/Chat", p.port))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(ChannelBody(rx))
            .expect("request");
        let resp = tokio::time::timeout(LIMIT, async {
            tx.send(hyper::body::Frame::data(Bytes::from_static(b"ping 0")))
                .await
                .expect("send");
            send.send_request(req).await.expect("response")
        })
        .await
        .expect("response head in time");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-te-seen"], "trailers");
        let mut body = resp.into_body();
        // Each message comes back before the next is sent: both directions stream at once.
        for i in 0..5 {
            let frame = tokio::time::timeout(LIMIT, body.frame())
                .await
                .expect("an echo in time")
                .expect("a frame")
                .expect("ok");
            assert_eq!(
                frame.into_data().expect("data"),
                Bytes::from(format!("ping {i}"))
            );
            if i < 4 {
                tx.send(hyper::body::Frame::data(Bytes::from(format!(
                    "ping {}",
                    i + 1
                ))))
                .await
                .expect("send");
            }
        }
        drop(tx);
        let trailers = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("trailers in time")
            .expect("a frame")
            .expect("ok")
            .into_trailers()
            .expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
    });
}

/// TLS with ALPN offering h2 first: the client speaks HTTP/2 to podproxy, the upstream gets
/// HTTP/1.1.
#[test]
fn http2_over_tls_by_alpn() {
    let up = Upstream::start();
    let secret = tempfile::tempdir().expect("tempdir");
    let (cert, key, der) = self_signed();
    write_secret(secret.path(), "v1", &cert, &key);
    let p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &[
            "--tls-cert",
            &secret.path().join("tls.crt").display().to_string(),
            "--tls-key",
            &secret.path().join("tls.key").display().to_string(),
        ],
    );
    let rt = current_thread();
    let (alpn, version, text) = rt.block_on(async {
        let mut config = client_tls(&der).expect("client config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::get("https://localhost/over-h2")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        let version = resp.version();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (alpn, version, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(version, http::Version::HTTP_2);
    assert!(
        text.contains("path=/over-h2\n")
            && text.contains("version=HTTP/1.1")
            && text.contains("x-forwarded-proto=https\n"),
        "{text}"
    );
}

/// SIGTERM while wrk keeps 50 connections busy: every request that reached podproxy is
/// answered 200. From SIGTERM on, answers carry `Connection: close`; after the drain delay the
/// listener closes (its accept queue is served first) and the connections get a moment to
/// leave before idle ones are closed. wrk then sees only refused connections, which it counts
/// as write errors (its connect is non-blocking): requests that never reached podproxy. A read
/// error would be a request podproxy took and dropped.
#[test]
fn sigterm_under_load_fails_no_request() {
    let up = Upstream::start();
    let p = Podproxy::start(&[format!("/=http://{}", up.addr)], &["--drain-delay", "1s"]);
    let wrk = Command::new("wrk")
        .args(["-t1", "-c50", "-d4s", "--latency"])
        .arg(format!("http://127.0.0.1:{}/load", p.port))
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test needs wrk (apt-get install wrk)");
    std::thread::sleep(Duration::from_millis(1500));
    p.sigterm();
    let out = wrk.wait_with_output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "{text}");
    if let Some(line) = text.lines().find(|l| l.contains("Socket errors")) {
        // "Socket errors: connect N, read 0, write 0, timeout 0"
        let count = |what: &str| -> u64 {
            line.split(',')
                .find(|p| p.trim_start().starts_with(what) || p.contains(&format!("{what} ")))
                .and_then(|p| p.split_whitespace().last())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        // A client that completed its handshake into the accept queue after podproxy's last
        // look at it would be reset at the close, and wrk, which writes its request without
        // waiting, would count a read error for a request podproxy never saw. podproxy stops
        // new handshakes (a socket filter) before it takes the queue with accept(2), so the
        // one left is a handshake half done at that very moment; a request podproxy took and
        // dropped would show as many.
        assert!(count("read") <= 1, "{text}");
        assert_eq!(count("timeout"), 0, "{text}");
    }
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 1000, "{text}");
}

/// A keep-alive HTTP/1.1 upstream on a plain socket that counts the connections requests came
/// on and says when podproxy closed one of those (podproxy's readiness probe only connects).
fn counting_upstream() -> (
    SocketAddr,
    std::sync::mpsc::Receiver<&'static str>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = std::sync::mpsc::channel();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let count = std::sync::Arc::clone(&count);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut served = false;
                loop {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => {
                            if served {
                                let _ = tx.send("closed");
                            }
                            return;
                        }
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if !served {
                            served = true;
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    (addr, rx, accepted)
}

#[test]
fn upstream_connections_are_reused_then_closed_when_idle() {
    let (addr, closed, accepted) = counting_upstream();
    let p = Podproxy::start(
        &[format!("/=http://{addr}")],
        &["--upstream-idle-timeout", "1s"],
    );
    // Requests one after another, each on a new client connection, share one upstream
    // connection.
    for _ in 0..5 {
        assert_eq!(status(&get(p.port, "/")), 200);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        closed.try_recv().is_err(),
        "the pooled connection closed early"
    );
    // Idle for the timeout, podproxy closes it (within about half the timeout more)...
    let t = Instant::now();
    assert_eq!(
        closed.recv_timeout(Duration::from_secs(5)),
        Ok("closed"),
        "the idle upstream connection was never closed"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // ...and the next request gets a new one.
    assert_eq!(status(&get(p.port, "/")), 200);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn an_upstream_named_by_host_name_is_resolved_at_connect() {
    // `localhost` comes from /etc/hosts, often as ::1 before 127.0.0.1: the upstream listens on
    // 127.0.0.1 only, so this also shows each resolved address is tried in turn.
    let (addr, _closed, accepted) = counting_upstream();
    let p = Podproxy::start(&[format!("/=http://localhost:{}", addr.port())], &[]);
    assert_eq!(status(&get(p.port, "/")), 200);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_connection_still_sending_an_upload_is_not_handed_to_the_next_request() {
    // The upstream answers an upload 401 at once, before its body, and goes on reading it;
    // other requests get 200.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let upload = buf.starts_with(b"POST /upload");
                        buf.drain(..end + 4);
                        if upload {
                            let _ = conn.write_all(
                                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope",
                            );
                            // The body is read and dropped for as long as it comes.
                            while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
                            return;
                        }
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    let p = Podproxy::start(
        &[format!("/=http://{addr}")],
        &["--upstream-response-timeout", "3s"],
    );
    // A: a 10 MB upload of which 1 KiB is sent, then the client stalls with the connection open.
    let mut a = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    a.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n")
        .expect("head");
    a.write_all(&[b'u'; 1024]).expect("body");
    a.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut answer = [0u8; 512];
    let n = a.read(&mut answer).expect("A's answer");
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // B, while A's upload is still open: served at once on another connection, not a 504.
    let t = Instant::now();
    assert_eq!(status(&get(p.port, "/")), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(a);
}

#[test]
fn a_second_stop_signal_during_the_drain_exits_at_once() {
    let up = Upstream::start();
    // A drain delay far past the test's limit: only the second signal can end it in time.
    let mut p = Podproxy::start(
        &[format!("/=http://{}", up.addr)],
        &["--drain-delay", "300s", "--drain-timeout", "25s"],
    );
    p.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        p.child.try_wait().expect("wait"),
        None,
        "exited on the first"
    );
    p.signal("INT");
    assert_eq!(
        p.wait_exit(),
        Some(130),
        "the second signal's conventional code"
    );
    let log = std::fs::read_to_string(p.dir.path().join("stderr")).unwrap_or_default();
    assert!(log.contains("second stop signal"), "{log}");
}

#[test]
fn sighup_does_not_kill_podproxy() {
    let up = Upstream::start();
    let mut p = Podproxy::start(&[format!("/=http://{}", up.addr)], &["--drain-delay", "0s"]);
    p.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        p.child.try_wait().expect("wait"),
        None,
        "SIGHUP killed podproxy"
    );
    let answer = raw(
        p.port,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&answer), 200, "{answer}");
    p.sigterm();
    assert_eq!(p.wait_exit(), Some(0));
    let log = std::fs::read_to_string(p.dir.path().join("stderr")).unwrap_or_default();
    assert!(log.contains("SIGHUP ignored"), "{log}");
}

#[test]
fn help_lists_the_exit_codes_and_signals() {
    let out = Command::new(env!("CARGO_BIN_EXE_podproxy"))
        .arg("--help")
        .output()
        .expect("podproxy --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes: 0 drained",
        "2 usage or configuration error",
        "SIGHUP",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn a_missing_certificate_fails_before_anything_says_listening() {
    let out = Command::new(env!("CARGO_BIN_EXE_podproxy"))
        .args(["--listen", "127.0.0.1:0", "--route", "/=http://127.0.0.1:9"])
        .args([
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
        ])
        .args(["--log-format", "text"])
        .output()
        .expect("podproxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

//! Each target kind against a real peer on loopback that comes up late or changes its answer.

mod support;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podkit_tests::ReservedPort;
use support::*;

/// What the test server answers to its n-th request (counting from 1).
type Handler = dyn Fn(u32) -> Response<Full<Bytes>> + Send + Sync;

fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// A hyper HTTP/1.1 server (optionally behind rustls) on a background thread.
struct HttpServer {
    addr: SocketAddr,
    requests: Arc<AtomicU32>,
    _runtime: tokio::runtime::Runtime,
}

impl HttpServer {
    fn start(handler: Arc<Handler>, tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&requests);
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let counter = Arc::clone(&counter);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                        let resp = handler(n);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(config) => {
                            if let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        HttpServer {
            addr,
            requests,
            _runtime: runtime,
        }
    }

    fn url(&self, scheme: &str, host: &str, path: &str) -> String {
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }
}

#[test]
fn a_port_that_opens_late_is_waited_for() {
    let late = ReservedPort::new();
    let port = late.port();
    let mut guard =
        Guard::spawn(waitfor().args(["--timeout", "30s", &format!("127.0.0.1:{port}")]));
    assert_still_waiting(&mut guard, Duration::from_millis(800));
    let _listener = late.listen();
    let out = guard.finish(HANG_GUARD);
    out.assert_code(0)
        .assert_stderr_has(&format!("ready: tcp://127.0.0.1:{port} after"));
}

#[test]
fn ipv6_literals_are_probed() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        panic!("this test needs IPv6 on loopback (::1)");
    };
    let port = listener.local_addr().expect("addr").port();
    run(&["--timeout", "10s", &format!("[::1]:{port}")])
        .assert_code(0)
        .assert_stderr_has(&format!("ready: tcp://[::1]:{port}"));
}

#[test]
fn http_waits_for_an_accepted_status() {
    // 503 twice, then 200.
    let server = HttpServer::start(
        Arc::new(|n| {
            if n <= 2 {
                response(503, &[], "starting")
            } else {
                response(200, &[], "ok")
            }
        }),
        None,
    );
    let out = run(&[
        "--timeout",
        "30s",
        "--log-level",
        "debug",
        &server.url("http", "127.0.0.1", "/healthz"),
    ]);
    out.assert_code(0)
        .assert_stderr_has("HTTP 503 Service Unavailable")
        .assert_stderr_has("ready: http://127.0.0.1");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);

    // --http-status accepts a redirect and refuses a 200.
    let redirect = HttpServer::start(Arc::new(|_| response(302, &[("Location", "/x")], "")), None);
    run(&[
        "--timeout",
        "10s",
        "--http-status",
        "200,301-302",
        &redirect.url("http", "127.0.0.1", "/"),
    ])
    .assert_code(0);
    let ok = HttpServer::start(Arc::new(|_| response(200, &[], "")), None);
    run(&[
        "--timeout",
        "500ms",
        "--http-status",
        "204",
        &ok.url("http", "127.0.0.1", "/"),
    ])
    .assert_code(124)
    .assert_stderr_has("last error: HTTP 200 OK");
}

#[test]
fn http_body_and_header_checks() {
    // The header says "serving" from the third request, the body says "ready" from the fifth.
    let server = HttpServer::start(
        Arc::new(|n| {
            let body = if n >= 5 {
                "{\"status\":\"ready\"}"
            } else {
                "{\"status\":\"warming\"}"
            };
            if n >= 3 {
                response(200, &[("X-App-State", "serving")], body)
            } else {
                response(200, &[("X-App-State", "booting")], body)
            }
        }),
        None,
    );
    let out = run(&[
        "--timeout",
        "30s",
        "--log-level",
        "debug",
        "--http-body",
        r#""status":\s*"ready""#,
        "--http-header",
        "X-App-State: serving",
        &server.url("http", "127.0.0.1", "/status"),
    ]);
    out.assert_code(0)
        .assert_stderr_has("body does not match")
        .assert_stderr_has("header x-app-state is \"booting\", want \"serving\"");
    assert_eq!(server.requests.load(Ordering::SeqCst), 5);

    // A header that must merely be present.
    let missing = HttpServer::start(Arc::new(|_| response(200, &[], "")), None);
    run(&[
        "--timeout",
        "400ms",
        "--http-header",
        "X-Ready",
        &missing.url("http", "127.0.0.1", "/"),
    ])
    .assert_code(124)
    .assert_stderr_has("header x-ready missing");
}

fn self_signed() -> (Arc<rustls::ServerConfig>, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert_pem = cert.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .expect("server config");
    (Arc::new(config), cert_pem)
}

#[test]
fn https_against_a_self_signed_server() {
    let (config, ca_pem) = self_signed();
    let server = HttpServer::start(Arc::new(|_| response(200, &[], "secure")), Some(config));
    let url = server.url("https", "localhost", "/");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("write ca");

    // Unknown issuer: never ready, and the log says why. (3s: a debug-build handshake on a
    // loaded machine took longer than the 500ms this once had, so no attempt finished.)
    run(&["--timeout", "3s", &url])
        .assert_code(124)
        .assert_stderr_has("TLS: invalid peer certificate");
    // Trusted through --ca-file.
    run(&[
        "--timeout",
        "10s",
        "--ca-file",
        ca.to_str().expect("utf-8"),
        &url,
    ])
    .assert_code(0)
    .assert_stderr_has("ready: https://localhost");
    // Not verified with --insecure.
    run(&["--timeout", "10s", "--insecure", &url]).assert_code(0);
}

#[test]
fn unix_socket_that_appears_late() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.sock");
    let mut guard =
        Guard::spawn(waitfor().args(["--timeout", "30s", &format!("unix://{}", path.display())]));
    assert_still_waiting(&mut guard, Duration::from_millis(500));
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind unix socket");
    guard
        .finish(HANG_GUARD)
        .assert_code(0)
        .assert_stderr_has("socket accepted a connection");
}

#[test]
fn file_exists_and_nonempty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ready");
    let target = format!("file://{}", path.display());
    let mut guard = Guard::spawn(waitfor().args(["--timeout", "30s", "--file-nonempty", &target]));
    assert_still_waiting(&mut guard, Duration::from_millis(400));
    std::fs::write(&path, "").expect("create empty");
    assert_still_waiting(&mut guard, Duration::from_millis(400));
    std::fs::write(&path, "ok\n").expect("fill");
    guard
        .finish(HANG_GUARD)
        .assert_code(0)
        .assert_stderr_has("exists (3 bytes)");

    // Without --file-nonempty, an empty file is enough.
    std::fs::write(&path, "").expect("truncate");
    run(&["--timeout", "5s", &target]).assert_code(0);
    run(&[
        "--timeout",
        "300ms",
        &format!("file://{}/absent", dir.path().display()),
    ])
    .assert_code(124)
    .assert_stderr_has("last error: file not found");
}

#[test]
fn any_is_satisfied_by_one_target() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let held = ReservedPort::new();
    let down = format!("127.0.0.1:{}", held.port());
    run(&["--timeout", "10s", "--any", &down, &up])
        .assert_code(0)
        .assert_stderr_has("ready: a target (--any)");
    run(&["--timeout", "500ms", &down, &up]).assert_code(124);
}

#[test]
fn success_count_needs_consecutive_successes() {
    // 200, 503, 200, 200, 200: the 503 resets the count, so 3 in a row end at request 5.
    let server = HttpServer::start(
        Arc::new(|n| {
            if n == 2 {
                response(503, &[], "")
            } else {
                response(200, &[], "")
            }
        }),
        None,
    );
    run(&[
        "--timeout",
        "30s",
        "--success-count",
        "3",
        &server.url("http", "127.0.0.1", "/"),
    ])
    .assert_code(0)
    .assert_stderr_has("(5 attempts)");
    assert_eq!(server.requests.load(Ordering::SeqCst), 5);
}

//! A measuring stick for `cargo xtask bench podproxy`, not a proxy to run: the least an HTTP/1.1
//! reverse proxy on hyper 1 can do. One upstream connection per client connection, requests and
//! responses passed on as they are: no routing, no header rules, no limits, no timeouts, no
//! logs, no metrics. Whatever podproxy costs above this row is podproxy's; this row itself is
//! what hyper's HTTP/1 server and client cost.
//!
//! `bare_hyper_proxy LISTEN_ADDR UPSTREAM_ADDR [--headers]`, both `host:port`. With
//! `--headers` it adds what podproxy adds to every request and nothing else: `X-Forwarded-For`,
//! `-Proto`, `-Host`, and an `X-Request-Id` (kept, or made by podproxy's own
//! `forward::request_id`) sent back in the answer; the bench's row for it tells what those
//! headers cost, the backend's share included.

use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, HOST};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
// podproxy's own header names and request id, so the row costs what podproxy pays for them.
use podproxy::forward::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REQUEST_ID};

#[global_allocator]
static ALLOCATOR: podkit_alloc::MiMalloc = podkit_alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_hyper_proxy LISTEN_ADDR UPSTREAM_ADDR [--headers] (host:port each)");
        return std::process::ExitCode::from(2);
    };
    let headers = match args.next().as_deref() {
        None => false,
        Some("--headers") => true,
        Some(other) => {
            eprintln!("bare_hyper_proxy: unknown argument {other:?}; the only option is --headers");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bare_hyper_proxy: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bare_hyper_proxy: cannot listen on {listen}: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        loop {
            let Ok((client, peer)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let Ok((send, conn)) =
                    hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(up)).await
                else {
                    return;
                };
                tokio::spawn(conn);
                let send = Arc::new(Mutex::new(send));
                let peer = HeaderValue::from_str(&peer.ip().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
                let service =
                    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        let id = headers.then(|| {
                            let h = req.headers_mut();
                            h.insert(X_FORWARDED_FOR, peer.clone());
                            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
                            if let Some(host) = h.get(HOST).cloned() {
                                h.insert(X_FORWARDED_HOST, host);
                            }
                            let incoming = h.get(X_REQUEST_ID).cloned();
                            let count = usize::from(incoming.is_some());
                            forward::request_id(h, incoming.as_ref(), count)
                        });
                        // An HTTP/1 client sends one request at a time, so the connection is free.
                        let answer = send
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .send_request(req);
                        async move {
                            let mut resp = answer.await?;
                            if let Some(id) = id {
                                resp.headers_mut().insert(X_REQUEST_ID, id);
                            }
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    })
}

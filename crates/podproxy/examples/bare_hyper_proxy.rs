//! A measuring stick for `cargo xtask bench podproxy`, not a proxy to run: the least an HTTP/1.1
//! reverse proxy on hyper 1 can do. One upstream connection per client connection, requests and
//! responses passed on as they are: no routing, no header rules, no limits, no timeouts, no
//! logs, no metrics. Whatever podproxy costs above this row is podproxy's; this row itself is
//! what hyper's HTTP/1 server and client cost.
//!
//! `bare_hyper_proxy LISTEN_ADDR UPSTREAM_ADDR`, both `host:port`.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOCATOR: podkit_alloc::MiMalloc = podkit_alloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_hyper_proxy LISTEN_ADDR UPSTREAM_ADDR (host:port each)");
        return std::process::ExitCode::from(2);
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
            let Ok((client, _)) = listener.accept().await else {
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
                let service = hyper::service::service_fn(move |req| {
                    // An HTTP/1 client sends one request at a time, so the connection is free.
                    send.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .send_request(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(client), service)
                    .await;
            });
        }
    })
}

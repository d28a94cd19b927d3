//! Readiness from the upstreams: podproxy is ready only once every route's upstream answers.
//! A route with `--health-check ROUTE=PATH` is probed with `GET PATH` (ready on 2xx or 3xx);
//! any other route with a connect to its upstream (waitfor's TCP probe, or a unix connect).
//! Probing goes on every `--health-interval`, so an upstream that goes away makes `/ready` 503
//! until it is back. The ready file is written the first time everything is up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use podkit_runtime::admin::Readiness;
use podkit_runtime::Shutdown;
use waitfor::target::HostPort;

use crate::route::{Route, Routes, Upstream};
use crate::upstream::{upstream_uri, Body, Clients};

/// The longest one probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `--health-check` values: route key (`[host]/prefix`) to path.
pub fn parse_checks(values: &[String], routes: &Routes) -> Result<HashMap<String, String>, String> {
    let mut checks = HashMap::new();
    for v in values {
        let (route, path) = v
            .split_once('=')
            .ok_or_else(|| format!("--health-check {v:?}: use ROUTE=PATH, e.g. /api=/healthz"))?;
        if !path.starts_with('/') {
            return Err(format!(
                "--health-check {v:?}: the path must start with '/'"
            ));
        }
        let key = route.trim_end_matches('/');
        let key = if key.is_empty() || key.ends_with(':') {
            format!("{key}/")
        } else {
            key.to_string()
        };
        if !routes.iter().any(|r| route_key(r) == key) {
            return Err(format!(
                "--health-check {v:?}: no --route has the prefix {key:?}"
            ));
        }
        checks.insert(key, path.to_string());
    }
    Ok(checks)
}

/// How a route is named in `--health-check` and in logs: `host/prefix` or `/prefix`.
pub fn route_key(r: &Route) -> String {
    match &r.host {
        Some(h) if r.prefix == "/" => format!("{h}/"),
        Some(h) => format!("{h}{}", r.prefix),
        None => r.prefix.clone(),
    }
}

async fn probe(clients: &Clients, route: &Route, path: Option<&str>) -> Result<(), String> {
    match path {
        Some(path) => {
            let uri = upstream_uri(&route.upstream, path).map_err(|e| e.to_string())?;
            let req = http::Request::get(uri)
                .header(
                    http::header::USER_AGENT,
                    concat!("podproxy-health/", env!("CARGO_PKG_VERSION")),
                )
                .body(Body::Empty)
                .map_err(|e| e.to_string())?;
            let resp = clients
                .send(&route.upstream, route.h2c, req, std::time::Instant::now())
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("GET {path} answered {status}"))
            }
        }
        None => match &route.upstream {
            Upstream::Http { host, port } => waitfor::probe::tcp::connect(&HostPort {
                host: host.clone(),
                port: *port,
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
            Upstream::Unix(p) => tokio::net::UnixStream::connect(p)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        },
    }
}

/// Probes until `stop` fires, setting `readiness` and writing `ready_file` once all are up.
pub async fn watch(
    routes: Routes,
    checks: HashMap<String, String>,
    clients: Clients,
    readiness: Readiness,
    ready_file: Option<PathBuf>,
    interval: Duration,
    mut stop: Shutdown,
) {
    let mut up: HashMap<String, bool> = HashMap::new();
    let mut file_written = false;
    loop {
        let mut all = true;
        for route in routes.iter() {
            let key = route_key(route);
            let result = match tokio::time::timeout(
                PROBE_TIMEOUT,
                probe(&clients, route, checks.get(&key).map(String::as_str)),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            let ok = result.is_ok();
            if up.insert(key.clone(), ok) != Some(ok) {
                match &result {
                    Ok(()) => {
                        tracing::info!(route = %key, upstream = %route.upstream, "upstream of {key} is up")
                    }
                    Err(e) => {
                        tracing::warn!(route = %key, upstream = %route.upstream, error = %e, "upstream of {key} is not ready: {e}")
                    }
                }
            }
            all &= ok;
        }
        if stop.fired().is_some() {
            return;
        }
        readiness.set(all);
        if all && !file_written {
            if let Some(path) = &ready_file {
                match std::fs::write(path, b"ready\n") {
                    Ok(()) => file_written = true,
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot write the ready file")
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.recv() => return,
        }
    }
}

//! demo-app: the app of podkit's examples, the seed's frontend and backend in one small binary.
//!
//! - `demo-app backend`: a JSON API under `/api/` (`/api/items`, from `--items-file` or a
//!   built-in list; `/api/hello?name=...`) and `/healthz`.
//! - `demo-app frontend`: an HTML page at `/` built from the backend's `/api/items`, fetched at
//!   `--api` (in the examples, through podproxy: `http://127.0.0.1:8080/api`), and `/healthz`.
//!
//! Every request is logged as one JSON line into `--log-file` (a file on the shared volume that
//! logship tails), and the file is rotated by size: renamed to `<file>.1` once it reaches
//! `--log-max-bytes`, so the examples exercise logship's rotation for real. SIGTERM ends it with
//! a last line and exit 0.

use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use podkit_runtime::cli::{self, EXIT_FAILURE, EXIT_USAGE};

/// The examples' app: the frontend page or the backend API, logging JSON lines to a file.
#[derive(Debug, Parser)]
#[command(name = "demo-app", version = podkit_runtime::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    role: Role,

    /// Where to listen.
    #[arg(
        long,
        env = "DEMO_LISTEN",
        global = true,
        default_value = "127.0.0.1:8000"
    )]
    listen: SocketAddr,

    /// The JSON log file (logship tails it); stdout when not given.
    #[arg(long, env = "DEMO_LOG_FILE", global = true)]
    log_file: Option<PathBuf>,

    /// Rotate the log file (rename to FILE.1) once it is this large.
    #[arg(
        long,
        env = "DEMO_LOG_MAX_BYTES",
        global = true,
        default_value = "1MiB"
    )]
    log_max_bytes: String,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The HTML page at / built from the backend's /api/items.
    Frontend {
        /// The backend API's base URL (through podproxy in the examples).
        #[arg(long, env = "DEMO_API", default_value = "http://127.0.0.1:8080/api")]
        api: String,
    },
    /// The JSON API under /api/.
    Backend {
        /// A JSON array of items served at /api/items (a ConfigMap in the examples).
        #[arg(long, env = "DEMO_ITEMS_FILE")]
        items_file: Option<PathBuf>,
    },
}

/// The JSON log, rotated by size.
struct Log {
    path: Option<PathBuf>,
    file: Option<File>,
    written: u64,
    max: u64,
    service: &'static str,
}

impl Log {
    fn open(path: Option<PathBuf>, max: u64, service: &'static str) -> Result<Log, String> {
        let mut log = Log {
            path,
            file: None,
            written: 0,
            max,
            service,
        };
        log.reopen()?;
        Ok(log)
    }

    fn reopen(&mut self) -> Result<(), String> {
        if let Some(path) = &self.path {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
            self.written = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(file);
        }
        Ok(())
    }

    fn line(&mut self, mut record: serde_json::Value) {
        if let Some(map) = record.as_object_mut() {
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            map.insert("time".into(), now.into());
            map.insert("service".into(), self.service.into());
        }
        let mut text = record.to_string();
        text.push('\n');
        match &mut self.file {
            None => {
                let _ = std::io::stdout().write_all(text.as_bytes());
            }
            Some(f) => {
                if let Err(e) = f.write_all(text.as_bytes()) {
                    eprintln!("demo-app: writing the log failed: {e}");
                }
                self.written += text.len() as u64;
                if self.written >= self.max {
                    self.rotate();
                }
            }
        }
    }

    fn rotate(&mut self) {
        let Some(path) = &self.path else { return };
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        if let Err(e) = std::fs::rename(path, &rotated) {
            eprintln!("demo-app: rotating {} failed: {e}", path.display());
        }
        if let Err(e) = self.reopen() {
            eprintln!("demo-app: {e}");
        }
    }
}

struct App {
    role: Role,
    log: Mutex<Log>,
    items: serde_json::Value,
    client: Client<HttpConnector, Full<Bytes>>,
}

fn main() -> ExitCode {
    match start() {
        Ok(code) | Err(code) => code,
    }
}

fn start() -> Result<ExitCode, ExitCode> {
    let cli: Cli = cli::parse("demo-app")?;
    let max = cli::validated(
        "demo-app",
        podkit_runtime::parse_size(&cli.log_max_bytes)
            .map_err(|e| format!("--log-max-bytes: {e}"))
            .and_then(|n| {
                if n < 1024 {
                    Err("--log-max-bytes must be at least 1KiB".to_string())
                } else {
                    Ok(n)
                }
            }),
    )?;
    let service = match cli.role {
        Role::Frontend { .. } => "frontend",
        Role::Backend { .. } => "backend",
    };
    let items = match &cli.role {
        Role::Backend {
            items_file: Some(path),
        } => {
            let text = cli::validated(
                "demo-app",
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--items-file {}: {e}", path.display())),
            )?;
            cli::validated(
                "demo-app",
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| format!("--items-file {}: not JSON ({e})", path.display())),
            )?
        }
        _ => serde_json::json!(["apple", "pear", "plum"]),
    };
    if let Role::Frontend { api } = &cli.role {
        cli::validated(
            "demo-app",
            format!("{}/items", api.trim_end_matches('/'))
                .parse::<http::Uri>()
                .map_err(|e| format!("--api {api:?}: not a URL ({e})")),
        )?;
    }
    let log = cli::validated("demo-app", Log::open(cli.log_file.clone(), max, service))?;
    let runtime = cli::runtime("demo-app", None)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cli.listen).await.map_err(|e| {
            eprintln!("demo-app: --listen {}: {e}; pick a free port", cli.listen);
            ExitCode::from(EXIT_USAGE)
        })?;
        let mut shutdown = podkit_runtime::Shutdown::from_signals()
            .map(|(s, _)| s)
            .map_err(|e| {
                eprintln!("demo-app: cannot install signal handlers: {e}");
                ExitCode::from(EXIT_FAILURE)
            })?;
        let app = Arc::new(App {
            role: cli.role,
            log: Mutex::new(log),
            items,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(2))
                .build(HttpConnector::new()),
        });
        app.log(serde_json::json!({"level": "info", "msg": "listening", "listen": cli.listen.to_string()}));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let app = Arc::clone(&app);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let app = Arc::clone(&app);
                            async move { Ok::<_, Infallible>(app.handle(req).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = shutdown.recv() => break,
            }
        }
        app.log(serde_json::json!({"level": "info", "msg": "stopping on SIGTERM"}));
        Ok(ExitCode::SUCCESS)
    })
}

impl App {
    fn log(&self, record: serde_json::Value) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .line(record);
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let start = Instant::now();
        let path = req.uri().path().to_string();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let resp = match (&self.role, path.as_str()) {
            (_, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
            (Role::Backend { .. }, "/api/items") => text(
                StatusCode::OK,
                "application/json",
                serde_json::json!({ "items": self.items }).to_string(),
            ),
            (Role::Backend { .. }, "/api/hello") => {
                let name = req
                    .uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
                    .unwrap_or("world");
                text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({ "hello": name }).to_string(),
                )
            }
            (Role::Frontend { api }, "/") => self.page(api, &request_id).await,
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        };
        self.log(serde_json::json!({
            "level": if resp.status().is_server_error() { "error" } else { "info" },
            "msg": "request",
            "method": req.method().as_str(),
            "path": path,
            "status": resp.status().as_u16(),
            "duration_ms": start.elapsed().as_secs_f64() * 1000.0,
            "request_id": request_id,
        }));
        resp
    }

    /// The frontend's page: the backend's items, or why there are none.
    async fn page(&self, api: &str, request_id: &str) -> Response<Full<Bytes>> {
        let url = format!("{}/items", api.trim_end_matches('/'));
        let fetched = async {
            let mut req = Request::get(&url)
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            if request_id != "-" {
                if let Ok(v) = http::HeaderValue::from_str(request_id) {
                    req.headers_mut().insert("x-request-id", v);
                }
            }
            let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
                .await
                .map_err(|_| "the backend did not answer within 5s".to_string())?
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("the backend answered {status}"));
            }
            serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())
        };
        match fetched.await {
            Ok(v) => {
                let items: Vec<String> = v["items"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|i| {
                                format!("<li>{}</li>", escape(i.as_str().unwrap_or(&i.to_string())))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                text(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    format!(
                        "<!doctype html><title>podkit demo</title><h1>podkit demo</h1>\n<p>items from the backend ({}):</p><ul>{}</ul>\n",
                        escape(&url),
                        items.join("")
                    ),
                )
            }
            Err(e) => {
                self.log(serde_json::json!({"level": "error", "msg": "backend call failed", "url": url, "error": e}));
                text(
                    StatusCode::BAD_GATEWAY,
                    "text/html; charset=utf-8",
                    format!(
                        "<!doctype html><title>podkit demo</title><p>the backend at {} failed: {}</p>\n",
                        escape(&url),
                        escape(&e)
                    ),
                )
            }
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

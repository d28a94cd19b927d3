//! logship's network sinks, each against a receiver on loopback: the test receiver (a real HTTP
//! server answering in each API's documented shapes) for HTTP NDJSON, Loki, Elasticsearch and
//! OTLP, whose protobuf bodies are decoded with the official definitions (opentelemetry-proto),
//! and a real rsyslog for syslog over TCP, TLS and UDP. Every sink runs beside the file sink, so
//! fan-out is exercised too.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::receiver::{accepted, ndjson_messages, Receiver, Reply};
use support::*;

/// `count` sequence-numbered lines from `from`, about 60 bytes each.
fn seq_lines(from: u64, count: u64) -> String {
    (from..from + count)
        .map(|i| format!("seq {i:06} ..............................................\n"))
        .collect()
}

/// The sequence numbers in `messages`, with how often each came.
fn seq_counts(messages: &[String]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        if let Some(n) = m
            .strip_prefix("seq ")
            .and_then(|r| r.get(..6))
            .and_then(|n| n.parse::<u64>().ok())
        {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    counts
}

/// Every number from `from` to `to` came at least once.
fn all_arrived(messages: &[String], from: u64, to: u64) -> bool {
    let counts = seq_counts(messages);
    (from..=to).all(|i| counts.contains_key(&i))
}

/// logship tailing `s`'s logs to its file sink and to `sink`, with quick retries and batches.
fn logship_to(s: &Scene, sink: &str, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "--path".to_string(),
        s.glob("*.log"),
        "--sink".into(),
        sink.into(),
        "--retry-backoff".into(),
        "50ms".into(),
        "--retry-max-backoff".into(),
        "400ms".into(),
        "--batch-timeout".into(),
        "100ms".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    s.logship(&refs)
}

fn metrics(admin: u16) -> String {
    http_get(admin, "/metrics").unwrap_or_default()
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn ready(admin: u16) -> Option<bool> {
    let answer = http_get(admin, "/readyz")?;
    Some(answer.starts_with("HTTP/1.1 200"))
}

#[test]
fn ndjson_over_http_with_gzip_a_rotating_bearer_token_and_headers() {
    let s = Scene::new();
    let rx = Receiver::start(|_| Reply::status(200));
    // A Secret volume: token -> ..data/token, ..data -> ..v1; an update swaps ..data.
    let secret = s.dir.path().join("secret");
    std::fs::create_dir_all(secret.join("..v1")).expect("secret dir");
    std::fs::write(secret.join("..v1/token"), "token-one\n").expect("token");
    std::os::unix::fs::symlink("..v1", secret.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/token", secret.join("token")).expect("link");
    let token = secret.join("token");
    append(&s.log("app.log"), &seq_lines(1, 500));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/ingest"),
        &[
            "--bearer-token-file",
            token.to_str().expect("utf-8"),
            "--header",
            "X-Team: logs",
            "--batch-max-lines",
            "100",
            "--label",
            "app=shop",
        ],
    ));
    eventually("500 lines at the receiver", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), ndjson_messages), 1, 500).then_some(())
    });
    for r in rx.requests() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/ingest");
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("authorization"), Some("Bearer token-one"));
        assert_eq!(r.header("x-team"), Some("logs"));
        assert!(
            r.wire_len * 3 < r.body.len(),
            "gzip shrinks {} to {}",
            r.body.len(),
            r.wire_len
        );
    }
    let first: serde_json::Value = serde_json::from_slice(
        rx.requests()[0]
            .body
            .split(|b| *b == b'\n')
            .next()
            .expect("a line"),
    )
    .expect("a JSON record");
    assert_eq!(first["labels"]["app"], "shop");
    assert!(first["file"].as_str().expect("file").ends_with("/app.log"));
    assert!(first["timestamp"]
        .as_str()
        .expect("timestamp")
        .contains('T'));

    // The Secret is updated: new directory, ..data swapped atomically.
    std::fs::create_dir_all(secret.join("..v2")).expect("secret dir");
    std::fs::write(secret.join("..v2/token"), "token-two\n").expect("token");
    std::os::unix::fs::symlink("..v2", secret.join("..data_tmp")).expect("link");
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).expect("swap");
    append(&s.log("app.log"), &seq_lines(501, 100));
    eventually("600 lines at the receiver", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), ndjson_messages), 1, 600).then_some(())
    });
    let last = rx.requests().pop().expect("a request");
    assert_eq!(last.header("authorization"), Some("Bearer token-two"));
    g.signal("TERM");
    let (code, _, _) = g.finish(LIMIT);
    assert_eq!(code, Some(0), "{}", s.stderr());
    // Nothing failed, so nothing was sent twice.
    let counts = seq_counts(&accepted(&rx.requests(), ndjson_messages));
    assert_eq!(counts.len(), 600);
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    assert!(
        s.stderr().contains("using the new credentials"),
        "{}",
        s.stderr()
    );
}

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, as PEM files
/// in `dir`; returns the server's rustls config, which requires a client certificate.
fn pki(dir: &Path) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params = CertificateParams::new(vec!["logship".to_string()]).expect("params");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params
        .signed_by(&client_key, &ca, &ca_key)
        .expect("client cert");
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("server.pem", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("client.pem", client.pem()),
        ("client.key", client_key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).expect("write pem");
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("server config")
}

#[test]
fn https_with_mutual_tls_basic_auth_and_no_compression() {
    let s = Scene::new();
    let config = pki(s.dir.path());
    let rx = Receiver::start_tls(config, |_| Reply::status(200));
    let auth = s.dir.path().join("basic");
    std::fs::write(&auth, "shipper:s3cret\n").expect("auth");
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    append(&s.log("app.log"), &seq_lines(1, 200));
    let url = format!("https://localhost:{}/ingest", rx.addr.port());
    let g = Guard::spawn(&mut logship_to(
        &s,
        &url,
        &[
            "--ca-file",
            &p("ca.pem"),
            "--client-cert",
            &p("client.pem"),
            "--client-key",
            &p("client.key"),
            "--basic-auth-file",
            &p("basic"),
            "--compression",
            "none",
        ],
    ));
    eventually("200 lines over mTLS", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), ndjson_messages), 1, 200).then_some(())
    });
    for r in rx.requests() {
        // base64("shipper:s3cret")
        assert_eq!(
            r.header("authorization"),
            Some("Basic c2hpcHBlcjpzM2NyZXQ=")
        );
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.wire_len, r.body.len());
    }
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());

    // Without the client certificate the receiver refuses the handshake: nothing is delivered,
    // logship keeps retrying and says why.
    let s2 = Scene::new();
    append(&s2.log("app.log"), &seq_lines(1, 10));
    let before = rx.requests().len();
    let g = Guard::spawn(&mut logship_to(
        &s2,
        &url,
        &["--ca-file", &p("ca.pem"), "--drain-timeout", "1s"],
    ));
    eventually("a TLS failure in the log", LIMIT, || {
        s2.stderr().contains("trying again").then_some(())
    });
    assert_eq!(rx.requests().len(), before);
    g.signal("TERM");
    let (code, _, _) = g.finish(LIMIT);
    // The drain cannot finish while the sink is down: exit 1, and the saved position of the
    // file is still 0, so a restart ships every line again.
    assert_eq!(code, Some(1), "{}", s2.stderr());
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s2.logs().join(".logship/checkpoints.json")).expect("checkpoints"),
    )
    .expect("JSON");
    let files = saved["files"].as_array().expect("files");
    assert!(!files.is_empty(), "{saved}");
    assert!(files.iter().all(|f| f["offset"] == 0), "{saved}");
}

#[test]
fn a_receiver_down_at_start_failing_down_again_and_slow_gets_every_line() {
    let s = Scene::new();
    let mut rx = Receiver::down(|_| Reply::status(200));
    append(&s.log("app.log"), &seq_lines(1, 1000));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &[
            "--admin",
            "127.0.0.1:0",
            "--batch-max-lines",
            "100",
            "--request-timeout",
            "1s",
        ],
    ));
    let admin = s.admin_port();
    // Down at start: not ready, connection failures counted.
    eventually("connect failures while the receiver is down", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_sink_failures_total", &["reason=\"connect\""]) >= 2.0
            && ready(admin) == Some(false))
        .then_some(())
    });

    // Up, but answering 500, then 429 with Retry-After, then 200.
    rx.script([
        Reply::status(500),
        Reply::status(429).header("Retry-After", "1"),
    ]);
    rx.resume();
    eventually("1000 lines after the receiver came up", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), ndjson_messages), 1, 1000).then_some(())
    });
    eventually("ready once the receiver answers", LIMIT, || {
        (ready(admin) == Some(true)).then_some(())
    });
    let reqs = rx.requests();
    assert_eq!(reqs[0].status, 500);
    assert_eq!(reqs[1].status, 429);
    // The batch that got 429 came again no sooner than Retry-After asked.
    let again = reqs[2..]
        .iter()
        .find(|r| r.body == reqs[1].body)
        .expect("the 429 batch sent again");
    let waited = again.at - reqs[1].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );

    // Down mid-stream.
    rx.stop();
    append(&s.log("app.log"), &seq_lines(1001, 1000));
    eventually("not ready while the receiver is down", LIMIT, || {
        (ready(admin) == Some(false)).then_some(())
    });
    // Back, slow: one answer slower than --request-timeout (a timeout, sent again), then 300ms each.
    rx.script([Reply::status(200).delay(Duration::from_millis(1500))]);
    rx.set_reply(|_| Reply::status(200).delay(Duration::from_millis(300)));
    rx.resume();
    eventually("2000 lines after the second outage", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), ndjson_messages), 1, 2000).then_some(())
    });
    let m = eventually("every line acknowledged", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_shipped_lines_total", &[]) >= 2000.0).then_some(m)
    });
    for reason in ["connect", "status_5xx", "status_429", "timeout"] {
        let label = format!("reason=\"{reason}\"");
        assert!(
            sample(&m, "logship_sink_failures_total", &[&label]) >= 1.0,
            "{reason}: {m}"
        );
    }
    assert!(sample(&m, "logship_sink_retries_total", &[]) >= 4.0, "{m}");
    assert_eq!(sample(&m, "logship_sink_up", &[]), 1.0, "{m}");
    assert!(
        sample(&m, "logship_sink_last_success_timestamp_seconds", &[]) > 1.0e9,
        "{m}"
    );
    assert!(
        sample(&m, "logship_sink_sent_bytes_total", &[]) > 0.0,
        "{m}"
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn while_a_sink_is_down_reading_pauses_memory_stays_flat_and_a_rotated_file_is_not_lost() {
    let s = Scene::new();
    let mut rx = Receiver::down(|_| Reply::status(204));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &["--admin", "127.0.0.1:0", "--compression", "none"],
    ));
    let admin = s.admin_port();
    // 24 MiB of 200-byte lines while the receiver is down.
    let pad = ".".repeat(188);
    let mut chunk = String::new();
    for i in 1..=120_000u64 {
        chunk.push_str(&format!("seq {i:06} {pad}\n"));
        if i % 10_000 == 0 {
            append(&s.log("app.log"), &chunk);
            chunk.clear();
        }
    }
    // Reading stops at the in-flight bound: 4 queued + 4 in flight + 2 at the edges, 1 MiB each.
    let last = std::cell::RefCell::new(String::new());
    let read = eventually_or(
        "reading to pause",
        LIMIT,
        || {
            let a = sample(&metrics(admin), "logship_read_bytes_total", &[]);
            let same = (0..3).all(|_| {
                std::thread::sleep(Duration::from_millis(400));
                sample(&metrics(admin), "logship_read_bytes_total", &[]) == a
            });
            let m = metrics(admin);
            // Paused because the sink holds its bound, not because the reader is slow.
            let full = sample(&m, "logship_sink_in_flight_batches", &[]) >= 4.0;
            *last.borrow_mut() = m;
            (a > 0.0 && same && full).then_some(a)
        },
        || {
            let m = last.borrow();
            let shown: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("logship_read_bytes") || l.starts_with("logship_sink_"))
                .collect();
            let stderr = s.stderr();
            let lines: Vec<&str> = stderr.lines().collect();
            format!(
                "last metrics:\n{}\nlogship's stderr, its last 40 lines:\n{}",
                shown.join("\n"),
                lines[lines.len().saturating_sub(40)..].join("\n")
            )
        },
    );
    assert!(
        read < 14.0 * 1024.0 * 1024.0,
        "read {read} bytes while the sink was down"
    );
    // The file is rotated away (renamed out of the glob) while the sink is still down, and a
    // new one takes its place: the rotated file's unread part is still shipped.
    std::fs::rename(s.log("app.log"), s.logs().join("app.log.1")).expect("rotate");
    let more: String = (120_001..=130_000u64)
        .map(|i| format!("seq {i:06} {pad}\n"))
        .collect();
    append(&s.log("app.log"), &more);
    std::thread::sleep(Duration::from_secs(1));
    let rss_down = peak_rss_kib(g.0.id()).expect("rss");
    rx.resume();
    eventually(
        "130 000 lines once the receiver is up",
        Duration::from_secs(120),
        || all_arrived(&accepted(&rx.requests(), ndjson_messages), 1, 130_000).then_some(()),
    );
    let rss = peak_rss_kib(g.0.id()).expect("rss");
    assert!(rss_down < 64 * 1024, "peak RSS {rss_down} KiB while down");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn batches_keep_their_line_and_byte_bounds_and_a_quiet_file_is_sent_at_the_timeout() {
    let s = Scene::new();
    let rx = Receiver::start(|_| Reply::status(200));
    // Long lines (58-byte messages) meet the byte bound first, short ones (12 bytes) the line
    // bound.
    append(&s.log("app.log"), &seq_lines(1, 400));
    let short: String = (401..=800).map(|i| format!("seq {i:06} x\n")).collect();
    append(&s.log("app.log"), &short);
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &[
            "--batch-max-lines",
            "20",
            "--batch-max-bytes",
            "1000",
            "--compression",
            "none",
        ],
    ));
    let all = |rx: &Receiver| accepted(&rx.requests(), ndjson_messages);
    eventually("800 lines delivered", LIMIT, || {
        all_arrived(&all(&rx), 1, 800).then_some(())
    });
    let batches: Vec<Vec<String>> = rx
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| ndjson_messages(&r.body))
        .collect();
    for b in &batches {
        let bytes: usize = b.iter().map(String::len).sum();
        assert!(b.len() <= 20, "a batch of {} lines", b.len());
        assert!(bytes <= 1000, "a batch of {bytes} message bytes");
    }
    let most_lines = batches.iter().map(Vec::len).max().unwrap_or(0);
    let most_bytes = batches
        .iter()
        .map(|b| b.iter().map(String::len).sum::<usize>())
        .max()
        .unwrap_or(0);
    assert_eq!(most_lines, 20, "the line bound was never reached");
    assert!(
        most_bytes > 1000 - 58,
        "the byte bound was never reached: {most_bytes}"
    );
    // Three more lines and then quiet: only the batch timeout can send them, as one batch.
    let before = rx.requests().len();
    append(&s.log("app.log"), &seq_lines(801, 3));
    eventually("the last 3 lines delivered", LIMIT, || {
        all_arrived(&all(&rx), 801, 803).then_some(())
    });
    let late: Vec<Vec<String>> = rx.requests()[before..]
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| ndjson_messages(&r.body))
        .collect();
    assert_eq!(
        late.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3],
        "{late:?}"
    );
    let counts = seq_counts(&all(&rx));
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn a_refused_batch_goes_to_the_dead_letter_file_and_shipping_goes_on() {
    let s = Scene::new();
    let rx = Receiver::start(|_| Reply::status(200));
    rx.script([Reply::status(400).body("{\"error\":\"entry too old\"}")]);
    let dead = s.dir.path().join("dead.ndjson");
    append(&s.log("app.log"), &seq_lines(1, 30));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &[
            "--batch-max-lines",
            "10",
            "--dead-letter-file",
            dead.to_str().expect("utf-8"),
            "--admin",
            "127.0.0.1:0",
        ],
    ));
    let admin = s.admin_port();
    let m = eventually("30 lines acknowledged", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_shipped_lines_total", &[]) >= 30.0).then_some(m)
    });
    assert_eq!(
        sample(&m, "logship_sink_events_rejected_total", &[]),
        10.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "logship_sink_failures_total", &["reason=\"rejected\""]),
        1.0,
        "{m}"
    );
    let delivered = accepted(&rx.requests(), ndjson_messages);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .expect("dead letters")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(dead.len(), 10);
    assert!(dead.iter().all(|d| d["status"] == 400
        && d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("entry too old"))));
    let dead_msgs: Vec<String> = dead
        .iter()
        .map(|d| d["event"]["message"].as_str().expect("message").to_string())
        .collect();
    let mut all = delivered.clone();
    all.extend(dead_msgs);
    let counts = seq_counts(&all);
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(
        s.stderr().contains("refused 10 events with 400"),
        "{}",
        s.stderr()
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

/// A receiver that refuses bodies over its size limit with 413 (as nginx's
/// client_max_body_size, Loki's and Elasticsearch's limits do): the batch is sent again in
/// halves until each fits, and only an event too large on its own is refused.
#[test]
fn a_batch_too_large_for_the_receiver_is_sent_in_halves() {
    let s = Scene::new();
    let rx = Receiver::start(|r| {
        if ndjson_messages(&r.body).len() > 8 || r.body.len() > 4000 {
            Reply::status(413).body("request entity too large")
        } else {
            Reply::status(200)
        }
    });
    let dead = s.dir.path().join("dead.ndjson");
    let huge = format!("seq 000051 {}\n", "y".repeat(5000));
    append(&s.log("app.log"), &(seq_lines(1, 50) + &huge));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &[
            "--batch-max-lines",
            "100",
            "--dead-letter-file",
            dead.to_str().expect("utf-8"),
            "--admin",
            "127.0.0.1:0",
        ],
    ));
    let admin = s.admin_port();
    let m = eventually("51 lines acknowledged", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_shipped_lines_total", &[]) >= 51.0).then_some(m)
    });
    let counts = seq_counts(&accepted(&rx.requests(), ndjson_messages));
    assert_eq!(counts.len(), 50, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(!counts.contains_key(&51));
    assert_eq!(
        sample(&m, "logship_sink_events_rejected_total", &[]),
        1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "logship_sink_failures_total",
            &["reason=\"status_413_split\""]
        ) >= 3.0,
        "{m}"
    );
    let dead = std::fs::read_to_string(&dead).expect("dead letters");
    assert_eq!(dead.lines().count(), 1);
    assert!(
        dead.contains("seq 000051 yyy") && dead.contains("\"status\":413"),
        "{dead}"
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

/// 401 and 403 are retried, not dropped: a token rotated on the receiver a moment before the
/// token file is updated, or an Elasticsearch index blocked for a full disk, loses nothing.
/// Waits until the 20 lines of a retry test are acknowledged; then checks each arrived, none
/// was rejected, and `failures` attempts failed for `reason`.
fn shipped_20_after_retries(admin: u16, rx: &Receiver, reason: &str, failures: f64) {
    let m = eventually("20 lines acknowledged", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_shipped_lines_total", &[]) >= 20.0).then_some(m)
    });
    let counts = seq_counts(&accepted(&rx.requests(), ndjson_messages));
    assert_eq!(counts.len(), 20, "{counts:?}");
    assert_eq!(
        sample(&m, "logship_sink_events_rejected_total", &[]),
        0.0,
        "{m}"
    );
    let label = format!("reason=\"{reason}\"");
    assert_eq!(
        sample(&m, "logship_sink_failures_total", &[label.as_str()]),
        failures,
        "{m}"
    );
}

#[test]
fn unauthorized_and_forbidden_are_retried_until_taken() {
    let s = Scene::new();
    let rx = Receiver::start(|_| Reply::status(200));
    rx.script([
        Reply::status(401).body("invalid token"),
        Reply::status(403).body("cluster_block_exception"),
    ]);
    append(&s.log("app.log"), &seq_lines(1, 20));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &["--admin", "127.0.0.1:0"],
    ));
    let admin = s.admin_port();
    shipped_20_after_retries(admin, &rx, "status_401_403", 2.0);
    assert!(
        s.stderr().contains("answered 401; check the credentials"),
        "{}",
        s.stderr()
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn a_status_outside_100_to_599_is_retried_not_refused() {
    // RFC 9110 section 15 makes such a status invalid: its meaning is unknown (a broken
    // receiver, or a broken proxy in front of it), so the batch is kept and sent again, never
    // refused to the dead-letter file as a 4xx would be.
    let s = Scene::new();
    let rx = Receiver::start(|_| Reply::status(200));
    rx.script([Reply::status(999), Reply::status(600)]);
    let dead = s.dir.path().join("dead.ndjson");
    append(&s.log("app.log"), &seq_lines(1, 20));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("http", "/"),
        &[
            "--admin",
            "127.0.0.1:0",
            "--dead-letter-file",
            dead.to_str().expect("utf-8"),
        ],
    ));
    let admin = s.admin_port();
    shipped_20_after_retries(admin, &rx, "invalid_status", 2.0);
    assert_eq!(
        rx.requests()
            .iter()
            .map(|r| r.status)
            .take(3)
            .collect::<Vec<_>>(),
        [999, 600, 200]
    );
    let dead = std::fs::read_to_string(&dead).unwrap_or_default();
    assert!(dead.is_empty(), "dead-lettered: {dead}");
    assert!(
        s.stderr()
            .contains("answered 999, a status outside 100-599"),
        "{}",
        s.stderr()
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn loki_push_groups_by_label_set_with_the_tenant_header() {
    let s = Scene::new();
    let rx = Receiver::start(|_| Reply::status(204));
    // The same line five times in one write: Loki would drop an entry with the same stream,
    // timestamp and line, so each needs its own timestamp.
    append(&s.log("app.log"), &"}\n".repeat(5));
    append(&s.log("app.log"), &seq_lines(1, 300));
    let start = batch_now();
    let mut cmd = logship_to(
        &s,
        &rx.url("loki", ""),
        &["--loki-tenant", "team-a", "--label", "app=shop"],
    );
    cmd.env("POD_NAME", "web-1").env("POD_NAMESPACE", "prod");
    let g = Guard::spawn(&mut cmd);
    let parse = |body: &[u8]| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
        v["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .flat_map(|st| st["values"].as_array().expect("values").clone())
            .map(|pair| pair[1].as_str().expect("line").to_string())
            .collect()
    };
    eventually("300 lines at Loki", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), parse), 1, 300).then_some(())
    });
    for r in rx.requests() {
        assert_eq!(r.path, "/loki/api/v1/push");
        assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        let streams = v["streams"].as_array().expect("streams");
        assert_eq!(streams.len(), 1);
        assert_eq!(
            streams[0]["stream"],
            serde_json::json!({"app": "shop", "pod": "web-1", "namespace": "prod"})
        );
        for pair in streams[0]["values"].as_array().expect("values") {
            let ns: i128 = pair[0]
                .as_str()
                .expect("the timestamp is a string")
                .parse()
                .expect("nanoseconds");
            assert!(ns >= start && ns <= batch_now(), "{ns}");
        }
    }
    let mut stamps = HashSet::new();
    let mut braces = 0;
    for r in rx.requests() {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        for pair in v["streams"][0]["values"].as_array().expect("values") {
            assert!(
                stamps.insert(pair[0].as_str().expect("ts").to_string()),
                "{pair}"
            );
            braces += usize::from(pair[1] == "}");
        }
    }
    assert_eq!(braces, 5);
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());

    // A label Loki cannot take is refused at start, with the fix.
    let out = logship_to(
        &s,
        &rx.url("loki", ""),
        &["--label", "app.kubernetes.io/name=x"],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        s.stderr().contains("app_kubernetes_io_name"),
        "{}",
        s.stderr()
    );
}

fn batch_now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

#[test]
fn elasticsearch_retries_only_the_items_that_failed_for_now() {
    let s = Scene::new();
    let dead = s.dir.path().join("dead.ndjson");
    // Items ending in 3 are refused with 429 and those ending in 5 with 503 the first time they
    // come; items ending in 7 always fail mapping (400). Everything else is created.
    let seen = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let created = Arc::new(Mutex::new(Vec::<String>::new()));
    let (seen2, created2) = (Arc::clone(&seen), Arc::clone(&created));
    let rx = Receiver::start(move |r| {
        let lines: Vec<&[u8]> = r
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut items = Vec::new();
        let mut errors = false;
        for pair in lines.chunks(2) {
            let action: serde_json::Value = serde_json::from_slice(pair[0]).expect("action");
            assert_eq!(
                action,
                serde_json::json!({"create": {"_index": "logs-app-default"}})
            );
            let doc: serde_json::Value = serde_json::from_slice(pair[1]).expect("document");
            let msg = doc["message"].as_str().expect("message").to_string();
            assert!(doc["@timestamp"].is_string());
            assert!(doc["log"]["file"]["path"]
                .as_str()
                .expect("path")
                .ends_with("app.log"));
            let n = seq_counts(std::slice::from_ref(&msg))
                .into_keys()
                .next()
                .expect("seq");
            let item = if n % 10 == 7 {
                errors = true;
                serde_json::json!({"create": {"_index": "logs-app-default", "status": 400,
                    "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [x]"}}})
            } else if n % 10 == 3 && seen2.lock().expect("lock").insert(n) {
                errors = true;
                serde_json::json!({"create": {"_index": "logs-app-default", "status": 429,
                    "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}})
            } else if n % 10 == 5 && seen2.lock().expect("lock").insert(n) {
                errors = true;
                serde_json::json!({"create": {"_index": "logs-app-default", "status": 503,
                    "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}})
            } else {
                created2.lock().expect("lock").push(msg);
                serde_json::json!({"create": {"_index": "logs-app-default", "status": 201, "result": "created"}})
            };
            items.push(item);
        }
        let body = serde_json::json!({"took": 2, "errors": errors, "items": items});
        Reply::status(200)
            .header("content-type", "application/json")
            .body(body.to_string())
    });
    append(&s.log("app.log"), &seq_lines(1, 100));
    let g = Guard::spawn(&mut logship_to(
        &s,
        &rx.url("elasticsearch", "/logs-app-default"),
        &[
            "--batch-max-lines",
            "25",
            "--dead-letter-file",
            dead.to_str().expect("utf-8"),
            "--admin",
            "127.0.0.1:0",
        ],
    ));
    let admin = s.admin_port();
    let expected: Vec<u64> = (1..=100).filter(|n| n % 10 != 7).collect();
    eventually("every item but the refused ones created", LIMIT, || {
        let counts = seq_counts(&created.lock().expect("lock"));
        (counts.keys().copied().collect::<Vec<_>>() == expected).then_some(())
    });
    // Nothing created twice: only the failed items were sent again.
    let counts = seq_counts(&created.lock().expect("lock"));
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let reqs = rx.requests();
    assert!(reqs
        .iter()
        .all(|r| r.path == "/_bulk" && r.header("content-type") == Some("application/x-ndjson")));
    let retries: Vec<_> = reqs
        .iter()
        .filter(|r| {
            let msgs: Vec<String> = r
                .body
                .split(|b| *b == b'\n')
                .filter(|l| l.starts_with(b"{\"@timestamp"))
                .map(|l| String::from_utf8_lossy(l).to_string())
                .collect();
            !msgs.is_empty() && msgs.iter().all(|m| matches!(seq_of_doc(m) % 10, 3 | 5))
        })
        .collect();
    assert!(
        !retries.is_empty(),
        "retry requests with only the 429 and 503 items"
    );
    eventually("the refused items in the dead-letter file", LIMIT, || {
        let text = std::fs::read_to_string(&dead).ok()?;
        (text.lines().count() == 10).then_some(())
    });
    for line in std::fs::read_to_string(&dead).expect("dead").lines() {
        let d: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(d["status"], 400);
        assert!(d["reason"]
            .as_str()
            .expect("reason")
            .contains("mapper_parsing_exception"));
        let msg = d["event"]["message"].as_str().expect("message").to_string();
        assert_eq!(seq_counts(&[msg]).into_keys().next().expect("seq") % 10, 7);
    }
    // The refused items are counted as rejected, once each.
    let m = eventually("rejected items counted", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_sink_events_rejected_total", &[]) >= 10.0).then_some(m)
    });
    assert_eq!(
        sample(&m, "logship_sink_events_rejected_total", &[]),
        10.0,
        "{m}"
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

fn seq_of_doc(doc: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(doc).expect("document");
    let msg = v["message"].as_str().expect("message").to_string();
    seq_counts(&[msg]).into_keys().next().expect("seq")
}

#[test]
fn otlp_protobuf_decoded_with_the_official_definitions_and_partial_success() {
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    let s = Scene::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = Arc::clone(&calls);
    let rx = Receiver::start(move |_| {
        let partial = calls2.fetch_add(1, Ordering::SeqCst) == 0;
        let resp = ExportLogsServiceResponse {
            partial_success: partial.then(|| ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "2 records over the size limit".into(),
            }),
        };
        Reply::status(200)
            .header("content-type", "application/x-protobuf")
            .body(resp.encode_to_vec())
    });
    append(&s.log("app.log"), &seq_lines(1, 50));
    let mut cmd = logship_to(
        &s,
        &rx.url("otlp", ""),
        &["--batch-max-lines", "10", "--admin", "127.0.0.1:0"],
    );
    cmd.env("POD_NAME", "web-1")
        .env("POD_NAMESPACE", "prod")
        .env("CONTAINER_NAME", "app")
        .env("NODE_NAME", "node-a");
    let g = Guard::spawn(&mut cmd);
    let admin = s.admin_port();
    let decode = |body: &[u8]| -> Vec<String> {
        let req = ExportLogsServiceRequest::decode(body).expect("an ExportLogsServiceRequest");
        req.resource_logs
            .iter()
            .flat_map(|rl| rl.scope_logs.iter())
            .flat_map(|sl| sl.log_records.iter())
            .map(
                |rec| match rec.body.as_ref().and_then(|b| b.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => panic!("a string body, not {other:?}"),
                },
            )
            .collect()
    };
    eventually("50 records", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), decode), 1, 50).then_some(())
    });
    for r in rx.requests() {
        assert_eq!(r.path, "/v1/logs");
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        let req = ExportLogsServiceRequest::decode(r.body.as_slice()).expect("decodes");
        let rl = &req.resource_logs[0];
        let attrs: BTreeMap<String, String> = rl
            .resource
            .as_ref()
            .expect("resource")
            .attributes
            .iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                };
                (kv.key.clone(), v)
            })
            .collect();
        for (k, v) in [
            ("k8s.pod.name", "web-1"),
            ("k8s.namespace.name", "prod"),
            ("k8s.container.name", "app"),
            ("k8s.node.name", "node-a"),
        ] {
            assert_eq!(attrs.get(k).map(String::as_str), Some(v), "{attrs:?}");
        }
        let sl = &rl.scope_logs[0];
        assert_eq!(sl.scope.as_ref().expect("scope").name, "logship");
        for rec in &sl.log_records {
            assert!(rec.observed_time_unix_nano > 0);
            let path = rec
                .attributes
                .iter()
                .find(|kv| kv.key == "log.file.path")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref());
            assert!(
                matches!(path, Some(Value::StringValue(p)) if p.ends_with("/app.log")),
                "{path:?}"
            );
        }
    }
    // Partial success is not retried: every record was sent once.
    let counts = seq_counts(&accepted(&rx.requests(), decode));
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let m = eventually("the rejected records counted", LIMIT, || {
        let m = metrics(admin);
        (sample(&m, "logship_shipped_lines_total", &[]) >= 50.0).then_some(m)
    });
    assert_eq!(
        sample(&m, "logship_sink_events_rejected_total", &[]),
        2.0,
        "{m}"
    );
    assert!(
        s.stderr().contains("2 records over the size limit"),
        "{}",
        s.stderr()
    );
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());

    // OTLP/JSON: the same request in the protobuf JSON mapping.
    let s = Scene::new();
    let rx = Receiver::start(|_| {
        Reply::status(200)
            .header("content-type", "application/json")
            .body("{}")
    });
    // The first answer: a partial success in OTLP/JSON, its int64 count as a string.
    rx.script([Reply::status(200)
        .header("content-type", "application/json")
        .body(r#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"3 too old"}}"#)]);
    append(&s.log("app.log"), &seq_lines(1, 20));
    let mut cmd = logship_to(&s, &rx.url("otlp", ""), &["--otlp-encoding", "json"]);
    cmd.env("POD_NAME", "web-1");
    let g = Guard::spawn(&mut cmd);
    let parse = |body: &[u8]| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).expect("JSON");
        v["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .expect("logRecords")
            .iter()
            .map(|r| r["body"]["stringValue"].as_str().expect("body").to_string())
            .collect()
    };
    eventually("20 records as JSON", LIMIT, || {
        all_arrived(&accepted(&rx.requests(), parse), 1, 20).then_some(())
    });
    let r = &rx.requests()[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    let attr = &v["resourceLogs"][0]["resource"]["attributes"][0];
    assert_eq!(attr["key"], "k8s.pod.name");
    assert_eq!(attr["value"]["stringValue"], "web-1");
    let rec = &v["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
    assert!(rec["observedTimeUnixNano"]
        .as_str()
        .is_some_and(|t| t.parse::<u64>().is_ok()));
    eventually("the JSON partial success logged", LIMIT, || {
        s.stderr().contains("dropped 3 of").then_some(())
    });
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

/// A real rsyslog (Debian's) on loopback, writing what it receives through the RFC 5424 fields
/// to `<dir>/<input>.out`, one line per message (control characters escaped, newline as #012).
struct Rsyslog {
    guard: Option<Guard>,
    dir: std::path::PathBuf,
    conf: std::path::PathBuf,
}

impl Rsyslog {
    /// `inputs` is the rsyslog configuration of the inputs (module loads and input() lines).
    fn start(dir: &Path, globals: &str, inputs: &str, tcp_port: u16) -> Rsyslog {
        std::fs::create_dir_all(dir).expect("rsyslog dir");
        let d = dir.display();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{d}" {globals})
{inputs}
template(name="fields" type="string"
  string="%PRI%|%TIMESTAMP:::date-rfc3339%|%HOSTNAME%|%APP-NAME%|%STRUCTURED-DATA%|%msg%\n")
if $inputname == "imtcp" then {{ action(type="omfile" file="{d}/tcp.out" template="fields") stop }}
if $inputname == "imudp" then {{ action(type="omfile" file="{d}/udp.out" template="fields") stop }}
"#
            ),
        )
        .expect("rsyslog.conf");
        let mut r = Rsyslog {
            guard: None,
            dir: dir.to_path_buf(),
            conf,
        };
        r.resume(tcp_port);
        r
    }

    fn resume(&mut self, tcp_port: u16) {
        let mut cmd = std::process::Command::new("/usr/sbin/rsyslogd");
        cmd.arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        self.guard = Some(Guard::spawn(&mut cmd));
        eventually("rsyslog listening", LIMIT, || {
            std::net::TcpStream::connect(("127.0.0.1", tcp_port)).ok()
        });
    }

    fn stop(&mut self) {
        if let Some(g) = self.guard.take() {
            g.signal("TERM");
            g.finish(LIMIT);
        }
    }

    /// The messages received on `input` (tcp or udp), as `|`-separated fields.
    fn received(&self, input: &str) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.dir.join(format!("{input}.out")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.splitn(6, '|').map(str::to_string).collect())
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The seq messages among rsyslog's records (field 5 is the message).
fn syslog_messages(records: &[Vec<String>]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| r.get(5).map(|m| m.trim_start().to_string()))
        .collect()
}

/// Lines for a multiline test: every 10th event has a continuation line.
fn seq_lines_with_traces(from: u64, count: u64) -> String {
    (from..from + count)
        .map(|i| {
            if i % 10 == 0 {
                format!("seq {i:06} failed\n  at com.example.Main(Main.java:{i})\n")
            } else {
                format!("seq {i:06} ok\n")
            }
        })
        .collect()
}

fn check_syslog_records(records: &[Vec<String>], log: &Path) {
    for r in records
        .iter()
        .filter(|r| r.get(5).is_some_and(|m| m.contains("seq ")))
    {
        assert_eq!(r.len(), 6, "{r:?}");
        assert_eq!(r[0], "14", "user.info: {r:?}");
        assert!(r[1].contains('T'), "{r:?}");
        assert_eq!(r[2], "web-1", "HOSTNAME is the pod: {r:?}");
        assert_eq!(r[3], "app", "APP-NAME is the container: {r:?}");
        assert_eq!(
            r[4],
            format!(
                "[podkit@32473 pod=\"web-1\" container=\"app\" file=\"{}\"]",
                log.display()
            )
        );
    }
    // A multiline event is one message (octet counting keeps the newline inside it).
    let traces: Vec<&Vec<String>> = records
        .iter()
        .filter(|r| r.get(5).is_some_and(|m| m.contains("failed")))
        .collect();
    assert!(!traces.is_empty());
    for t in traces {
        assert!(t[5].contains("failed#012  at com.example.Main"), "{t:?}");
    }
}

#[test]
fn syslog_over_tcp_and_udp_to_rsyslog_survives_a_receiver_restart() {
    let s = Scene::new();
    let (tcp, udp) = (free_port(), free_port());
    let mut rsyslog = Rsyslog::start(
        &s.dir.path().join("rsyslog"),
        "",
        &format!(
            r#"module(load="imtcp")
module(load="imudp")
input(type="imtcp" port="{tcp}" address="127.0.0.1")
input(type="imudp" port="{udp}" address="127.0.0.1")"#
        ),
        tcp,
    );
    let log = s.log("app.log");
    append(&log, &seq_lines_with_traces(1, 200));
    let mut cmd = logship_to(
        &s,
        &format!("syslog+tcp://127.0.0.1:{tcp}"),
        &[
            "--sink",
            &format!("syslog+udp://127.0.0.1:{udp}"),
            "--multiline-start",
            "^seq ",
            "--multiline-timeout",
            "200ms",
            "--batch-max-lines",
            "50",
        ],
    );
    cmd.env("POD_NAME", "web-1").env("CONTAINER_NAME", "app");
    let g = Guard::spawn(&mut cmd);
    eventually("200 messages over TCP and UDP", LIMIT, || {
        (all_arrived(&syslog_messages(&rsyslog.received("tcp")), 1, 200)
            && all_arrived(&syslog_messages(&rsyslog.received("udp")), 1, 200))
        .then_some(())
    });
    check_syslog_records(&rsyslog.received("tcp"), &log);
    check_syslog_records(&rsyslog.received("udp"), &log);

    // rsyslog restarts: logship notices the closed connection and connects again; TCP loses
    // nothing (UDP, by its nature, may).
    rsyslog.stop();
    // Down, its port held (see ReservedPort) so that no other test's listener takes it.
    let held = podkit_tests::ReservedPort::at(std::net::SocketAddr::from(([127, 0, 0, 1], tcp)));
    append(&log, &seq_lines_with_traces(201, 200));
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    rsyslog.resume(tcp);
    append(&log, &seq_lines_with_traces(401, 100));
    eventually("500 messages over TCP after the restart", LIMIT, || {
        all_arrived(&syslog_messages(&rsyslog.received("tcp")), 1, 500).then_some(())
    });
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

#[test]
fn syslog_over_tls_to_rsyslog() {
    let s = Scene::new();
    let dir = s.dir.path().join("rsyslog");
    std::fs::create_dir_all(&dir).expect("dir");
    pki(&dir);
    let tls = free_port();
    let d = dir.display();
    let _rsyslog = Rsyslog::start(
        &dir,
        &format!(
            r#"defaultNetstreamDriver="gtls" defaultNetstreamDriverCAFile="{d}/ca.pem" defaultNetstreamDriverCertFile="{d}/server.pem" defaultNetstreamDriverKeyFile="{d}/server.key""#
        ),
        &format!(
            r#"module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="{tls}" address="127.0.0.1")"#
        ),
        tls,
    );
    let log = s.log("app.log");
    append(&log, &seq_lines_with_traces(1, 300));
    let mut cmd = logship_to(
        &s,
        &format!("syslog+tls://localhost:{tls}"),
        &[
            "--ca-file",
            &format!("{d}/ca.pem"),
            "--multiline-start",
            "^seq ",
            "--multiline-timeout",
            "200ms",
        ],
    );
    cmd.env("POD_NAME", "web-1").env("CONTAINER_NAME", "app");
    let g = Guard::spawn(&mut cmd);
    eventually("300 messages over TLS", LIMIT, || {
        all_arrived(&syslog_messages(&_rsyslog.received("tcp")), 1, 300).then_some(())
    });
    check_syslog_records(&_rsyslog.received("tcp"), &log);
    let counts = seq_counts(&syslog_messages(&_rsyslog.received("tcp")));
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    g.signal("TERM");
    assert_eq!(g.finish(LIMIT).0, Some(0), "{}", s.stderr());
}

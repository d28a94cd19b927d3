//! `cargo xtask demo`: k8s-examples/fullstack-pod on this machine ([`demo`]), and
//! `cargo xtask demo init-wait` ([`demo_init_wait`]).
//!
//! init-wait: the dependency pod
//! comes up 8 s late; the app pod's waitfor init container holds the app until it
//! does. Prints the merged, timestamped logs of all three containers, then tears
//! both pods down (also on failure). Network: `--network host`, traffic on
//! 127.0.0.1:8081 only (podman-config.yaml).

use std::net::TcpListener;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{Error, Result};
use crate::images;
use crate::podman::{Engine, Played};

const PORT: u16 = 8081;

/// The fullstack Pod: waitfor, the frontend and backend, podproxy in front, logship shipping
/// every log. Played with `--network none`; the requests come from a probe container that
/// joins the Pod. Shows the answers and the lines logship shipped, then tears the Pod down.
pub fn demo() -> Result<()> {
    let engine = Engine::podman()?;
    let begun = Instant::now();
    images::images()?;
    let built = begun.elapsed();
    let started = Instant::now();
    let source = cmd::workspace_root()
        .join("k8s-examples")
        .join("fullstack-pod")
        .join("pod.yaml");
    let text = std::fs::read_to_string(&source)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", source.display())))?;
    // podman 4.3 implements only metadata.name of the Downward API fields.
    let work = cmd::workspace_root().join("target").join("demo");
    std::fs::create_dir_all(&work).map_err(|e| Error::new(format!("{}: {e}", work.display())))?;
    let pod = work.join("fullstack-pod.yaml");
    std::fs::write(&pod, podkit_tests::for_podman(&text))
        .map_err(|e| Error::new(format!("{}: {e}", pod.display())))?;

    println!("\n== fullstack-pod demo ==");
    let _guard = Played::guard(&engine, &pod);
    let (line, out) = engine.kube_play(&pod, "none", None, Duration::from_secs(120))?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "`{line}` failed ({})\n  stderr: {}",
            out.status,
            cmd::tail(out.stderr.trim(), 20)
        ))
        .fix("`podman ps -a --pod` and `podman logs <container>` show what happened"));
    }
    println!("waitfor found /config/items.json; frontend, backend, podproxy and logship are up\n");
    let probe = |url: &str| -> Result<String> {
        let mut c = engine.command();
        c.args(["run", "--rm", "--pod", "fullstack-pod", "--user", "65532"])
            .arg(crate::podman::image_name("busybox"))
            .args(["wget", "-qO-", url]);
        let out = cmd::capture(&mut c, Duration::from_secs(30))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(Error::new(format!(
                "`{}` failed: {}",
                cmd::display(&c),
                out.stderr.trim()
            )))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        match probe("http://127.0.0.1:8080/") {
            Ok(page) => break page,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(300)),
        }
    };
    println!("GET http://127.0.0.1:8080/  (podproxy -> frontend, which calls /api/items through podproxy)");
    for l in page.lines() {
        println!("  {l}");
    }
    for path in ["/api/items", "/api/hello?name=demo"] {
        let body = probe(&format!("http://127.0.0.1:8080{path}"))?;
        println!(
            "GET http://127.0.0.1:8080{path}  (podproxy -> backend)\n  {}",
            body.trim()
        );
    }
    // logship ships within its batch timeout (1s).
    thread::sleep(Duration::from_millis(1500));
    println!("\nwhat logship shipped to its stdout (`podman logs fullstack-pod-logship`), one per source:");
    let shipped = engine.logs("fullstack-pod-logship")?;
    let mut shown = std::collections::BTreeMap::new();
    for line in shipped.lines() {
        // `podman logs -t`: a timestamp, a space, the record.
        let record = match line.find('{') {
            Some(i) => &line[i..],
            None => continue,
        };
        if !record.starts_with('{') || !record.contains("\"labels\"") {
            continue;
        }
        let file = field(record, "file").unwrap_or_default();
        shown.insert(file, record.to_string());
    }
    for (file, record) in &shown {
        println!("  [{file}]\n    {record}");
    }
    println!(
        "\n{} lines shipped in all; the demo took {:.1} s ({:.1} s building and smoke-testing \
         the images, {:.1} s playing the Pod); tearing the Pod down",
        shipped.lines().filter(|l| l.contains("\"labels\"")).count(),
        begun.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A string field of a flat JSON record, found by name (enough for logship's `file`).
fn field(record: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = record.find(&key)? + key.len();
    let end = record[start..].find('"')?;
    Some(record[start..start + end].to_string())
}

/// k8s-examples/init-wait: waitfor holding an app until a late dependency listens.
pub fn demo_init_wait() -> Result<()> {
    let engine = Engine::podman()?;
    images::images()?;

    let dir = cmd::workspace_root().join("k8s-examples").join("init-wait");
    let config = dir.join("podman-config.yaml");
    if TcpListener::bind(("127.0.0.1", PORT)).is_err() {
        return Err(Error::new(format!(
            "127.0.0.1:{PORT} is in use, and the demo's dependency listens there"
        ))
        .fix(format!(
            "stop what listens on it (`ss -ltnp 'sport = :{PORT}'` shows it), or a leftover \
             demo: `podman kube down {}`",
            dir.join("dependency.yaml").display()
        )));
    }

    println!("\n== init-wait demo ==");
    let dependency = dir.join("dependency.yaml");
    let _dependency_pod = Played::guard(&engine, &dependency);
    play(&engine, &dependency, &config, Duration::from_secs(60))?;
    println!(
        "dependency pod is up; its server starts listening on 127.0.0.1:{PORT} only after 8 s\n"
    );

    let pod = dir.join("pod.yaml");
    let _app_pod = Played::guard(&engine, &pod);
    println!(
        "playing the app pod: waitfor holds the app container until the dependency answers..."
    );
    let started = Instant::now();
    play(&engine, &pod, &config, Duration::from_secs(120))?;
    println!(
        "`kube play` of the app pod returned after {:.1} s: the init container finished\n",
        started.elapsed().as_secs_f64()
    );
    // The app's first line is written right after it starts; give it a moment.
    thread::sleep(Duration::from_secs(1));

    println!("timeline (podman logs -t of each container, merged):");
    let mut lines = Vec::new();
    for (who, container) in [
        ("dependency", "init-wait-dependency-server"),
        ("waitfor", "init-wait-waitfor"),
        ("app", "init-wait-app"),
    ] {
        for line in engine.logs(container)?.lines() {
            let (time, text) = line.split_once(' ').unwrap_or((line, ""));
            lines.push((sortable(time), who, message(text)));
        }
    }
    lines.sort();
    for (time, who, text) in &lines {
        let clock = time.get(11..23).unwrap_or(time);
        println!("  {clock}  {who:<10} | {text}");
    }

    let when = "{{.State.StartedAt.Format \"15:04:05.000\"}}";
    let ended = "{{.State.FinishedAt.Format \"15:04:05.000\"}}";
    println!(
        "\nwaitfor ran {} -> {} and exited {}; the app container started at {}",
        engine.inspect("init-wait-waitfor", when)?,
        engine.inspect("init-wait-waitfor", ended)?,
        engine.inspect("init-wait-waitfor", "{{.State.ExitCode}}")?,
        engine.inspect("init-wait-app", when)?,
    );
    println!("\ntearing down both pods");
    Ok(())
}

fn play(engine: &Engine, yaml: &Path, config: &Path, timeout: Duration) -> Result<()> {
    let (line, out) = engine.kube_play(yaml, "host", Some(config), timeout)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "`{line}` failed ({})\n  stderr: {}",
            out.status,
            cmd::tail(out.stderr.trim(), 20)
        ))
        .fix("`podman ps -a --pod` and `podman logs <container>` show what happened"))
    }
}

/// The `message` of a JSON log line (waitfor logs JSON when not on a terminal),
/// or the line as it is.
fn message(line: &str) -> String {
    const KEY: &str = "\"message\":\"";
    let Some(start) = line.find(KEY).filter(|_| line.starts_with('{')) else {
        return line.to_string();
    };
    let mut out = String::new();
    let mut chars = line[start + KEY.len()..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return out,
            '\\' => match chars.next() {
                Some('n') => out.push(' '),
                Some(escaped) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    line.to_string()
}

/// RFC 3339 with the fraction padded to 9 digits: Go trims trailing zeros, which
/// would break sorting the timestamps as strings.
fn sortable(time: &str) -> String {
    match time.split_once('.') {
        Some((secs, rest)) => {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let zone = &rest[digits.len()..];
            format!("{secs}.{digits:0<9}{zone}")
        }
        // "2006-01-02T15:04:05" is 19 bytes; the zone follows.
        None if time.len() >= 19 && time.is_char_boundary(19) => {
            format!("{}.000000000{}", &time[..19], &time[19..])
        }
        None => time.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{message, sortable};

    #[test]
    fn json_log_lines_show_their_message() {
        assert_eq!(
            message(r#"{"timestamp":"t","level":"INFO","message":"ready: \"db\" after 1s","x":1}"#),
            r#"ready: "db" after 1s"#
        );
        assert_eq!(message("plain text"), "plain text");
        assert_eq!(
            message(r#"{"message":"unterminated"#),
            r#"{"message":"unterminated"#
        );
    }

    #[test]
    fn timestamps_with_trimmed_fractions_sort_in_time_order() {
        let mut times = vec![
            sortable("2026-01-01T10:00:00.5Z"),
            sortable("2026-01-01T10:00:00.123456789Z"),
            sortable("2026-01-01T10:00:00Z"),
        ];
        times.sort();
        assert_eq!(
            times,
            [
                "2026-01-01T10:00:00.000000000Z",
                "2026-01-01T10:00:00.123456789Z",
                "2026-01-01T10:00:00.500000000Z"
            ]
        );
    }
}

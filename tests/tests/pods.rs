//! Pod tests: the manifests in k8s-examples/ played with `podman kube play`, and
//! the images they use, checked for what the examples promise.
//!
//! Ignored by plain `cargo test`: they need podman and the images. Run them with
//! `cargo xtask test` (which builds the images first), or after `cargo xtask images`:
//!   cargo test -p podkit-tests --test pods -- --ignored --test-threads=1
//! They fail, never skip, when podman or an image is missing. Network: the pods use
//! `--network none` or `--network host`, and every connection goes to 127.0.0.1.

use std::fs;
use std::thread;
use std::time::Duration;

use podkit_tests::{
    example_dir, for_podman, image_name, now_nanos, wait_until, workspace_root, LoopbackListener,
    Output, PodGuard, Podman, ReservedPort,
};

const PLAY_TIMEOUT: Duration = Duration::from_secs(120);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The binaries with an image: every `FROM base AS <bin>` stage of the Dockerfile
/// (xtask's dist::BINARIES must list the same ones, or `cargo xtask images` does not
/// build the image and the test says so).
fn binaries() -> Vec<String> {
    let dockerfile = workspace_root().join("Dockerfile");
    let text = fs::read_to_string(&dockerfile)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dockerfile.display()));
    let stages: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["FROM", "base", as_, name] if as_.eq_ignore_ascii_case("as") => {
                    Some(name.to_string())
                }
                _ => None,
            }
        })
        .collect();
    assert!(
        !stages.is_empty(),
        "no `FROM base AS <bin>` stage in {}",
        dockerfile.display()
    );
    stages
}

/// The JSON records logship shipped to its stdout (its own log lines, also JSON, have no
/// `labels`).
fn shipped_records(podman: &Podman, container: &str) -> Vec<serde_json::Value> {
    podman
        .stdout_lines(container)
        .into_iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .filter(|v| v.get("labels").is_some())
        .collect()
}

/// `podman kube play --network none`: the Pod gets only its own loopback.
fn play_isolated(podman: &Podman, pod: &std::path::Path) -> Output {
    podman.run(
        &[
            "kube",
            "play",
            "--replace",
            "--network",
            "none",
            &pod.to_string_lossy(),
        ],
        PLAY_TIMEOUT,
    )
}

fn podman_with_images() -> Podman {
    let podman = Podman::find();
    podman.require_image(&image_name("waitfor"));
    podman.require_image(&image_name("busybox"));
    podman
}

/// init-wait, played as on a laptop (`--network host`, targets from a ConfigMap),
/// with the test itself as the late dependency: a listener on 127.0.0.1 that
/// starts only once waitfor has been running (and failing to connect) for a while.
/// The order is proved three ways: podman's start/finish times, the times of the
/// containers' log lines, and the connections the listener accepted.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn init_wait_holds_the_app_until_a_late_dependency_listens() {
    let podman = podman_with_images();
    // Held (connections refused) until the dependency listens on it.
    let held = ReservedPort::new();
    let port = held.port();
    let target = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("config.yaml");
    fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: init-wait\ndata:\n  \
             WAITFOR_TARGETS: tcp://{target}\n  DEPENDENCY_LISTEN: {target}\n"
        ),
    )
    .expect("write the ConfigMap");
    let pod = example_dir("init-wait").join("pod.yaml");
    let _guard = PodGuard::new(&podman, &pod, &["init-wait"]);

    // `kube play` runs the init containers before it returns: play in the background.
    let play = {
        let podman = podman.clone();
        let args = [
            "kube".to_string(),
            "play".into(),
            "--replace".into(),
            "--network".into(),
            "host".into(),
            "--configmap".into(),
            config.to_string_lossy().into_owned(),
            pod.to_string_lossy().into_owned(),
        ];
        thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            podman.run(&args, PLAY_TIMEOUT)
        })
    };
    let running = wait_until(Duration::from_secs(60), || {
        play.is_finished()
            || podman.try_inspect("init-wait-waitfor", "{{.State.Running}}") == Some("true".into())
    });
    assert!(
        running && !play.is_finished(),
        "waitfor never ran while the dependency was down; kube play: {}",
        play.join().map(|o| o.to_string()).unwrap_or_default()
    );
    // The dependency stays down a while longer: waitfor must keep waiting.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        podman.inspect("init-wait-waitfor", "{{.State.Status}}"),
        "running",
        "waitfor stopped waiting before its dependency came up"
    );
    assert_eq!(
        podman.try_inspect("init-wait-app", "{{.State.Status}}"),
        Some("created".into()),
        "the app container must not run while waitfor waits"
    );

    let dependency = LoopbackListener::on(held);
    let played: Output = play.join().expect("kube play thread");
    assert!(played.success(), "kube play failed: {played}");
    let up = dependency.listening_since;

    // podman's own record of the order.
    assert_eq!(
        podman.inspect("init-wait-waitfor", "{{.State.ExitCode}}"),
        "0"
    );
    let waitfor_started = podman.inspect_time("init-wait-waitfor", ".State.StartedAt");
    let waitfor_finished = podman.inspect_time("init-wait-waitfor", ".State.FinishedAt");
    let app_started = podman.inspect_time("init-wait-app", ".State.StartedAt");
    assert!(
        waitfor_started < up,
        "waitfor must have started before the dependency listened"
    );
    assert!(
        waitfor_finished >= up,
        "waitfor finished {} ms before the dependency listened",
        (up - waitfor_finished) / 1_000_000
    );
    assert!(
        app_started >= waitfor_finished,
        "the app container started {} ms before waitfor finished",
        (waitfor_finished - app_started) / 1_000_000
    );
    assert_eq!(
        podman.inspect("init-wait-app", "{{.State.Status}}"),
        "running"
    );
    assert!(
        dependency.accepted() >= 1,
        "waitfor reported ready without ever connecting to the dependency"
    );

    // The containers' own words, with podman's timestamps.
    let waitfor_logs = podman.logs("init-wait-waitfor");
    let ready: Vec<_> = waitfor_logs
        .iter()
        .filter(|(_, line)| line.contains("ready") && line.contains(&target))
        .collect();
    assert!(
        !ready.is_empty(),
        "waitfor's log never says {target} is ready: {waitfor_logs:#?}"
    );
    assert!(
        ready.iter().all(|(time, _)| *time >= up),
        "waitfor logged {target} ready before it listened: {ready:#?}"
    );
    let app_logs = podman.logs("init-wait-app");
    let (app_said_started, _) = app_logs
        .iter()
        .find(|(_, line)| line.contains("app started"))
        .unwrap_or_else(|| panic!("the app never logged its start: {app_logs:#?}"));
    assert!(*app_said_started >= waitfor_finished && *app_said_started >= up);
    assert!(*app_said_started <= now_nanos());
}

/// pod-timeout.yaml: nothing ever listens, waitfor gives up after --timeout 3s with
/// exit code 124, and the pod reports it: `kube play` fails naming the init
/// container's exit code, and the app container is never started.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn a_dependency_that_never_comes_fails_the_pod_with_exit_code_124() {
    let podman = podman_with_images();
    let pod = example_dir("init-wait").join("pod-timeout.yaml");
    let _guard = PodGuard::new(&podman, &pod, &["init-wait-timeout"]);

    let played = play_isolated(&podman, &pod);
    assert!(!played.success(), "kube play must fail: {played}");
    assert!(
        played.stderr.contains("exited with code 124"),
        "kube play must name the init container's exit code: {played}"
    );

    let waitfor = "init-wait-timeout-waitfor";
    assert_eq!(podman.inspect(waitfor, "{{.State.Status}}"), "exited");
    assert_eq!(podman.inspect(waitfor, "{{.State.ExitCode}}"), "124");
    let gave_up = podman
        .logs(waitfor)
        .into_iter()
        .any(|(_, line)| line.contains("timed out") && line.contains("127.0.0.1:8081"));
    assert!(
        gave_up,
        "waitfor's log must say it timed out on 127.0.0.1:8081"
    );

    let app = "init-wait-timeout-app";
    assert_eq!(podman.inspect(app, "{{.State.Status}}"), "created");
    assert_eq!(podman.inspect(app, "{{.State.StartedAt.IsZero}}"), "true");
    assert!(
        podman.logs(app).is_empty(),
        "the app container printed something"
    );
}

/// The examples ask for the Pod Security "restricted" profile; podman applies
/// most of it, so check that what runs is what the manifest says.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn example_containers_run_as_the_restricted_profile_asks() {
    let podman = podman_with_images();
    let pod = example_dir("init-wait").join("pod-timeout.yaml");
    let _guard = PodGuard::new(&podman, &pod, &["init-wait-timeout"]);
    // The play fails (that is the example's point); the containers exist either way.
    play_isolated(&podman, &pod);
    for container in ["init-wait-timeout-waitfor", "init-wait-timeout-app"] {
        let get = |template: &str| podman.inspect(container, template);
        assert_eq!(get("{{.Config.User}}"), "65532:65532", "{container}");
        assert_eq!(get("{{.HostConfig.ReadonlyRootfs}}"), "true", "{container}");
        assert_eq!(get("{{.EffectiveCaps}}"), "[]", "{container}");
        assert!(
            get("{{.HostConfig.SecurityOpt}}").contains("no-new-privileges"),
            "{container}"
        );
        assert_ne!(
            get("{{.HostConfig.Memory}}"),
            "0",
            "{container} has no memory limit"
        );
    }
}

/// Each binary image: FROM scratch with no shell, runs as 65532, exec-form
/// entrypoint, OCI labels, and `--version` prints the workspace version.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn binary_images_are_nonroot_labelled_and_shell_free() {
    let podman = podman_with_images();
    for bin in binaries() {
        let bin = bin.as_str();
        let image = image_name(bin);
        podman.require_image(&image);
        let get = |template: &str| {
            let out = podman.run(
                &["image", "inspect", "--format", template, &image],
                Duration::from_secs(60),
            );
            assert!(out.success(), "{out}");
            out.stdout.trim().to_string()
        };
        assert_eq!(get("{{.Config.User}}"), "65532:65532", "{image}");
        assert_eq!(
            get("{{json .Config.Entrypoint}}"),
            format!("[\"/usr/local/bin/{bin}\"]"),
            "{image}"
        );
        let label = |name: &str| get(&format!("{{{{index .Config.Labels \"{name}\"}}}}"));
        assert_eq!(label("org.opencontainers.image.title"), bin);
        assert_eq!(label("org.opencontainers.image.version"), VERSION);
        assert_eq!(label("org.opencontainers.image.licenses"), "Apache-2.0");
        assert!(label("org.opencontainers.image.source").starts_with("https://"));
        assert!(!label("org.opencontainers.image.description").is_empty());

        let version = podman.run(
            &["run", "--rm", "--network", "none", &image, "--version"],
            Duration::from_secs(60),
        );
        assert!(version.success(), "{version}");
        let printed = version.stdout.trim();
        assert!(
            printed.starts_with(&format!("{bin} {VERSION} (commit "))
                && printed.contains("x86_64-unknown-linux-gnu")
                && printed.contains("profile-guided"),
            "{printed}"
        );

        let shell = podman.run(
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "/bin/sh",
                &image,
                "-c",
                "true",
            ],
            Duration::from_secs(60),
        );
        assert!(
            !shell.success(),
            "{image} must not contain a shell: {shell}"
        );
    }
}

/// log-sidecar: the app writes JSON lines and renames its file every 100 lines; logship
/// streams them to its stdout. After `podman pod stop` (SIGTERM to both), logship's container
/// log holds every line the app wrote, 1 to the last (the one the app writes at SIGTERM),
/// exactly once, in order, labelled with the Pod's name and the container's.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn log_sidecar_ships_every_line_through_rotation_and_stop() {
    let podman = podman_with_images();
    podman.require_image(&image_name("logship"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let pod = dir.path().join("log-sidecar.yaml");
    let manifest =
        fs::read_to_string(example_dir("log-sidecar").join("pod.yaml")).expect("read pod.yaml");
    let playable = for_podman(&manifest);
    assert!(playable.contains("POD_NAME") && !playable.contains("fieldPath: spec.nodeName"));
    fs::write(&pod, playable).expect("write the podman copy");
    let _guard = PodGuard::new(&podman, &pod, &["log-sidecar"]);
    let played = play_isolated(&podman, &pod);
    assert!(played.success(), "kube play failed: {played}");

    let records = || -> Vec<serde_json::Value> {
        shipped_records(&podman, "log-sidecar-logship")
            .into_iter()
            .filter(|v| v.get("fields").is_some())
            .collect()
    };
    // Past two rotations (every 100 lines) before the stop.
    let rotated = wait_until(Duration::from_secs(60), || records().len() >= 250);
    assert!(
        rotated,
        "logship shipped only {} records in 60s",
        records().len()
    );

    let stopped = podman.run(&["pod", "stop", "-t", "15", "log-sidecar"], PLAY_TIMEOUT);
    assert!(stopped.success(), "pod stop failed: {stopped}");
    assert_eq!(
        podman.inspect("log-sidecar-logship", "{{.State.ExitCode}}"),
        "0"
    );

    let shipped = records();
    let seqs: Vec<u64> = shipped
        .iter()
        .map(|r| {
            r["fields"]["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq in {r}"))
        })
        .collect();
    let last = *seqs.last().expect("records");
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every line from 1 to {last}, once and in order"
    );
    let final_record = shipped.last().expect("records");
    assert_eq!(
        final_record["fields"]["msg"], "last line, written at SIGTERM",
        "{final_record}"
    );
    assert_eq!(final_record["labels"]["pod"], "log-sidecar");
    assert_eq!(final_record["labels"]["container"], "app");
    assert_eq!(final_record["file"], "/logs/app.log");
}

/// proxy-sidecar: requests from a probe container that joins the Pod (its loopback only)
/// reach both routes through podproxy's port, and each is in the access log on the shared
/// volume, with its route's upstream.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn proxy_sidecar_routes_both_apps_and_logs_each_request() {
    let podman = podman_with_images();
    podman.require_image(&image_name("podproxy"));
    let pod = example_dir("proxy-sidecar").join("pod.yaml");
    let _guard = PodGuard::new(&podman, &pod, &["proxy-sidecar"]);
    let played = play_isolated(&podman, &pod);
    assert!(played.success(), "kube play failed: {played}");

    let busybox = image_name("busybox");
    let fetch = |path: &str| {
        podman.run(
            &[
                "run",
                "--rm",
                "--pod",
                "proxy-sidecar",
                "--user",
                "65532",
                &busybox,
                "wget",
                "-qO-",
                &format!("http://127.0.0.1:8080{path}"),
            ],
            PLAY_TIMEOUT,
        )
    };
    let ready = wait_until(Duration::from_secs(30), || fetch("/").success());
    assert!(ready, "podproxy never answered on 8080: {}", fetch("/"));
    let front = fetch("/");
    assert!(front.stdout.contains("<h1>frontend</h1>"), "{front}");
    let api = fetch("/api/items");
    assert!(api.stdout.contains("\"apple\""), "{api}");
    let missing = fetch("/api/nothing-here");
    assert!(
        !missing.success(),
        "a missing backend file must not be a success: {missing}"
    );

    let logged = wait_until(Duration::from_secs(10), || {
        let log = podman.run(
            &["exec", "proxy-sidecar-frontend", "cat", "/logs/access.log"],
            PLAY_TIMEOUT,
        );
        // The last request's line: lines are written in order, so the others are in too
        // (counting three lines raced the fourth, the readiness fetch being one of them).
        log.stdout.contains("/api/nothing-here")
    });
    assert!(logged, "the access log never held the last request's line");
    let log = podman.run(
        &["exec", "proxy-sidecar-frontend", "cat", "/logs/access.log"],
        PLAY_TIMEOUT,
    );
    let lines: Vec<serde_json::Value> = log
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("access log lines are JSON"))
        .collect();
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}: {lines:?}"))
    };
    assert_eq!(by_path("/")["upstream"], "http://127.0.0.1:3000");
    assert_eq!(by_path("/")["status"], 200);
    assert_eq!(by_path("/api/items")["upstream"], "http://127.0.0.1:5000");
    assert_eq!(by_path("/api/nothing-here")["status"], 404);
    // The ready file follows podproxy's upstream probes (every 2s), which may lag the first
    // requests that already went through.
    let cat_ready = || {
        podman.run(
            &[
                "exec",
                "proxy-sidecar-frontend",
                "cat",
                "/logs/podproxy.ready",
            ],
            PLAY_TIMEOUT,
        )
    };
    let written = wait_until(Duration::from_secs(15), || cat_ready().success());
    let ready_file = cat_ready();
    assert!(written, "no ready file: {ready_file}");
}

/// fullstack-pod: the seed's frontend and backend in one Pod with all of podkit. From a probe
/// container that joins the Pod: the page (podproxy -> frontend -> podproxy -> backend) shows
/// the ConfigMap's items, which waitfor waited for; 400 API calls make the backend rotate its
/// log file. logship's stdout then holds the access log's and both apps' lines with the Pod's
/// labels, every API call once; and after `podman kube down` it also holds the apps' last
/// lines, written at SIGTERM.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn fullstack_pod_serves_both_routes_and_ships_every_log() {
    let podman = podman_with_images();
    for image in ["logship", "podproxy", "demo-app"] {
        podman.require_image(&image_name(image));
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let pod = dir.path().join("fullstack-pod.yaml");
    let manifest =
        fs::read_to_string(example_dir("fullstack-pod").join("pod.yaml")).expect("read pod.yaml");
    fs::write(&pod, for_podman(&manifest)).expect("write the podman copy");
    let guard = PodGuard::new(&podman, &pod, &["fullstack-pod"]);
    let played = play_isolated(&podman, &pod);
    assert!(played.success(), "kube play failed: {played}");

    let busybox = image_name("busybox");
    let probe = |script: &str| {
        podman.run(
            &[
                "run",
                "--rm",
                "--pod",
                "fullstack-pod",
                "--user",
                "65532",
                &busybox,
                "sh",
                "-c",
                script,
            ],
            PLAY_TIMEOUT,
        )
    };
    let page = || probe("wget -qO- http://127.0.0.1:8080/");
    assert!(
        wait_until(Duration::from_secs(30), || page().success()),
        "no page through podproxy: {}",
        page()
    );
    let front = page();
    assert!(
        front.stdout.contains("<li>apple</li>") && front.stdout.contains("<li>quince</li>"),
        "the page shows the ConfigMap's items, fetched through podproxy: {front}"
    );
    let calls = probe(
        "i=0; while [ $i -lt 400 ]; do i=$((i+1)); \
         wget -qO- \"http://127.0.0.1:8080/api/hello?name=n$i\" >/dev/null || exit 1; done",
    );
    assert!(calls.success(), "400 API calls: {calls}");

    let records = || shipped_records(&podman, "fullstack-pod-logship");
    let hello_calls = |records: &[serde_json::Value], file: &str| {
        records
            .iter()
            .filter(|r| r["file"] == file && r["fields"]["path"] == "/api/hello")
            .count()
    };
    let all_shipped = wait_until(Duration::from_secs(30), || {
        let r = records();
        hello_calls(&r, "/logs/access.log") >= 400 && hello_calls(&r, "/logs/backend.log") >= 400
    });
    let shipped = records();
    assert!(
        all_shipped,
        "access log {} and backend {} of 400 calls shipped",
        hello_calls(&shipped, "/logs/access.log"),
        hello_calls(&shipped, "/logs/backend.log")
    );
    // Once each, though the backend's log was rotated (64KiB) on the way.
    assert_eq!(hello_calls(&shipped, "/logs/access.log"), 400);
    assert_eq!(hello_calls(&shipped, "/logs/backend.log"), 400);
    // logship's own count says the backend's file was rotated under it.
    let metrics = probe("wget -qO- http://127.0.0.1:9090/metrics");
    let rotations: f64 = metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("logship_rotations_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(rotations >= 1.0, "no rotation seen: {metrics}");
    assert!(
        shipped
            .iter()
            .any(|r| r["file"] == "/logs/frontend.log" && r["fields"]["path"] == "/"),
        "the frontend's request line"
    );
    assert!(shipped
        .iter()
        .all(|r| r["labels"]["pod"] == "fullstack-pod"));

    // Stopping the Pod: the apps write their last line at SIGTERM and logship, stopping at the
    // same time, reads until the files are quiet, so those lines are shipped too. (`podman
    // pod stop` gives the grace period Kubernetes gives; podman 4.3's `kube down` stopped
    // this Pod without letting logship log its drain, so the test stops first, then downs.)
    let stopped = podman.run(&["pod", "stop", "-t", "30", "fullstack-pod"], PLAY_TIMEOUT);
    assert!(stopped.success(), "pod stop failed: {stopped}");
    assert_eq!(
        podman.inspect("fullstack-pod-logship", "{{.State.ExitCode}}"),
        "0"
    );
    let tail = podman.stdout_lines("fullstack-pod-logship");
    for service in ["frontend", "backend"] {
        assert!(
            tail.iter().any(|l| l.contains("stopping on SIGTERM")
                && l.contains(&format!("\"service\":\"{service}\""))),
            "{service}'s last line was not shipped:\n{}",
            tail.iter()
                .rev()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let down = podman.run(&["kube", "down", &pod.to_string_lossy()], PLAY_TIMEOUT);
    assert!(down.success(), "kube down failed: {down}");
    drop(guard);
}

/// `kube play` with `--network host`: the Pods share the host's loopback.
fn play_on_host(podman: &Podman, yaml: &std::path::Path) -> Output {
    podman.run(
        &[
            "kube",
            "play",
            "--replace",
            "--network",
            "host",
            &yaml.to_string_lossy(),
        ],
        PLAY_TIMEOUT,
    )
}

/// separate-pods: the seed's recommended layout, two Deployments and a Service, on podman as
/// its README says (one replica each, the host network, backend-service:5000 named by its
/// address 127.0.0.1:5000: podman has no Services). The
/// frontend is played first: its waitfor holds it until the backend Deployment, played 5s
/// later, listens. Then the page (podproxy -> frontend -> podproxy -> backend-service) shows
/// the backend's items, and each Pod's logship ships its logs with its Pod's labels.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn separate_pods_frontend_waits_for_the_backend_service_then_serves_through_it() {
    let podman = podman_with_images();
    for image in ["logship", "podproxy", "demo-app"] {
        podman.require_image(&image_name(image));
    }
    for port in [3000, 5000, 8080, 9090, 9091, 9901] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} on the host is taken; separate-pods plays on the host network"
        );
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let read = |name: &str| {
        fs::read_to_string(example_dir("separate-pods").join(name)).expect("read the manifest")
    };
    let one_replica = |yaml: String| yaml.replace("\n  replicas: 2\n", "\n  replicas: 1\n");
    let backend = dir.path().join("backend.yaml");
    fs::write(&backend, for_podman(&one_replica(read("backend.yaml")))).expect("write");
    // podman has no Service DNS, and podman 4.3 leaves a Pod's hostAliases out of /etc/hosts
    // on the host network: the podman copy names the backend by its address.
    let original = read("frontend.yaml");
    assert!(
        original.contains("backend-service:5000"),
        "the frontend manifest changed shape"
    );
    let frontend_yaml = for_podman(&one_replica(original))
        .replace("backend-service:5000", "127.0.0.1:5000")
        .replacen(
            "\n      automountServiceAccountToken: false\n",
            "\n      automountServiceAccountToken: false\n      restartPolicy: OnFailure\n",
            1,
        );
    assert!(
        frontend_yaml.contains("restartPolicy: OnFailure"),
        "the frontend manifest changed shape"
    );
    let frontend = dir.path().join("frontend.yaml");
    fs::write(&frontend, frontend_yaml).expect("write");
    let _backend_guard = PodGuard::new(&podman, &backend, &["backend-pod-0"]);
    let _frontend_guard = PodGuard::new(&podman, &frontend, &["frontend-pod-0"]);

    let frontend_play = {
        let podman = podman.clone();
        let frontend = frontend.clone();
        thread::spawn(move || play_on_host(&podman, &frontend))
    };
    thread::sleep(Duration::from_secs(5));
    assert!(
        podman
            .try_inspect("frontend-pod-0-frontend", "{{.State.Running}}")
            .is_none_or(|r| r != "true"),
        "the frontend ran before the backend existed"
    );
    let backend_started = now_nanos();
    let played = play_on_host(&podman, &backend);
    assert!(played.success(), "backend kube play failed: {played}");
    let played = frontend_play.join().expect("frontend play");
    assert!(played.success(), "frontend kube play failed: {played}");
    let frontend_started = podman.inspect_time("frontend-pod-0-frontend", ".State.StartedAt");
    assert!(
        frontend_started > backend_started,
        "waitfor let the frontend start before the backend was played"
    );

    let busybox = image_name("busybox");
    let fetch = |path: &str| {
        podman.run(
            &[
                "run",
                "--rm",
                "--network",
                "host",
                "--user",
                "65532",
                &busybox,
                "wget",
                "-qO-",
                &format!("http://127.0.0.1:8080{path}"),
            ],
            PLAY_TIMEOUT,
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || fetch("/").success()),
        "no page through the frontend's podproxy: {}",
        fetch("/")
    );
    let page = fetch("/");
    assert!(page.stdout.contains("<li>"), "{page}");
    let items = fetch("/api/items");
    assert!(items.stdout.contains("\"items\""), "{items}");

    let records = |container: &str| shipped_records(&podman, container);
    let shipped = wait_until(Duration::from_secs(20), || {
        let front = records("frontend-pod-0-logship");
        let back = records("backend-pod-0-logship");
        front.iter().any(|r| {
            r["file"] == "/logs/access.log"
                && r["fields"]["path"] == "/api/items"
                && r["fields"]["upstream"] == "http://127.0.0.1:5000"
        }) && back
            .iter()
            .any(|r| r["file"] == "/logs/backend.log" && r["fields"]["path"] == "/api/items")
    });
    assert!(
        shipped,
        "frontend logship: {:?}\nbackend logship: {:?}",
        records("frontend-pod-0-logship").last(),
        records("backend-pod-0-logship").last()
    );
    assert!(records("frontend-pod-0-logship")
        .iter()
        .all(|r| r["labels"]["pod"] == "frontend-pod-0"));
    assert!(records("backend-pod-0-logship")
        .iter()
        .all(|r| r["labels"]["pod"] == "backend-pod-0"));
}

/// job-with-sidecar: the Job's pod template played as a Pod (podman 4.3 has no Jobs). The
/// worker writes 201 lines and touches /logs/.done; logship ships every line once and leaves
/// with the job, exit 0, so the Pod completes.
#[test]
#[ignore = "needs podman and the images: run `cargo xtask test`"]
fn job_sidecar_ships_every_line_and_leaves_with_the_job() {
    let podman = podman_with_images();
    podman.require_image(&image_name("logship"));
    let job = fs::read_to_string(example_dir("job-with-sidecar").join("job.yaml"))
        .expect("read job.yaml");
    // `template` is the last key of the Job's spec: everything below it is the Pod.
    let mut pod_yaml = String::from("apiVersion: v1\nkind: Pod\n");
    let mut inside = false;
    for line in job.lines() {
        if inside {
            let line = line.strip_prefix("    ").unwrap_or(line);
            pod_yaml.push_str(line);
            pod_yaml.push('\n');
            if line == "metadata:" {
                pod_yaml.push_str("  name: report\n");
            }
        } else if line == "  template:" {
            inside = true;
        }
    }
    assert!(inside, "job.yaml has no `  template:` line");
    let dir = tempfile::tempdir().expect("temporary directory");
    let pod = dir.path().join("report.yaml");
    fs::write(&pod, for_podman(&pod_yaml)).expect("write the pod");
    let _guard = PodGuard::new(&podman, &pod, &["report"]);
    let played = play_isolated(&podman, &pod);
    assert!(played.success(), "kube play failed: {played}");
    let waited = podman.run(&["wait", "report-logship"], PLAY_TIMEOUT);
    assert!(waited.success(), "{waited}");
    assert_eq!(waited.stdout.trim(), "0", "logship left on its own, exit 0");
    assert_eq!(podman.inspect("report-worker", "{{.State.ExitCode}}"), "0");
    let seqs: Vec<u64> = shipped_records(&podman, "report-logship")
        .into_iter()
        .filter_map(|v| v["fields"]["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        (1..=201).collect::<Vec<_>>(),
        "every line once, in order"
    );
}

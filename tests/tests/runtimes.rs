//! Real runtimes under real load generators, each in its own namespace, and the phase where
//! its scenario puts the wait: Node.js with a CPU-bound handler on its one event loop, a Go
//! `net/http` server with a slow handler, Gunicorn with fewer sync workers than clients, and
//! nginx with two workers on `reuseport` sockets. The servers are in tests/runtimes/ (nginx's
//! configuration is written here); xtask/setup.sh installs the runtimes from Debian.
//!
//! Every load is one request per connection (ab without -k, wrk with `Connection: close`), so
//! each request goes through the listen path and accept() again.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use synscope::{
    host::counters::parse_pairs,
    report::{LatencySummary, ListenerReport},
};
use synscope_tests::{
    Netns, Traced, background::Background, require_root, run_ok, synscope_run_in, tempdir,
};

/// The figures depend on how much CPU the server gets: one runtime at a time, even under a
/// plain `cargo test` (which runs a binary's tests in parallel).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn runtimes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtimes")
}

fn require(program: &str, version_flag: &str, package: &str) {
    assert!(
        Command::new(program).arg(version_flag).output().is_ok(),
        "{program} is needed: apt-get install {package} (xtask/setup.sh does)"
    );
}

/// Starts `argv` inside `netns` and waits until it answers HTTP on `port`.
fn serve(netns: &Netns, name: &str, port: u16, argv: &[&str]) -> Background {
    let mut server = Background::start(
        name,
        Command::new("ip")
            .args(["netns", "exec", &netns.name])
            .args(argv),
    );
    let url = format!("http://127.0.0.1:{port}/");
    server.wait_until(Duration::from_secs(15), |_| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns.name,
                "curl",
                "-fsS",
                "--max-time",
                "2",
            ])
            .arg(&url)
            .output()
            .is_ok_and(|out| out.status.success())
    });
    server
}

/// Milliseconds, from a summary in microseconds.
fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// Read wait and service, or None (after checking the report says why) on a kernel that
/// cannot trace the phases after accept() (tracepoints only, before 6.3).
fn phases<'a>(
    traced: &Traced,
    listener: &'a ListenerReport,
) -> Option<(&'a LatencySummary, &'a LatencySummary)> {
    if traced.hook("phases") == Some("unavailable") {
        let why = &traced.report.unobserved["phases"];
        assert!(why.contains("sock_recv_length"), "{why}");
        return None;
    }
    Some((
        listener.read_wait_us.as_ref().expect("phases traced"),
        listener.service_us.as_ref().expect("phases traced"),
    ))
}

/// One line of figures, printed (shown with --nocapture, and in every failure's output).
fn describe(name: &str, listener: &ListenerReport) -> String {
    let p = |s: Option<&LatencySummary>| {
        s.map_or("-".to_owned(), |s| {
            format!("p50 {:.1} ms p99 {:.1} ms", ms(s.p50), ms(s.p99))
        })
    };
    let line = format!(
        "{name}: phase {} (share {:?}); accepted {} of {} handshakes; handshake {}; \
         accept wait {}; read wait {}; service {}; never accepted {}",
        listener.bottleneck.phase,
        listener.bottleneck.share,
        listener.accepted,
        listener.handshakes,
        p(Some(&listener.handshake_us)),
        p(Some(&listener.accept_wait_us)),
        p(listener.read_wait_us.as_ref()),
        p(listener.service_us.as_ref()),
        listener.never_accepted.count,
    );
    println!("{line}");
    line
}

/// The number ab printed after `label` ("Complete requests:").
fn ab_count(stdout: &str, label: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ab printed no {label:?}:\n{stdout}"))
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> BTreeSet<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect()
}

/// `pid`'s children once there are `count` of them; fails the test after 10 s.
fn children_when(pid: u32, count: usize) -> BTreeSet<u32> {
    let started = Instant::now();
    loop {
        let found = children(pid);
        if found.len() == count {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{pid} has children {found:?}, not {count}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid a server wrote to `path`.
fn pid_file(path: &Path) -> u32 {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no pid file {}: {e}", path.display()));
    text.trim().parse().expect("a pid")
}

/// The accepting pids the report names.
fn acceptor_pids(listener: &ListenerReport) -> BTreeSet<u32> {
    listener.acceptors.iter().map(|a| a.pid).collect()
}

const NODE_HANDLER_MS: f64 = 20.0;

/// Node.js runs its handlers on the thread that accepts: with 50 clients each wanting 20 ms of
/// CPU, a connection waits for the handlers of those ahead of it. Measured (Node 20, wrk -c50):
/// Node reads a connection in the loop turn after the one that accepted it, so the hand-off
/// (accept -> first read) is one handler's time (read wait ~20 ms), while the other clients'
/// connections wait in the accept queue for the loop to come back to accept(): accept wait
/// ~ (clients - 1) x 20 ms, about 1 s. The verdict is the accept queue; the handler itself
/// (service) stays at its 20 ms of CPU.
#[test]
fn node_cpu_bound_handler_waits_in_the_queue_not_the_handler() {
    require_root();
    require("node", "--version", "nodejs");
    require("wrk", "--version", "wrk");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let netns = Netns::new("node");
    let port = 7600;
    let script = runtimes_dir().join("node_cpu.js");
    let _node = serve(
        &netns,
        "node",
        port,
        &[
            "node",
            script.to_str().unwrap(),
            &port.to_string(),
            &NODE_HANDLER_MS.to_string(),
        ],
    );
    let traced = synscope_run_in(
        &netns,
        &format!("wrk -t2 -c50 -d4s -H 'Connection: close' http://127.0.0.1:{port}/"),
    );
    let listener = traced.listener(&netns, port);
    let figures = describe("node", listener);
    // 4 s of 20 ms handlers: at most 200 requests, fewer on a busy machine.
    assert!(
        (40..=220).contains(&listener.accepted),
        "{figures}\n{listener:#?}"
    );
    assert!(
        listener
            .acceptors
            .iter()
            .all(|a| a.comm.starts_with("node")),
        "{listener:#?}"
    );
    let accept_wait = &listener.accept_wait_us;
    // About 49 handlers ahead of each connection; a tenth of that leaves room for a slow
    // machine (the handler burns wall-clock time, so its length holds even when preempted).
    assert!(
        ms(accept_wait.p50) >= 10.0 * NODE_HANDLER_MS
            && accept_wait.p50 > 100.0 * listener.handshake_us.p50,
        "{figures}"
    );
    assert_eq!(
        listener.bottleneck.phase, "accept_queue",
        "{figures}\n{:#?}",
        listener.bottleneck
    );
    let Some((read_wait, service)) = phases(&traced, listener) else {
        return;
    };
    assert!(
        (NODE_HANDLER_MS..3.0 * NODE_HANDLER_MS).contains(&ms(service.p50)),
        "{figures}"
    );
    // The hand-off is one loop turn, one handler: far shorter than the queue.
    assert!(
        ms(read_wait.p50) < 3.0 * NODE_HANDLER_MS && accept_wait.p50 > 5.0 * read_wait.p50,
        "{figures}"
    );
}

const GO_HANDLER_MS: f64 = 100.0;

/// Go's net/http accepts in a loop of its own and serves each connection on a new goroutine:
/// the connection is accepted at once and read at once, and the time is the handler's sleep.
#[test]
fn go_slow_handler_is_accepted_at_once_and_waits_in_the_handler() {
    require_root();
    require("go", "version", "golang-go");
    require("ab", "-V", "apache2-utils");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The program uses only the standard library: no module, no network.
    let dir = tempdir();
    let binary = dir.join("go_slow");
    run_ok(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&binary)
            .arg(runtimes_dir().join("go_slow.go"))
            .env("HOME", &dir)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GO111MODULE", "off"),
    );
    let netns = Netns::new("go");
    let port = 7610;
    let _go = serve(
        &netns,
        "go_slow",
        port,
        &[
            binary.to_str().unwrap(),
            &port.to_string(),
            &GO_HANDLER_MS.to_string(),
        ],
    );
    let traced = synscope_run_in(
        &netns,
        &format!("ab -q -n 100 -c 20 http://127.0.0.1:{port}/"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ab_count(&traced.stdout, "Complete requests:"), 100);
    let listener = traced.listener(&netns, port);
    let figures = describe("go", listener);
    // ab may open a few connections more than it completes requests.
    assert!(
        (100..=120).contains(&listener.accepted),
        "{figures}\n{listener:#?}"
    );
    assert!(ms(listener.accept_wait_us.p99) < 5.0, "{figures}");
    let Some((read_wait, service)) = phases(&traced, listener) else {
        return;
    };
    assert!(ms(read_wait.p99) < 5.0, "{figures}");
    assert!(
        (GO_HANDLER_MS..GO_HANDLER_MS + 50.0).contains(&ms(service.p50)),
        "{figures}"
    );
    assert_eq!(
        listener.bottleneck.phase, "handler",
        "{figures}\n{:#?}",
        listener.bottleneck
    );
}

const GUNICORN_HANDLER_MS: f64 = 50.0;

/// Gunicorn's sync workers each take one connection and serve it to the end before they
/// accept the next: 20 clients and 2 workers, so most connections wait in the accept queue
/// for a worker to come free, then are read at once and served in the handler's 50 ms.
#[test]
fn gunicorn_sync_workers_fewer_than_clients_leave_connections_queued() {
    require_root();
    require("gunicorn", "--version", "gunicorn");
    require("ab", "-V", "apache2-utils");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let netns = Netns::new("gunicorn");
    let port = 7620;
    let dir = tempdir();
    let pid = dir.join("gunicorn.pid");
    let _gunicorn = serve(
        &netns,
        "gunicorn",
        port,
        &[
            "env",
            &format!("HANDLER_MS={GUNICORN_HANDLER_MS}"),
            "gunicorn",
            "--chdir",
            runtimes_dir().to_str().unwrap(),
            "--pid",
            pid.to_str().unwrap(),
            "-w",
            "2",
            "-k",
            "sync",
            "-b",
            &format!("127.0.0.1:{port}"),
            "--backlog",
            "2048",
            "gunicorn_app:app",
        ],
    );
    // Gunicorn forks its workers one after another, a random pause of up to 100 ms apart.
    let workers = children_when(pid_file(&pid), 2);
    let traced = synscope_run_in(
        &netns,
        &format!("ab -q -n 80 -c 20 http://127.0.0.1:{port}/"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ab_count(&traced.stdout, "Complete requests:"), 80);
    let listener = traced.listener(&netns, port);
    let figures = describe("gunicorn", listener);
    assert!(
        (80..=100).contains(&listener.accepted),
        "{figures}\n{listener:#?}"
    );
    assert_eq!(acceptor_pids(listener), workers, "{listener:#?}");
    // 20 clients over 2 workers: about 9 handlers ahead of each connection (450 ms); 4 leave
    // room for a slow machine.
    assert!(
        ms(listener.accept_wait_us.p50) > 4.0 * GUNICORN_HANDLER_MS,
        "{figures}"
    );
    if let Some((read_wait, service)) = phases(&traced, listener) {
        assert!(ms(read_wait.p50) < 5.0, "{figures}");
        assert!(
            (GUNICORN_HANDLER_MS..GUNICORN_HANDLER_MS + 30.0).contains(&ms(service.p50)),
            "{figures}"
        );
    }
    assert_eq!(
        listener.bottleneck.phase, "accept_queue",
        "{figures}\n{:#?}",
        listener.bottleneck
    );
}

const NGINX_REQUESTS: u64 = 2000;

/// nginx with `reuseport` gives each of its two workers a listening socket of its own under
/// the one port, each with its own accept queue: the report keeps one listener for the port,
/// accepts by both workers, and counts every connection the kernel completed.
#[test]
fn nginx_reuseport_workers_each_accept_from_their_own_socket() {
    require_root();
    require("nginx", "-v", "nginx-light");
    require("ab", "-V", "apache2-utils");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let netns = Netns::new("nginx-reuseport");
    let port = 7630;
    let dir = tempdir();
    let conf = dir.join("nginx.conf");
    let pid = dir.join("nginx.pid");
    std::fs::write(
        &conf,
        format!(
            "daemon off;
worker_processes 2;
pid {pid};
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=1024;
        location / {{ return 204; }}
    }}
}}
",
            pid = pid.display()
        ),
    )
    .unwrap();
    let _nginx = serve(
        &netns,
        "nginx",
        port,
        &["nginx", "-e", "stderr", "-c", conf.to_str().unwrap()],
    );
    let workers = children_when(pid_file(&pid), 2);
    assert_eq!(
        listening_sockets(&netns, port),
        2,
        "reuseport: one listening socket per worker"
    );

    let opens_before = passive_opens(&netns);
    let traced = synscope_run_in(
        &netns,
        &format!(
            "ab -q -n {NGINX_REQUESTS} -c 20 http://127.0.0.1:{port}/; status=$?
            # Let nginx accept what is still queued (ab may open a few extra connections).
            for i in $(seq 100); do
                ss -Hltn 'sport = :{port}' | awk '$2 != 0 {{busy = 1}} END {{exit busy}}' && break
                sleep 0.05
            done
            exit $status"
        ),
    );
    let opens = passive_opens(&netns) - opens_before;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        ab_count(&traced.stdout, "Complete requests:"),
        NGINX_REQUESTS
    );
    assert_eq!(ab_count(&traced.stdout, "Failed requests:"), 0);
    let listener = traced.listener(&netns, port);
    let figures = describe("nginx", listener);
    assert_eq!(listener.accepted, opens, "{figures}\n{listener:#?}");
    assert_eq!(listener.handshakes, opens, "{figures}\n{listener:#?}");
    assert_eq!(acceptor_pids(listener), workers, "{listener:#?}");
    assert_eq!(
        listener.acceptors.iter().map(|a| a.accepted).sum::<u64>(),
        opens,
        "{listener:#?}"
    );
    // Two workers on two queues keep up with 20 clients: nothing waits long to be accepted.
    assert!(ms(listener.accept_wait_us.p99) < 20.0, "{figures}");
    // The report's members of the SO_REUSEPORT group (`sockets`): two sockets, each with its
    // own inode and queue. Read from the JSON rather than the typed field so that this file
    // compiles whether or not the field is in the library yet.
    let json = serde_json::to_value(listener).expect("serialise the listener");
    let sockets = json["sockets"]
        .as_array()
        .unwrap_or_else(|| panic!("no sockets in the listener: {json:#}"));
    println!("nginx sockets: {sockets:?}");
    let inodes: BTreeSet<u64> = sockets.iter().filter_map(|s| s["inode"].as_u64()).collect();
    assert_eq!((sockets.len(), inodes.len()), (2, 2), "{sockets:#?}");
    assert!(
        sockets
            .iter()
            .all(|s| s["backlog"] == 1024 && s["drops"] == 0),
        "{sockets:#?}"
    );
    assert_eq!(traced.report.lost_events, 0);
}

/// The namespace's `Tcp: PassiveOpens`: connections that completed their handshake.
fn passive_opens(netns: &Netns) -> u64 {
    let out =
        run_ok(Command::new("ip").args(["netns", "exec", &netns.name, "cat", "/proc/net/snmp"]));
    let snmp = String::from_utf8_lossy(&out.stdout);
    parse_pairs(&snmp, "Tcp:", &["PassiveOpens"])["PassiveOpens"]
}

/// How many sockets listen on `port` in `netns`.
fn listening_sockets(netns: &Netns, port: u16) -> usize {
    let out = run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &netns.name,
        "ss",
        "-Hltn",
        &format!("sport = :{port}"),
    ]));
    String::from_utf8_lossy(&out.stdout).lines().count()
}

//! `synscope serve` scraped by a real Prometheus: load with a known accept delay in a fresh
//! namespace, then Prometheus' own `histogram_quantile` over synscope's buckets must find that
//! delay, and the page must pass `promtool check metrics`.

use std::{process::Command, time::Duration};

use serde_json::Value;
use synscope_tests::{
    Netns,
    background::{Background, free_port, http_get},
    require_root, run_ok, scenario, synscope_bin, tempdir,
};

const PORT: u16 = 7150;
const CONNECTIONS: u64 = 30;
/// Each connection waits this long in the accept queue: inside the (0.1 s, 0.25 s] bucket.
const DELAY_MS: u64 = 120;

/// Prometheus' instant query API: the first result's value, None when the result is empty.
fn query(prometheus: &str, expr: &str) -> Option<f64> {
    let out = run_ok(Command::new("curl").args([
        "-fsS",
        "-G",
        &format!("http://{prometheus}/api/v1/query"),
        "--data-urlencode",
        &format!("query={expr}"),
    ]));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("Prometheus answers JSON");
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    let value = answer["data"]["result"].get(0)?["value"][1].as_str()?;
    Some(value.parse().expect("a number"))
}

/// A sample of synscope's own page, by its series' name and labels as written.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
        .parse()
        .expect("a number")
}

#[test]
fn prometheus_finds_the_known_accept_delay() {
    require_root();
    let netns = Netns::new("serve");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Background::start(
        "synscope serve",
        Command::new(synscope_bin()).args([
            "serve",
            "--listen",
            &metrics_addr,
            "--port",
            &PORT.to_string(),
        ]),
    );
    let healthz = format!("http://{metrics_addr}/healthz");
    serve.wait_until(Duration::from_secs(60), |_| http_get(&healthz).is_some());

    let dir = tempdir();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: synscope\n    static_configs:\n      \
             - targets: ['{metrics_addr}']\n"
        ),
    )
    .unwrap();
    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let mut prometheus = Background::start(
        "prometheus",
        Command::new("prometheus").args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={prometheus_addr}"),
        ]),
    );
    prometheus.wait_until(Duration::from_secs(60), |_| {
        http_get(&format!("http://{prometheus_addr}/-/ready")).is_some()
    });
    prometheus.wait_until(Duration::from_secs(30), |_| {
        query(&prometheus_addr, "up{job=\"synscope\"}") == Some(1.0)
    });

    run_ok(Command::new("sh").arg("-c").arg(scenario!(
        &netns,
        "--listen",
        &format!("127.0.0.1:{PORT}"),
        "--connections",
        &CONNECTIONS.to_string(),
        "--accept-delay-ms",
        &DELAY_MS.to_string()
    )));
    let selector = format!("{{netns=\"{}\",port=\"{PORT}\"}}", netns.inode);
    // A few scrapes after the last accept, Prometheus holds them all.
    prometheus.wait_until(Duration::from_secs(30), |_| {
        query(
            &prometheus_addr,
            &format!("synscope_accepted_total{selector}"),
        ) == Some(CONNECTIONS as f64)
    });

    // synscope's own figures: every wait in the (0.1 s, 0.25 s] bucket, the mean at the delay
    // plus a wake-up well under 30 ms.
    let page = http_get(&format!("http://{metrics_addr}/metrics")).expect("/metrics answers");
    let labels = format!("netns=\"{}\",port=\"{PORT}\"", netns.inode);
    let bucket = |le: &str| {
        sample(
            &page,
            &format!("synscope_accept_queue_wait_seconds_bucket{{{labels},le=\"{le}\"}}"),
        )
    };
    assert_eq!(bucket("0.1"), 0.0, "{page}");
    assert_eq!(bucket("0.25"), CONNECTIONS as f64, "{page}");
    let count = sample(
        &page,
        &format!("synscope_accept_queue_wait_seconds_count{{{labels}}}"),
    );
    let sum = sample(
        &page,
        &format!("synscope_accept_queue_wait_seconds_sum{{{labels}}}"),
    );
    assert_eq!(count, CONNECTIONS as f64);
    let mean = sum / count;
    let delay = DELAY_MS as f64 / 1000.0;
    assert!(
        (delay..delay + 0.03).contains(&mean),
        "mean accept wait {mean} s, delay {delay} s"
    );
    assert_eq!(
        sample(&page, &format!("synscope_syn_received_total{{{labels}}}")),
        CONNECTIONS as f64
    );

    // Prometheus' p99 over synscope's buckets: interpolated inside the delay's bucket.
    let p99 = query(
        &prometheus_addr,
        &format!(
            "histogram_quantile(0.99, rate(synscope_accept_queue_wait_seconds_bucket{selector}[1m]))"
        ),
    )
    .expect("a p99 for the port");
    assert!(
        p99 > 0.1 && p99 <= 0.25,
        "Prometheus' accept wait p99 {p99} s, outside the bucket of the {delay} s delay"
    );
    // The handshake on loopback stays in the sub-millisecond buckets.
    let handshake_p50 = query(
        &prometheus_addr,
        &format!(
            "histogram_quantile(0.5, rate(synscope_handshake_duration_seconds_bucket{selector}[1m]))"
        ),
    )
    .expect("a handshake p50");
    assert!(handshake_p50 < 0.001, "handshake p50 {handshake_p50} s");

    // The page itself passes Prometheus' linter.
    let page_file = dir.join("metrics.prom");
    std::fs::write(&page_file, &page).unwrap();
    let lint = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "promtool check metrics < '{}'",
            page_file.display()
        ))
        .output()
        .expect("run promtool");
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    prometheus.stop();
    let status = serve.stop();
    assert!(status.success(), "serve exited {status}:\n{}", serve.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_refuses_report_options_and_a_busy_port() {
    require_root();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(synscope_bin())
        .args(["serve", "--listen", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    let out = Command::new(synscope_bin())
        .args(["serve", "--fail-if", "drops > 0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("do not apply to it"), "{stderr}");
}

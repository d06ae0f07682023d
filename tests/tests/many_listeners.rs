//! Many listeners: 10,000 listening ports in 100 namespaces, each connected to and accepted
//! once, one of them many times. The JSON report keeps every listener; the text report shows
//! the busiest and folds the rest into one counted line; the Prometheus report file and
//! `synscope serve`'s page keep a bounded number of series, the rest folded into
//! `port="other"` per namespace and counted; both pass `promtool check metrics`.

use std::{collections::BTreeSet, process::Command, time::Duration};

use synscope_tests::{
    Netns,
    background::{Background, free_port, http_get},
    require_root, run_ok, shell, stage_counts, synscope_bin, tempdir,
};

const NAMESPACES: usize = 100;
const PER_NAMESPACE: u16 = 100;
const FIRST_PORT: u16 = 21000;
/// Connections to the first listener of the first namespace: the busiest by far.
const BUSY: u64 = 50;
/// `serve --max-listeners`.
const SERVE_LIMIT: usize = 50;
/// The Prometheus report file's listeners with series of their own (probe-user's
/// `report::prometheus::OWN_SERIES`).
const FILE_SERIES: usize = 200;

/// The `(netns, port)` label values of a metric's samples on an exposition page.
fn series_of(page: &str, metric: &str) -> BTreeSet<(String, String)> {
    page.lines()
        .filter_map(|line| line.strip_prefix(metric)?.strip_prefix('{'))
        .map(|labels| {
            let value = |name: &str| {
                let start = labels.find(&format!("{name}=\"")).expect("the label") + name.len() + 2;
                let end = start + labels[start..].find('"').expect("a closing quote");
                labels[start..end].to_owned()
            };
            (value("netns"), value("port"))
        })
        .collect()
}

/// The sum of a metric's samples on an exposition page.
fn total(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .map(|line| {
            line.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .expect("a sample value")
        })
        .sum()
}

fn promtool_check(page: &str) {
    let file = tempdir().join("page.prom");
    std::fs::write(&file, page).unwrap();
    let lint = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < '{}'", file.display()))
        .output()
        .expect("run promtool");
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

#[test]
fn ten_thousand_listeners_stay_readable_and_bounded() {
    require_root();
    let namespaces: Vec<Netns> = (0..NAMESPACES).map(|_| Netns::new("many")).collect();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut serve = Background::start(
        "synscope serve",
        Command::new(synscope_bin()).args([
            "serve",
            "--listen",
            &metrics_addr,
            "--max-listeners",
            &SERVE_LIMIT.to_string(),
        ]),
    );
    let healthz = format!("http://{metrics_addr}/healthz");
    serve.wait_until(Duration::from_secs(60), |_| http_get(&healthz).is_some());

    let mut script = String::new();
    for (i, netns) in namespaces.iter().enumerate() {
        let mut argv = netns.exec();
        argv.extend(
            [
                env!("CARGO_BIN_EXE_scenario"),
                "listeners",
                "--first-port",
                &FIRST_PORT.to_string(),
                "--count",
                &PER_NAMESPACE.to_string(),
                "--busy",
                &(if i == 0 { BUSY } else { 1 }).to_string(),
            ]
            .map(str::to_owned),
        );
        // One namespace after another: a burst of ten thousand connections at once is the
        // benchmark's business (events lost at the highest rate), not this test's.
        script.push_str(&format!("{}\n", shell(&argv)));
    }
    let dir = tempdir();
    let (json, prom) = (dir.join("report.json"), dir.join("report.prom"));
    let output = run_ok(
        Command::new(synscope_bin())
            .args(["run", "--output"])
            .arg(&json)
            .arg("--output")
            .arg(&prom)
            .args(["--", "sh", "-c", &script]),
    );

    // JSON: every listener, each with its connections at every stage.
    let report =
        synscope_tests::parse_report(&std::fs::read_to_string(&json).expect("a JSON report"));
    assert_eq!(report.lost_events, 0, "events lost");
    let inodes: BTreeSet<u32> = namespaces.iter().map(|n| n.inode).collect();
    let ours: Vec<_> = report
        .listeners
        .iter()
        .filter(|l| inodes.contains(&l.netns))
        .collect();
    assert_eq!(ours.len(), NAMESPACES * usize::from(PER_NAMESPACE));
    let busiest = (namespaces[0].inode, FIRST_PORT);
    for listener in &ours {
        let expected = if (listener.netns, listener.port) == busiest {
            BUSY
        } else {
            1
        };
        for (stage, count) in stage_counts(listener) {
            assert_eq!(count, expected, "{stage}: {listener:#?}");
        }
    }
    let all = report.listeners.len();

    // Text: the busiest shown, the rest folded into one line that counts them.
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("port {FIRST_PORT} on")),
        "the busiest listener is shown:\n{text}"
    );
    let folded = text
        .lines()
        .find(|l| l.contains("more listeners with less traffic are left out"))
        .unwrap_or_else(|| panic!("no folded line:\n{text}"));
    assert!(
        folded
            .trim_start()
            .starts_with(&format!("{} more", all - 20)),
        "{folded}"
    );
    assert!(
        text.lines().count() < 1000,
        "{} lines",
        text.lines().count()
    );

    // The Prometheus report file: the busiest listeners' own series, the rest per namespace.
    let page = std::fs::read_to_string(&prom).expect("a Prometheus report");
    promtool_check(&page);
    let series = series_of(&page, "synscope_accepted_total");
    let own = series.iter().filter(|(_, port)| port != "other").count();
    assert_eq!(own, FILE_SERIES, "series of their own in the file");
    assert!(
        series.len() <= FILE_SERIES + NAMESPACES + 1,
        "{}",
        series.len()
    );
    assert!(page.contains(&format!(
        "synscope_folded_listeners {}\n",
        all - FILE_SERIES
    )));
    let accepted_ours: u64 = ours.iter().map(|l| l.accepted).sum();
    assert!(total(&page, "synscope_accepted_total") >= accepted_ours as f64);

    // serve: at most --max-listeners of their own, the rest folded and counted.
    let metrics = http_get(&format!("http://{metrics_addr}/metrics")).expect("a metrics page");
    // Its memory: a histogram costs 16 KB empty, and there would be a dozen per listener.
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid())).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    println!("synscope serve: peak RSS {} MB", peak_kb / 1024);
    assert!(peak_kb < 512 * 1024, "serve's peak RSS {peak_kb} kB");
    serve.stop();
    promtool_check(&metrics);
    let series = series_of(&metrics, "synscope_accepted_total");
    let own = series.iter().filter(|(_, port)| port != "other").count();
    assert!(own <= SERVE_LIMIT, "{own} series of their own on /metrics");
    assert!(
        series.len() <= SERVE_LIMIT + NAMESPACES + 1,
        "{}",
        series.len()
    );
    let folded_total = total(&metrics, "synscope_folded_listeners_total");
    assert!(
        folded_total >= (ours.len() - SERVE_LIMIT) as f64,
        "{folded_total} folded on /metrics"
    );
    assert!(total(&metrics, "synscope_accepted_total") >= accepted_ours as f64);
}

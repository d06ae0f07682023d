//! The files that run synscope on every Kubernetes node (deploy/): the DaemonSet and its Service,
//! the ServiceMonitor, and the Grafana dashboard, checked against each other and against the
//! metrics `synscope serve` exposes (its golden exposition). No root, no cluster: the files are
//! only read.
//!
//! - The DaemonSet runs `synscope serve --listen ADDR:PORT`; the containerPort named `metrics`,
//!   the scrape annotations, the probes, the Service and the ServiceMonitor all name that port.
//! - Every host path is mounted read-only.
//! - Every metric the dashboard queries is one the golden exposition has (a histogram family
//!   `NAME` standing for `NAME_bucket`, `NAME_sum` and `NAME_count`), and the dashboard queries
//!   at least every histogram and every drop counter, so the check cannot pass on an empty
//!   dashboard; every panel queries the data source chosen in `${datasource}`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The golden `/metrics` exposition of `synscope serve`, written by its own tests.
const GOLDEN: &str = "probe-user/src/report/golden/serve.prom";
/// The data source every panel must query: the dashboard's `datasource` variable.
const DATASOURCE: &str = "${datasource}";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let full = workspace().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// Every YAML document of a manifest file (the empty ones, as before a leading `---`, left out).
fn documents(path: &str) -> Vec<Yaml> {
    let docs = YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let docs: Vec<Yaml> = docs
        .into_iter()
        .filter(|d| !d.is_null() && !d.is_badvalue())
        .collect();
    assert!(!docs.is_empty(), "{path} holds no YAML document");
    docs
}

/// The one document of this kind.
fn the<'a>(docs: &'a [Yaml], path: &str, kind: &str) -> &'a Yaml {
    let found: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "{path} must hold exactly one {kind}");
    found[0]
}

fn string<'a>(node: &'a Yaml, what: &str) -> &'a str {
    node.as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, is {node:?}"))
}

fn list<'a>(node: &'a Yaml, what: &str) -> &'a [Yaml] {
    node.as_vec()
        .unwrap_or_else(|| panic!("{what} must be a list, is {node:?}"))
}

/// Whether every label of `selector` (a mapping) is set, to the same value, in `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_hash().expect("a selector must be a mapping");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| &labels[string(k, "a label")] == v)
}

/// A port of a probe or of a Service's targetPort: the container port's name, or its number.
fn names_port(port: &Yaml, name: &str, number: i64) -> bool {
    port.as_str() == Some(name) || port.as_i64() == Some(number)
}

/// The DaemonSet's port: from `--listen ADDR:PORT` (or `--listen=ADDR:PORT`) in its args.
fn listen_port(args: &[&str]) -> i64 {
    let listen = args
        .iter()
        .enumerate()
        .find_map(|(i, arg)| match arg.strip_prefix("--listen") {
            Some("") => args.get(i + 1).copied(),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        })
        .unwrap_or_else(|| panic!("the container's args {args:?} have no --listen ADDR:PORT"));
    let (_, port) = listen
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("--listen {listen} is not ADDR:PORT"));
    port.parse()
        .unwrap_or_else(|e| panic!("--listen {listen}: port {port}: {e}"))
}

#[test]
fn the_daemonset_serves_and_is_probed_on_the_port_it_declares() {
    let path = "deploy/daemonset.yaml";
    let docs = documents(path);
    for doc in &docs {
        let kind = string(&doc["kind"], "kind");
        let namespace = match kind {
            "Namespace" => &doc["metadata"]["name"],
            _ => &doc["metadata"]["namespace"],
        };
        assert_eq!(
            namespace.as_str(),
            Some("synscope"),
            "{path}: the {kind} must be in the namespace synscope"
        );
    }
    let daemonset = the(&docs, path, "DaemonSet");
    assert_eq!(daemonset["apiVersion"].as_str(), Some("apps/v1"));
    let template = &daemonset["spec"]["template"];
    assert!(
        selects(
            &daemonset["spec"]["selector"]["matchLabels"],
            &template["metadata"]["labels"]
        ),
        "the DaemonSet's selector must match its pods' labels"
    );
    let pod = &template["spec"];
    assert_eq!(
        pod["hostPID"].as_bool(),
        Some(true),
        "hostPID: /proc/PID/ns/net is how synscope reaches other pods' network namespaces"
    );
    assert!(
        list(&pod["tolerations"], "tolerations")
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_badvalue()),
        "a toleration of every taint (operator: Exists, no key) runs synscope on every node"
    );
    if let Some(account) = pod["serviceAccountName"].as_str() {
        let account_doc = the(&docs, path, "ServiceAccount");
        assert_eq!(account_doc["metadata"]["name"].as_str(), Some(account));
    }

    let containers = list(&pod["containers"], "containers");
    let container = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("synscope"))
        .expect("the DaemonSet has a container named synscope");
    assert!(!string(&container["image"], "image").is_empty());
    let args: Vec<&str> = list(&container["args"], "args")
        .iter()
        .map(|a| string(a, "an arg"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&"serve"),
        "the container runs `synscope serve`: {args:?}"
    );
    let port = listen_port(&args);

    let ports = list(&container["ports"], "ports");
    let metrics = ports
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("the container declares a port named metrics");
    assert_eq!(
        metrics["containerPort"].as_i64(),
        Some(port),
        "the containerPort named metrics must be the port of --listen"
    );

    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str()),
        "the scrape annotation's port (a string) must be the port of --listen"
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        if probe == "startupProbe" && container[probe].is_badvalue() {
            continue;
        }
        assert_eq!(
            get["path"].as_str(),
            Some("/healthz"),
            "the {probe} must GET /healthz"
        );
        assert!(
            names_port(&get["port"], "metrics", port),
            "the {probe} must hit the metrics port ({port}), not {:?}",
            get["port"]
        );
    }

    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert!(
        list(&security["capabilities"]["drop"], "capabilities.drop")
            .iter()
            .any(|c| c.as_str() == Some("ALL")),
        "every capability not added must be dropped"
    );
    // Exactly what synscope asks of a root container on a current node (kernel 5.11 or newer,
    // kptr_restrict 1, Debian's perf_event_paranoid): its own capability check decides.
    let node = synscope::host::preflight::Host {
        effective: 0,
        root: true,
        kernel: (6, 1),
        kptr_restrict: 1,
        perf_event_paranoid: 3,
        tracefs_open: false,
        memlock_unlimited: false,
    };
    let needed: BTreeSet<String> = node
        .needs()
        .iter()
        .map(|need| need.capability.name.trim_start_matches("CAP_").to_owned())
        .collect();
    let added: BTreeSet<String> = list(&security["capabilities"]["add"], "capabilities.add")
        .iter()
        .map(|c| string(c, "a capability").to_owned())
        .collect();
    assert_eq!(
        added, needed,
        "the container holds what synscope needs, and no more"
    );

    let volumes: BTreeSet<&str> = list(&pod["volumes"], "volumes")
        .iter()
        .map(|v| string(&v["name"], "a volume's name"))
        .collect();
    let mounts = list(&container["volumeMounts"], "volumeMounts");
    assert!(!mounts.is_empty(), "the container mounts BTF and tracefs");
    for mount in mounts {
        let name = string(&mount["name"], "a volume mount's name");
        assert!(volumes.contains(name), "the mount {name} has no volume");
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "the volume mount {name} must be readOnly"
        );
    }

    let service = the(&docs, path, "Service");
    assert_eq!(service["spec"]["clusterIP"].as_str(), Some("None"));
    assert!(
        selects(
            &service["spec"]["selector"],
            &template["metadata"]["labels"]
        ),
        "the Service must select the DaemonSet's pods"
    );
    let service_port = list(&service["spec"]["ports"], "the Service's ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .expect("the Service has a port named metrics");
    assert_eq!(service_port["port"].as_i64(), Some(port));
    assert!(
        names_port(&service_port["targetPort"], "metrics", port),
        "the Service's targetPort must be the container's metrics port"
    );
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port_of_the_service() {
    let path = "deploy/servicemonitor.yaml";
    let docs = documents(path);
    let monitor = the(&docs, path, "ServiceMonitor");
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let endpoints = list(
        &monitor["spec"]["endpoints"],
        "the ServiceMonitor's endpoints",
    );
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        assert_eq!(
            endpoint["port"].as_str(),
            Some("metrics"),
            "a ServiceMonitor names the Service's port: metrics"
        );
        if !endpoint["path"].is_badvalue() {
            assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
        }
    }

    let manifests = documents("deploy/daemonset.yaml");
    let service = the(&manifests, "deploy/daemonset.yaml", "Service");
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor must select the Service synscope"
    );
    let namespace = string(&service["metadata"]["namespace"], "the Service's namespace");
    assert!(
        monitor["metadata"]["namespace"].as_str() == Some(namespace)
            || list(
                &monitor["spec"]["namespaceSelector"]["matchNames"],
                "namespaceSelector.matchNames"
            )
            .iter()
            .any(|n| n.as_str() == Some(namespace)),
        "the ServiceMonitor must look in the namespace {namespace}"
    );
}

/// The golden exposition's metric families (`# TYPE NAME KIND`), kind by name.
fn golden_families() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(workspace().join(GOLDEN))
        .unwrap_or_else(|e| panic!("{GOLDEN} (the golden exposition of `synscope serve`): {e}"));
    let families: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next()) {
                (Some(name), Some(kind)) => (name.to_owned(), kind.to_owned()),
                _ => panic!("{GOLDEN}: malformed line `# TYPE {rest}`"),
            }
        })
        .collect();
    assert!(!families.is_empty(), "{GOLDEN} has no `# TYPE` line");
    families
}

/// The series names a family is queried by, in Prometheus text or OpenMetrics.
fn series_names(name: &str, kind: &str) -> Vec<String> {
    let with = |suffix: &str| format!("{name}{suffix}");
    match kind {
        "histogram" => vec![with("_bucket"), with("_sum"), with("_count")],
        "gaugehistogram" => vec![with("_bucket"), with("_gsum"), with("_gcount")],
        "summary" => vec![name.to_owned(), with("_sum"), with("_count")],
        // OpenMetrics names a counter's family without the `_total` its samples carry.
        "counter" if !name.ends_with("_total") => vec![with("_total")],
        "info" => vec![with("_info")],
        _ => vec![name.to_owned()],
    }
}

/// Every `synscope_...` metric name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("synscope_") {
        let before = rest[..at].chars().next_back();
        let name: String = rest[at..].chars().take_while(|&c| is_name(c)).collect();
        rest = &rest[at + name.len()..];
        if !before.is_some_and(is_name) {
            names.push(name);
        }
    }
    names
}

/// Whether a `datasource` field refers to the dashboard's `datasource` variable.
fn is_the_datasource(datasource: &Value) -> bool {
    datasource.as_str() == Some(DATASOURCE)
        || datasource["uid"].as_str() == Some(DATASOURCE)
            && datasource["type"]
                .as_str()
                .is_none_or(|kind| kind == "prometheus")
}

/// The dashboard's panels, those in rows included (rows themselves left out).
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if panel["type"] == "row" {
            stack.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            all.push(panel);
        }
    }
    all
}

#[test]
fn the_dashboard_queries_only_metrics_that_synscope_serve_exposes() {
    let families = golden_families();
    let exposed: BTreeSet<String> = families
        .iter()
        .flat_map(|(name, kind)| series_names(name, kind))
        .collect();
    let histograms: Vec<&String> = families
        .iter()
        .filter(|(_, kind)| *kind == "histogram")
        .map(|(name, _)| name)
        .collect();
    let drop_counters: Vec<&String> = families
        .iter()
        .filter(|(name, kind)| {
            *kind == "counter" && (name.contains("drop") || name.contains("overflow"))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        histograms.len() >= 3 && drop_counters.len() >= 2,
        "{GOLDEN} must expose the three latency histograms and the drop counters: \
         histograms {histograms:?}, drop counters {drop_counters:?}"
    );

    let path = "deploy/grafana-dashboard.json";
    let dashboard: Value =
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(dashboard["schemaVersion"], 39);

    // What each query is, for the messages: "panel TITLE" or "variable NAME".
    let mut queries: Vec<(String, String)> = Vec::new();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("the dashboard has template variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("the dashboard has no template variable {name}"))
    };
    let source = variable("datasource");
    assert_eq!(source["type"], "datasource");
    assert_eq!(source["query"], "prometheus");
    for name in ["netns", "port"] {
        assert_eq!(variable(name)["type"], "query", "the variable {name}");
    }
    for var in variables.iter().filter(|v| v["type"] == "query") {
        let name = var["name"].as_str().unwrap_or("?");
        assert!(
            is_the_datasource(&var["datasource"]),
            "the variable {name} must query {DATASOURCE}, not {}",
            var["datasource"]
        );
        let query = match &var["query"] {
            Value::String(query) => query.as_str(),
            query => query["query"].as_str().unwrap_or_default(),
        };
        for text in [query, var["definition"].as_str().unwrap_or_default()] {
            queries.push((format!("variable {name}"), text.to_owned()));
        }
    }

    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(panel["id"].as_i64().expect("every panel has an id")),
            "two panels have the id of the panel {title}"
        );
        assert!(
            is_the_datasource(&panel["datasource"]),
            "the panel {title} must query {DATASOURCE}, not {}",
            panel["datasource"]
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "the panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.is_empty(),
                "the panel {title} has a query without expr"
            );
            if !target["datasource"].is_null() {
                assert!(
                    is_the_datasource(&target["datasource"]),
                    "a query of the panel {title} must use {DATASOURCE}"
                );
            }
            queries.push((format!("panel {title}"), expr.to_owned()));
        }
    }

    let mut queried = BTreeSet::new();
    let mut unknown = Vec::new();
    for (whose, expr) in &queries {
        for name in metric_names(expr) {
            if !exposed.contains(&name) {
                unknown.push(format!("{name} (in {whose})"));
            }
            queried.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "{path} queries metrics that {GOLDEN} does not expose:\n  {}\nexposed: {exposed:?}",
        unknown.join("\n  ")
    );
    let mut missing: Vec<String> = histograms
        .iter()
        .map(|name| format!("{name}_bucket"))
        .chain(
            drop_counters
                .iter()
                .flat_map(|name| series_names(name, "counter")),
        )
        .filter(|name| !queried.contains(name))
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "{path} must chart every latency histogram and drop counter; it does not query {missing:?}"
    );
}

#[test]
fn metric_names_are_found_whole_and_only_as_names() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(synscope_accept_queue_wait_seconds_bucket{port=~"$port"}[5m]))) / synscope_x2_total"#
        ),
        [
            "synscope_accept_queue_wait_seconds_bucket",
            "synscope_x2_total"
        ]
    );
    assert!(metric_names(r#"up{job="not_synscope_here"}"#).is_empty());
    assert_eq!(
        series_names("synscope_syn_received", "counter"),
        ["synscope_syn_received_total"]
    );
    assert_eq!(
        series_names("synscope_syn_received_total", "counter"),
        ["synscope_syn_received_total"]
    );
}

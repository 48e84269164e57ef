//! The ready-to-use operations files in `docs/ops/` agree with the binary: the
//! systemd unit's command line is one `gatehouse serve` accepts, its stop timeout
//! leaves room for the drain and the last saves, and its descriptor limit is above
//! the connection limit. The Grafana dashboard and the Prometheus alert rules read
//! only metrics that a live server's `/metrics` exposes, each the way its type
//! wants (counters and histograms through `rate`/`increase`), and the dashboard
//! shows every metric there is. Where `promtool` (Debian package `prometheus`) is
//! installed, it checks the rules and the dashboard's queries, and unit-tests that
//! the alerts fire on the failures they name; without it those tests print a notice
//! and pass, except under `CI`, where a missing promtool is a failure.

#![allow(clippy::unwrap_used)]

mod process;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use process::ServerProcess;

/// `[Section]` → key → values (a key may repeat), comments and blank lines skipped.
fn unit(text: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut sections: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_runs_serve_stops_gracefully_and_allows_enough_descriptors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ops/gatehouse.service");
    let unit = unit(&std::fs::read_to_string(path).unwrap());
    let service = &unit["Service"];
    let one = |key: &str| service[key].last().unwrap().as_str();

    // The command line: `gatehouse serve` with options the binary accepts (a missing
    // config file is exit 1, an unknown option would be clap's 2).
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert!(
        exec[0].ends_with("/gatehouse") && exec[1] == "serve",
        "{exec:?}"
    );
    let missing = std::env::temp_dir().join("gatehouse-ops-test-missing.toml");
    let args: Vec<String> = exec[1..]
        .iter()
        .map(|a| {
            if a.ends_with(".toml") {
                missing.display().to_string()
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let output = process::gatehouse().args(&args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));

    // Stopping: SIGTERM, with time for the drain and the last saves.
    assert_eq!(one("KillSignal"), "SIGTERM");
    let stop = Duration::from_secs(one("TimeoutStopSec").parse().unwrap());
    let supervisor = gatehouse::config::SupervisorConfig::default();
    let drain = supervisor.drain_grace + supervisor.drain_timeout;
    let flush = gatehouse_store::StoreConfig::default().flush_timeout;
    assert!(
        stop > drain + flush,
        "TimeoutStopSec {stop:?} <= grace and drain {drain:?} + {flush:?}"
    );
    assert!(
        one("ExecReload").contains("-HUP"),
        "reload is SIGHUP (certificates)"
    );
    assert_eq!(one("Restart"), "on-failure");

    // One descriptor per connection, and then some.
    let nofile: usize = one("LimitNOFILE").parse().unwrap();
    let max = gatehouse::config::ServerConfig::default().max_connections;
    assert!(
        nofile >= max + 1024,
        "LimitNOFILE {nofile} for {max} connections"
    );
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
}

// ---------------------------------------------------------------------------
// The Grafana dashboard and the Prometheus alert rules against a live /metrics.

/// A file in `docs/ops/`.
fn ops_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/ops")
        .join(name)
}

/// What a live server's `/metrics` exposes: each sample name with the type of its
/// family (`gatehouse_kicks_total` → `counter`), and each family with its samples.
struct Exposition {
    sample_types: BTreeMap<String, String>,
    families: BTreeMap<String, BTreeSet<String>>,
    /// Each family's type and label names (`le` left out).
    family_labels: BTreeMap<String, (String, BTreeSet<String>)>,
}

impl Exposition {
    /// Adds `other`'s families whose names start with `prefix`.
    fn add_families(&mut self, other: Exposition, prefix: &str) {
        let ours = |name: &String| name.starts_with(prefix);
        self.sample_types
            .extend(other.sample_types.into_iter().filter(|(n, _)| ours(n)));
        self.families
            .extend(other.families.into_iter().filter(|(n, _)| ours(n)));
        self.family_labels
            .extend(other.family_labels.into_iter().filter(|(n, _)| ours(n)));
    }

    fn parse(text: &str) -> Exposition {
        let mut sample_types = BTreeMap::new();
        let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut family_labels: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
        let (mut family, mut kind) = (String::new(), String::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').unwrap();
                (family, kind) = (name.to_owned(), t.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let labels = family_labels
                .entry(family.clone())
                .or_insert_with(|| (kind.clone(), BTreeSet::new()));
            if let Some((_, rest)) = line.split_once('{') {
                let inside = rest.split('}').next().unwrap();
                for pair in inside.split(',') {
                    let key = pair.split('=').next().unwrap();
                    if key != "le" {
                        labels.1.insert(key.to_owned());
                    }
                }
            }
            assert!(
                name.starts_with(&family),
                "sample {name} outside its family {family}"
            );
            sample_types.insert(name.to_owned(), kind.clone());
            families
                .entry(family.clone())
                .or_default()
                .insert(name.to_owned());
        }
        Exposition {
            sample_types,
            families,
            family_labels,
        }
    }
}

/// The `/metrics` of a live arena server (the default service), scraped once for
/// every test here; the server is stopped right after.
fn live_metrics() -> &'static Exposition {
    static METRICS: OnceLock<Exposition> = OnceLock::new();
    METRICS.get_or_init(|| {
        let dir = process::scratch("ops-metrics");
        let config = process::arena_config(&dir, "");
        let mut command = process::gatehouse();
        command
            .args(process::SERVE_ON_FREE_PORTS)
            .arg("--config")
            .arg(&config)
            // No token: the read endpoints are open.
            .env_remove("GATEHOUSE_ADMIN_TOKEN");
        let server = ServerProcess::spawn(command);
        let admin = server.admin_addr().expect("an admin listener");
        let text = process::http_get(admin, "/metrics");
        drop(server);
        let mut exposition = Exposition::parse(&text);
        // The cluster's families come from a node of one: a bench server (arena in a
        // cluster needs PostgreSQL) whose NATS is nowhere, which exports them all
        // the same.
        let mut command = process::gatehouse();
        command
            .args(process::SERVE_ON_FREE_PORTS)
            .args(["--service", "bench", "--node", "ops", "--nats", "nats://127.0.0.1:9"])
            .env_remove("GATEHOUSE_ADMIN_TOKEN");
        let node = ServerProcess::spawn(command);
        let text = process::http_get(node.admin_addr().expect("an admin listener"), "/metrics");
        drop(node);
        exposition.add_families(Exposition::parse(&text), "gatehouse_cluster_");
        assert!(
            exposition.family_labels.contains_key("gatehouse_cluster_messages_dropped"),
            "a node's /metrics has the cluster's:\n{text}"
        );
        assert!(
            exposition.sample_types.contains_key("gatehouse_hub_up")
                && exposition.sample_types.contains_key("gatehouse_save_queued")
                && exposition.sample_types.contains_key("gatehouse_rooms"),
            "an arena server's /metrics has the server's, the writer's and the rooms' metrics:\n{text}"
        );
        exposition
    })
}

/// Each `gatehouse_…` metric name in a PromQL expression, with where it starts.
fn metric_names(expr: &str) -> Vec<(usize, &str)> {
    let is_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = expr[from..].find("gatehouse_") {
        let start = from + found;
        let end = expr[start..]
            .find(|c: char| !is_name(c))
            .map_or(expr.len(), |n| start + n);
        let preceded = expr[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !preceded {
            names.push((start, &expr[start..end]));
        }
        from = end;
    }
    names
}

/// The function whose argument starts right at `start`: `rate` in `rate(x[5m])`.
fn enclosing_function(expr: &str, start: usize) -> &str {
    let Some(before) = expr[..start].trim_end().strip_suffix('(') else {
        return "";
    };
    let before = before.trim_end();
    let name_start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |n| n + 1);
    &before[name_start..]
}

/// Every metric `expr` names is a sample of the live `/metrics`, counters and
/// histogram series are only read through `rate`/`irate`/`increase`, and gauges
/// never are. Returns the names.
fn check_expr<'e>(what: &str, expr: &'e str, metrics: &Exposition) -> Vec<&'e str> {
    let names = metric_names(expr);
    for &(start, name) in &names {
        let Some(kind) = metrics.sample_types.get(name) else {
            let similar: Vec<&String> = metrics
                .sample_types
                .keys()
                .filter(|s| s.starts_with(name) || name.starts_with(s.as_str()))
                .collect();
            panic!("{what}: {name} is not in the live /metrics (similar: {similar:?}) in {expr}");
        };
        let function = enclosing_function(expr, start);
        let through_rate = matches!(function, "rate" | "irate" | "increase");
        match kind.as_str() {
            "counter" | "histogram" => assert!(
                through_rate,
                "{what}: the {kind} series {name} is read raw (in {function:?}), not through rate or increase: {expr}"
            ),
            _ => assert!(
                !through_rate,
                "{what}: the {kind} {name} is read through {function}: {expr}"
            ),
        }
    }
    names.into_iter().map(|(_, name)| name).collect()
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(ops_file("grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// The dashboard's panels, rows' own panels (when collapsed) included.
fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            panels.extend(inner);
        }
    }
    panels
}

/// `(panel title, refId, expr)` of every query of the dashboard.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["refId"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    queries
}

#[test]
fn the_dashboard_graphs_every_live_metric_by_names_the_server_exports() {
    let metrics = live_metrics();
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap() >= 36,
        "an importable schema"
    );
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));

    // The variables: a Prometheus data source, and the instances to show.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let instance = variable("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    let instance_query = instance["definition"].as_str().unwrap();
    let mut used: BTreeSet<&str> = check_expr("$instance", instance_query, metrics)
        .into_iter()
        .collect();
    assert!(!used.is_empty(), "{instance_query}");

    // Every panel queries the chosen data source with non-empty expressions over
    // the chosen instances, and fits the 24-column grid without overlapping another.
    let panels = all_panels(&dashboard);
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut graphs = 0;
    for panel in &panels {
        let title = panel["title"].as_str().unwrap();
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {grid}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            if let Some(other) = cells.insert(cell, title.to_owned()) {
                panic!("{title} overlaps {other} at {cell:?}");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{title} has no unit"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title} has an empty query");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let names = check_expr(title, expr, metrics);
            assert!(!names.is_empty(), "{title}: no gatehouse metric in {expr}");
            for (start, name) in metric_names(expr) {
                let selector = &expr[start + name.len()..];
                assert!(
                    selector.starts_with('{')
                        && selector[..selector.find('}').unwrap()]
                            .contains("instance=~\"$instance\""),
                    "{title}: {name} is not filtered by $instance in {expr}"
                );
            }
            used.extend(names);
        }
    }
    assert!(graphs >= 20, "{graphs} panels");

    // Every family the server exports is on the dashboard: a new metric needs a panel
    // (or a place in an existing one) in docs/ops/grafana-dashboard.json.
    let missing: Vec<&String> = metrics
        .families
        .iter()
        .filter(|(_, samples)| !samples.iter().any(|s| used.contains(s.as_str())))
        .map(|(family, _)| family)
        .collect();
    assert!(
        missing.is_empty(),
        "exported but on no panel of the dashboard: {missing:?}"
    );
}

#[derive(Debug, serde::Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, serde::Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// A Prometheus duration such as `0m`, `2m`, `1h30m`.
fn is_duration(text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    !text.is_empty()
}

#[test]
fn every_alert_rule_is_complete_and_names_only_metrics_the_server_exports() {
    let metrics = live_metrics();
    let text = std::fs::read_to_string(ops_file("prometheus-alerts.yml")).unwrap();
    let file: RuleFile = serde_yaml_ng::from_str(&text).expect("the alert rules are YAML");
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in &file.groups {
        assert!(!group.rules.is_empty(), "group {} is empty", group.name);
        for rule in &group.rules {
            let alert = rule
                .alert
                .as_deref()
                .unwrap_or_else(|| panic!("a rule of {} is no alert: {rule:?}", group.name));
            assert!(alerts.insert(alert), "{alert} twice");
            let expr = rule.expr.as_deref().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{alert} has no expr");
            let for_ = rule.for_.as_deref().unwrap_or_default();
            assert!(is_duration(for_), "{alert}: for {for_:?}");
            let severity = rule.labels.get("severity").map(String::as_str);
            assert!(
                matches!(severity, Some("info" | "warning" | "critical")),
                "{alert}: severity {severity:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule.annotations
                        .get(key)
                        .is_some_and(|a| !a.trim().is_empty()),
                    "{alert} has no {key}"
                );
            }
            let names = check_expr(alert, expr, metrics);
            // Only the scrape's own `up` may stand without a gatehouse metric.
            assert!(
                !names.is_empty() || expr.starts_with("up{"),
                "{alert}: no gatehouse metric in {expr}"
            );
            used.extend(names);
        }
    }
    // The failures an operator must hear about each have their alert.
    for needed in [
        "gatehouse_hub_restarts_total",
        "gatehouse_ready",
        "gatehouse_draining",
        "gatehouse_save_oldest_unsaved_seconds",
        "gatehouse_save_failed_attempts_total",
        "gatehouse_save_conflicts_total",
        "gatehouse_connections_refused_total",
        "gatehouse_connections_max",
        "gatehouse_kicks_total",
        "gatehouse_room_crashes_total",
        "gatehouse_arena_lockouts_total",
    ] {
        assert!(used.contains(needed), "no alert reads {needed}");
    }
}

// --- promtool (Debian package `prometheus`) ---------------------------------

/// `$PROMTOOL`, else `promtool` on the PATH; `None` (with a notice) when there is
/// none. Under `CI` a missing one is a failure.
fn promtool() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into()));
    match Command::new(&path).arg("--version").output() {
        Ok(output) if output.status.success() => Some(path),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool must run in CI (apt-get install prometheus)"
            );
            println!("skipping: no promtool (Debian package `prometheus`)");
            None
        }
    }
}

/// Runs `promtool ARGS` and returns its output; a failure fails the test.
fn run_promtool(promtool: &Path, args: &[&OsStr]) -> String {
    let output = Command::new(promtool).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_alert_rules_and_every_dashboard_query() {
    let Some(promtool) = promtool() else { return };
    let rules = ops_file("prometheus-alerts.yml");
    run_promtool(
        &promtool,
        &["check".as_ref(), "rules".as_ref(), rules.as_os_str()],
    );

    // The dashboard's queries, with Grafana's variables filled in, as recording
    // rules: promtool parses each.
    let dir = process::scratch("ops-promql");
    let recorded: Vec<serde_json::Value> = dashboard_queries(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (title, ref_id, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "1h")
                .replace("$instance", ".*");
            assert!(
                !expr.contains('$'),
                "{title} {ref_id}: a variable left in {expr}"
            );
            serde_json::json!({ "record": format!("dashboard:query_{i}:{ref_id}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": recorded }] });
    let path = process::write_file(
        &dir,
        "dashboard-queries.yml",
        &serde_yaml_ng::to_string(&file).unwrap(),
    );
    let out = run_promtool(
        &promtool,
        &["check".as_ref(), "rules".as_ref(), path.as_os_str()],
    );
    assert!(
        out.contains(&format!("{} rules found", recorded.len())),
        "{out}"
    );
}

/// Series and expectations for `promtool test rules`. The alerts are compared on
/// their labels (the rules' annotations are left out of the copy under test).
const ALERT_TESTS: &str = r#"
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'gatehouse_hub_restarts_total{job="gh",instance="a"}'
        values: '0 0 1+0x30'
      - series: 'gatehouse_ready{job="gh",instance="a"}'
        values: '1 1 0x10 1x10'
      - series: 'gatehouse_draining{job="gh",instance="a"}'
        values: '0x30'
      - series: 'gatehouse_ready{job="gh",instance="b"}'
        values: '1 1 0x20'
      - series: 'gatehouse_draining{job="gh",instance="b"}'
        values: '0 0 1x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: GatehouseHubRestarted
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }
      # The restart has left the 10-minute window.
      - eval_time: 20m
        alertname: GatehouseHubRestarted
        exp_alerts: []
      # Not ready for 2 minutes yet.
      - eval_time: 3m
        alertname: GatehouseNotReady
        exp_alerts: []
      # a is down while not draining; b is draining, as it should.
      - eval_time: 6m
        alertname: GatehouseNotReady
        exp_alerts:
          - exp_labels: { severity: critical, job: gh, instance: a }
      - eval_time: 15m
        alertname: GatehouseNotReady
        exp_alerts: []

  - interval: 1m
    input_series:
      - series: 'gatehouse_save_oldest_unsaved_seconds{job="gh",instance="a"}'
        values: '0+10x20'
      - series: 'gatehouse_save_failed_attempts_total{job="gh",instance="a"}'
        values: '0+1x20'
      - series: 'gatehouse_save_conflicts_total{job="gh",instance="a"}'
        values: '0 0 1+0x20'
    alert_rule_test:
      # Past 30 s from 4m on, for 2m.
      - eval_time: 5m
        alertname: GatehouseSaveBacklog
        exp_alerts: []
      - eval_time: 7m
        alertname: GatehouseSaveBacklog
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }
      - eval_time: 10m
        alertname: GatehouseSaveFailures
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }
      - eval_time: 3m
        alertname: GatehouseSaveConflicts
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }

  - interval: 1m
    input_series:
      - series: 'gatehouse_connections_open{job="gh",instance="a",transport="tcp"}'
        values: '900x20'
      - series: 'gatehouse_connections_open{job="gh",instance="a",transport="ws"}'
        values: '50x20'
      - series: 'gatehouse_connections_max{job="gh",instance="a"}'
        values: '1000x20'
      - series: 'gatehouse_connections_open{job="gh",instance="b",transport="tcp"}'
        values: '500x20'
      - series: 'gatehouse_connections_max{job="gh",instance="b"}'
        values: '1000x20'
      - series: 'gatehouse_connections_refused_total{job="gh",instance="a",reason="server_full"}'
        values: '0+300x20'
      - series: 'gatehouse_connections_refused_total{job="gh",instance="a",reason="too_many_from_ip"}'
        values: '0+6x20'
      - series: 'gatehouse_kicks_total{job="gh",instance="a",reason="slow_consumer"}'
        values: '0+120x20'
      - series: 'gatehouse_kicks_total{job="gh",instance="a",reason="game"}'
        values: '0+120x20'
      - series: 'gatehouse_room_crashes_total{job="gh",instance="a",kind="arena"}'
        values: '0 0 1+0x20'
    alert_rule_test:
      # 95% of the connections on a, 50% on b.
      - eval_time: 10m
        alertname: GatehouseNearCapacity
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }
      # 5/s refused server_full; 0.1/s too_many_from_ip is below the threshold.
      - eval_time: 10m
        alertname: GatehouseRefusalSpike
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a, reason: server_full }
      # 2/s slow consumers kicked; the game's own kicks are none of its business.
      - eval_time: 10m
        alertname: GatehouseProtectiveKicks
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a, reason: slow_consumer }
      - eval_time: 3m
        alertname: GatehouseRoomCrashed
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a, kind: arena }

  - interval: 1m
    input_series:
      - series: 'gatehouse_arena_lockouts_total{job="gh",instance="a",scope="address"}'
        values: '0 0 1+0x30'
      - series: 'gatehouse_arena_lockouts_total{job="gh",instance="a",scope="name"}'
        values: '0 0 5+5x30'
      - series: 'gatehouse_arena_logins_total{job="gh",instance="a",result="too_many_attempts"}'
        values: '0+120x30'
      - series: 'gatehouse_arena_logins_total{job="gh",instance="a",result="wrong_password"}'
        values: '0+600x30'
    alert_rule_test:
      # An address locked out fires; names alone (players forgetting) do not.
      - eval_time: 3m
        alertname: GatehousePasswordGuessing
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }
      - eval_time: 20m
        alertname: GatehousePasswordGuessing
        exp_alerts: []
      # 2/s refused before any hash, for 10 minutes; wrong passwords are not counted.
      - eval_time: 8m
        alertname: GatehouseLoginsRefused
        exp_alerts: []
      - eval_time: 16m
        alertname: GatehouseLoginsRefused
        exp_alerts:
          - exp_labels: { severity: warning, job: gh, instance: a }
"#;

#[test]
fn the_alerts_fire_on_the_failures_they_name_and_not_on_a_drain() {
    let Some(promtool) = promtool() else { return };
    let text = std::fs::read_to_string(ops_file("prometheus-alerts.yml")).unwrap();
    let mut rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            rule.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    let dir = process::scratch("ops-alert-tests");
    let rules_path = process::write_file(
        &dir,
        "rules.yml",
        &serde_yaml_ng::to_string(&rules).unwrap(),
    );
    let tests = format!("rule_files:\n  - {}\n{ALERT_TESTS}", rules_path.display());
    let tests_path = process::write_file(&dir, "tests.yml", &tests);
    let out = run_promtool(
        &promtool,
        &["test".as_ref(), "rules".as_ref(), tests_path.as_os_str()],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The metric tables of `docs/OPERATIONS.md`: each row's metric, type and labels.
fn documented_metrics() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/OPERATIONS.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, name, kind, labels, ..] = cells[..] else {
            continue;
        };
        let Some(name) = name
            .strip_prefix("`gatehouse_")
            .and_then(|n| n.strip_suffix('`'))
        else {
            continue;
        };
        let labels = labels
            .split(',')
            .map(|l| l.trim().trim_matches('`'))
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let previous = rows.insert(format!("gatehouse_{name}"), (kind.to_owned(), labels));
        assert!(previous.is_none(), "gatehouse_{name} is documented twice");
    }
    rows
}

#[test]
fn operations_md_documents_every_exported_metric_with_its_type_and_labels() {
    let live = live_metrics();
    let documented = documented_metrics();
    // A counter's family is named without `_total`; its samples (and the docs) with.
    let family_of = |name: &str, kind: &str| match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name).to_owned(),
        _ => name.to_owned(),
    };
    let mut problems = Vec::new();
    for (name, (kind, labels)) in &documented {
        match live.family_labels.get(&family_of(name, kind)) {
            None => problems.push(format!("{name}: documented, not exported")),
            Some((live_kind, live_labels)) => {
                if live_kind != kind || live_labels != labels {
                    problems.push(format!(
                        "{name}: documented as {kind} {labels:?}, exported as {live_kind} {live_labels:?}"
                    ));
                }
            }
        }
    }
    let documented_families: BTreeSet<String> = documented
        .iter()
        .map(|(name, (kind, _))| family_of(name, kind))
        .collect();
    for family in live.family_labels.keys() {
        if family.starts_with("gatehouse_") && !documented_families.contains(family) {
            problems.push(format!("{family}: exported, not in docs/OPERATIONS.md"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

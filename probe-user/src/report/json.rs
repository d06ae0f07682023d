//! `--format json`: the report as one JSON document.

use std::io::Write;

use super::Report;

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::report::{Cookies, Drops, LatencySummary, Sysctls};

    #[test]
    fn has_the_documented_shape() {
        let mut out = Vec::new();
        write(&super::super::sample::report(), &mut out).unwrap();
        let doc: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["schema"], 1);
        for field in ["kernel", "hooks", "duration_ms", "lost_events", "listeners"] {
            assert!(doc.get(field).is_some(), "missing {field}");
        }
        let listener = &doc["listeners"][0];
        for field in [
            "netns",
            "port",
            "addr",
            "syn_received",
            "handshakes",
            "accepted",
        ] {
            assert!(listener.get(field).is_some(), "missing {field}");
        }
        for dist in ["handshake_us", "accept_wait_us", "syn_to_accept_us"] {
            for stat in ["count", "min", "p50", "p90", "p99", "p999", "max", "mean"] {
                assert!(listener[dist].get(stat).is_some(), "missing {dist}.{stat}");
            }
        }
        assert_eq!(listener["accept_wait_us"]["p50"], 300000.0);
    }

    fn json_of(report: &Report) -> Value {
        let mut out = Vec::new();
        write(report, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn schema() -> Value {
        serde_json::from_str(super::super::JSON_SCHEMA).expect("schema/report-1.json is not JSON")
    }

    /// What the JSON Schema finds wrong with `doc`, one line each.
    fn violations(doc: &Value) -> Vec<String> {
        let validator = jsonschema::draft202012::new(&schema())
            .expect("schema/report-1.json is not a valid draft 2020-12 schema");
        validator
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn the_sample_matches_the_json_schema() {
        let errors = violations(&json_of(&super::super::sample::report()));
        assert!(
            errors.is_empty(),
            "the sample report against schema/report-1.json:\n{}",
            errors.join("\n")
        );
    }

    #[test]
    fn every_optional_figure_may_be_null() {
        let mut report = super::super::sample::report();
        let listener = &mut report.listeners[0];
        listener.addr = None;
        listener.drops = Drops {
            attribution: "ambiguous".into(),
            ..Default::default()
        };
        listener.cookies = Cookies::default();
        listener.fastopen = None;
        listener.synack_retransmits = None;
        listener.request_timeouts = None;
        listener.backlog = None;
        listener.accept_queue_max = None;
        listener.syn_queue_max = None;
        listener.handshake_us = LatencySummary::default();
        report.namespaces[0].sysctls = Sysctls::default();
        let doc = json_of(&report);
        assert!(doc["listeners"][0]["syncookies_sent"].is_null(), "{doc:#}");
        let errors = violations(&doc);
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }

    #[test]
    fn the_schema_refuses_renamed_missing_extra_and_mistyped_fields() {
        let sample = json_of(&super::super::sample::report());
        type Change = fn(&mut Value);
        let cases: [(&str, Change); 7] = [
            ("a renamed field", |d| {
                let listener = d["listeners"][0].as_object_mut().unwrap();
                let wait = listener.remove("accept_wait_us").unwrap();
                listener.insert("accept_wait".into(), wait);
            }),
            ("a missing field", |d| {
                d["listeners"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("syncookies_sent");
            }),
            ("an unknown field", |d| {
                d["listeners"][0]["drops"]["other"] = 1.into()
            }),
            ("a null that cannot be", |d| {
                d["listeners"][0]["port"] = Value::Null
            }),
            ("a port out of range", |d| {
                d["listeners"][0]["port"] = 70000.into()
            }),
            ("a string for a number", |d| {
                d["listeners"][0]["accept_wait_us"]["p50"] = "300ms".into()
            }),
            ("another schema", |d| d["schema"] = 2.into()),
        ];
        for (what, change) in cases {
            let mut doc = sample.clone();
            change(&mut doc);
            assert!(!violations(&doc).is_empty(), "{what} passed the schema");
        }
    }

    /// Every object of the schema lists all its properties as required (serde writes every
    /// field, nulls included) and allows no others (a renamed field fails).
    #[test]
    fn the_schema_requires_every_property_and_allows_no_other() {
        fn walk(path: &str, node: &Value) {
            let Some(object) = node.as_object() else {
                if let Some(items) = node.as_array() {
                    for (i, item) in items.iter().enumerate() {
                        walk(&format!("{path}/{i}"), item);
                    }
                }
                return;
            };
            if let Some(properties) = object.get("properties").and_then(Value::as_object) {
                let mut names: Vec<&str> = properties.keys().map(String::as_str).collect();
                let mut required: Vec<&str> = object["required"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{path}: no required list"))
                    .iter()
                    .map(|name| name.as_str().unwrap())
                    .collect();
                names.sort_unstable();
                required.sort_unstable();
                assert_eq!(required, names, "{path}: required against properties");
                assert_eq!(
                    object.get("additionalProperties"),
                    Some(&Value::Bool(false)),
                    "{path}"
                );
            }
            for (key, child) in object {
                walk(&format!("{path}/{key}"), child);
            }
        }
        walk("#", &schema());
    }
}

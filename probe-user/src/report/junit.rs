//! `--junit FILE`: one test case per threshold and port, for CI systems that show JUnit
//! results. A broken threshold is a failure whose message is the measured figure and its limit.

use std::io::Write;

use super::{Report, thresholds};

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    let failures = report.thresholds.iter().filter(|t| !t.held).count();
    let seconds = report.duration_ms as f64 / 1000.0;
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="synscope" tests="{}" failures="{failures}" time="{seconds:.3}">"#,
        report.thresholds.len()
    )?;
    writeln!(
        out,
        r#"  <testsuite name="synscope thresholds" tests="{}" failures="{failures}" errors="0" skipped="0" time="{seconds:.3}">"#,
        report.thresholds.len()
    )?;
    for result in &report.thresholds {
        // A threshold without a port is checked on each port: the name says which.
        let name = match result.port {
            Some(port) if !result.expression.starts_with(&format!("{port}:")) => {
                format!("{} [:{port}]", result.expression)
            }
            _ => result.expression.clone(),
        };
        let name = xml(&name);
        let detail = xml(&thresholds::describe(result));
        if result.held {
            writeln!(
                out,
                r#"    <testcase classname="synscope.thresholds" name="{name}"><system-out>{detail}</system-out></testcase>"#
            )?;
        } else {
            writeln!(
                out,
                r#"    <testcase classname="synscope.thresholds" name="{name}"><failure message="{detail}" type="threshold">{detail}</failure></testcase>"#
            )?;
        }
    }
    writeln!(out, "  </testsuite>")?;
    writeln!(out, "</testsuites>")?;
    Ok(())
}

/// Escapes text for an XML attribute or element.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

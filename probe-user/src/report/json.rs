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
    use super::*;

    #[test]
    fn has_the_documented_shape() {
        let mut out = Vec::new();
        write(&super::super::sample::report(), &mut out).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
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
}

//! `--fail-if [PORT:]FIGURE OP VALUE`: conditions that fail a run (a CI gate). An expression
//! states the failure: `accept_wait.p99 > 5ms` breaks when a port's p99 accept wait is over
//! 5 ms. A gate must never pass because nothing was measured: a named port that saw no
//! connection, a latency without samples, or a figure this kernel cannot observe breaks it,
//! with the reason (the last unless `--allow-unobservable`).

use std::fmt;

use super::{ListenerReport, Report, ThresholdResult, format::human_us};

/// A parsed `--fail-if` expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// As the user wrote it.
    pub expression: String,
    /// `PORT:` before the figure: only that port; otherwise every reported port on its own.
    pub port: Option<u16>,
    pub figure: Figure,
    pub op: Op,
    /// In the figure's unit: microseconds for latencies, a count otherwise.
    pub limit: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// One statistic of one of the three latencies.
    Latency(Latency, Stat),
    /// A per-port count.
    Count(Count),
    /// Events lost in the whole run.
    LostEvents,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    Handshake,
    AcceptWait,
    SynToAccept,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Min,
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
    Count,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    SynReceived,
    Handshakes,
    Accepted,
    Drops,
    ListenOverflows,
    SynQueueFull,
    SyncookiesSent,
    SynackRetransmits,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

const LATENCIES: [(&str, Latency); 3] = [
    ("handshake", Latency::Handshake),
    ("accept_wait", Latency::AcceptWait),
    ("syn_to_accept", Latency::SynToAccept),
];
const STATS: [(&str, Stat); 8] = [
    ("min", Stat::Min),
    ("p50", Stat::P50),
    ("p90", Stat::P90),
    ("p99", Stat::P99),
    ("p999", Stat::P999),
    ("max", Stat::Max),
    ("mean", Stat::Mean),
    ("count", Stat::Count),
];
const COUNTS: [(&str, Count); 8] = [
    ("syn_received", Count::SynReceived),
    ("handshakes", Count::Handshakes),
    ("accepted", Count::Accepted),
    ("drops", Count::Drops),
    ("listen_overflows", Count::ListenOverflows),
    ("syn_queue_full", Count::SynQueueFull),
    ("syncookies_sent", Count::SyncookiesSent),
    ("synack_retransmits", Count::SynackRetransmits),
];
/// Longest first, so that `>=` is not read as `>`.
const OPS: [(&str, Op); 6] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("==", Op::Eq),
    ("!=", Op::Ne),
    (">", Op::Gt),
    ("<", Op::Lt),
];

impl Op {
    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Eq => value == limit,
            Op::Ne => value != limit,
        }
    }

    fn symbol(self) -> &'static str {
        name_in(&OPS, self)
    }
}

impl Figure {
    fn is_duration(self) -> bool {
        matches!(self, Figure::Latency(_, stat) if stat != Stat::Count)
    }
}

/// The name a value goes by in `table`.
fn name_in<T: PartialEq>(table: &[(&'static str, T)], wanted: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == wanted)
        .map_or("?", |(n, _)| n)
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Figure::Latency(latency, stat) => {
                write!(
                    f,
                    "{}.{}",
                    name_in(&LATENCIES, latency),
                    name_in(&STATS, stat)
                )
            }
            Figure::Count(count) => f.write_str(name_in(&COUNTS, count)),
            Figure::LostEvents => f.write_str("lost_events"),
        }
    }
}

/// Parses one expression; the error says what is wrong with it, for a one-line message.
pub fn parse(expression: &str) -> Result<Threshold, String> {
    let (op_at, op_text, op) = OPS
        .iter()
        .filter_map(|&(text, op)| expression.find(text).map(|at| (at, text, op)))
        .min_by_key(|&(at, text, _)| (at, std::cmp::Reverse(text.len())))
        .ok_or("no comparison (one of > >= < <= == !=)")?;
    let left = expression[..op_at].trim();
    let right = expression[op_at + op_text.len()..].trim();
    let (port, figure_name) = match left.split_once(':') {
        Some((port, figure)) => {
            let port: u16 = port
                .trim()
                .parse()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))?;
            (Some(port), figure.trim())
        }
        None => (None, left),
    };
    let figure = parse_figure(figure_name)?;
    if port.is_some() && figure == Figure::LostEvents {
        return Err("lost_events is counted for the whole run, not per port".into());
    }
    let limit = if figure.is_duration() {
        parse_duration_us(right)?
    } else {
        right
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{right:?} is not a count ({figure} takes a plain number)"))?
    };
    Ok(Threshold {
        expression: expression.trim().to_owned(),
        port,
        figure,
        op,
        limit,
    })
}

fn parse_figure(name: &str) -> Result<Figure, String> {
    if name == "lost_events" {
        return Ok(Figure::LostEvents);
    }
    if let Some(&(_, count)) = COUNTS.iter().find(|(n, _)| *n == name) {
        return Ok(Figure::Count(count));
    }
    let known = "handshake, accept_wait or syn_to_accept with .min .p50 .p90 .p99 .p999 .max \
                 .mean .count; syn_received handshakes accepted drops listen_overflows \
                 syn_queue_full syncookies_sent synack_retransmits; lost_events";
    let (latency, stat) = name
        .split_once('.')
        .ok_or_else(|| format!("unknown figure {name:?} (figures: {known})"))?;
    let latency = LATENCIES
        .iter()
        .find(|(n, _)| *n == latency)
        .map(|&(_, l)| l)
        .ok_or_else(|| format!("unknown figure {name:?} (figures: {known})"))?;
    let stat = STATS
        .iter()
        .find(|(n, _)| *n == stat)
        .map(|&(_, s)| s)
        .ok_or_else(|| format!("unknown statistic in {name:?} (figures: {known})"))?;
    Ok(Figure::Latency(latency, stat))
}

/// `250us`, `5ms`, `1.5s` in microseconds; a bare number is refused: 5 of what?
fn parse_duration_us(text: &str) -> Result<f64, String> {
    let units = [("us", 1.0), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)];
    let (number, scale) = units
        .iter()
        .find_map(|&(unit, scale)| text.strip_suffix(unit).map(|n| (n.trim(), scale)))
        .ok_or_else(|| format!("{text:?} needs a unit: us, ms or s (e.g. 5ms)"))?;
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a duration (e.g. 5ms)"))?;
    Ok(value * scale)
}

/// Checks every threshold against the report: one result per threshold and port.
pub fn evaluate(
    thresholds: &[Threshold],
    report: &Report,
    allow_unobservable: bool,
) -> Vec<ThresholdResult> {
    let mut results = Vec::new();
    for threshold in thresholds {
        if threshold.figure == Figure::LostEvents {
            results.push(verdict(threshold, None, Ok(report.lost_events as f64)));
            continue;
        }
        let listeners: Vec<&ListenerReport> = report
            .listeners
            .iter()
            .filter(|l| threshold.port.is_none_or(|p| l.port == p))
            .filter(|l| l.syn_received + l.handshakes + l.accepted > 0)
            .collect();
        if listeners.is_empty() {
            let reason = match threshold.port {
                Some(port) => format!("no traffic reached :{port}"),
                None => "no traffic reached any traced port".to_owned(),
            };
            results.push(verdict(threshold, threshold.port, Err(reason)));
            continue;
        }
        for listener in listeners {
            let measured = measure(threshold.figure, listener, report).or_else(|why| {
                if allow_unobservable && why.unobservable {
                    Ok(None)
                } else {
                    Err(why.reason)
                }
            });
            let result = match measured {
                Ok(Some(value)) => verdict(threshold, Some(listener.port), Ok(value)),
                // Allowed to be unobservable: held, with the reason kept.
                Ok(None) => ThresholdResult {
                    reason: Some(format!(
                        "{} is not observable on this kernel (allowed)",
                        threshold.figure
                    )),
                    ..verdict(threshold, Some(listener.port), Ok(f64::NAN))
                },
                Err(reason) => verdict(threshold, Some(listener.port), Err(reason)),
            };
            results.push(result);
        }
    }
    results
}

struct NotMeasured {
    reason: String,
    /// The kernel cannot observe it (as opposed to: no samples in this run).
    unobservable: bool,
}

fn measure(
    figure: Figure,
    l: &ListenerReport,
    report: &Report,
) -> Result<Option<f64>, NotMeasured> {
    let unobservable = |what: &str| NotMeasured {
        reason: format!(
            "{what} is not observable on this kernel with these hooks ({})",
            report
                .unobserved
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        unobservable: true,
    };
    let count = |value: Option<u64>, what: &str| {
        value
            .map(|v| Some(v as f64))
            .ok_or_else(|| unobservable(what))
    };
    match figure {
        Figure::LostEvents => Ok(Some(report.lost_events as f64)),
        Figure::Count(c) => match c {
            Count::SynReceived => Ok(Some(l.syn_received as f64)),
            Count::Handshakes => Ok(Some(l.handshakes as f64)),
            Count::Accepted => Ok(Some(l.accepted as f64)),
            Count::Drops => count(l.drops.listen_drops, "drops"),
            Count::ListenOverflows => count(l.drops.listen_overflows, "listen_overflows"),
            Count::SynQueueFull => count(l.drops.syn_queue_full, "syn_queue_full"),
            Count::SyncookiesSent => count(l.cookies.syncookies_sent, "syncookies_sent"),
            Count::SynackRetransmits => count(l.synack_retransmits, "synack_retransmits"),
        },
        Figure::Latency(latency, stat) => {
            let (name, summary) = match latency {
                Latency::Handshake => ("handshake", &l.handshake_us),
                Latency::AcceptWait => ("accept_wait", &l.accept_wait_us),
                Latency::SynToAccept => ("syn_to_accept", &l.syn_to_accept_us),
            };
            if stat == Stat::Count {
                return Ok(Some(summary.count as f64));
            }
            if summary.count == 0 {
                return Err(NotMeasured {
                    reason: format!("no {name} was measured on :{}", l.port),
                    unobservable: false,
                });
            }
            Ok(Some(match stat {
                Stat::Min => summary.min,
                Stat::P50 => summary.p50,
                Stat::P90 => summary.p90,
                Stat::P99 => summary.p99,
                Stat::P999 => summary.p999,
                Stat::Max => summary.max,
                Stat::Mean => summary.mean,
                Stat::Count => unreachable!("returned above"),
            }))
        }
    }
}

/// The result for one port (or the run): broken when the failure condition is met, or when
/// there is nothing to compare.
fn verdict(
    threshold: &Threshold,
    port: Option<u16>,
    value: Result<f64, String>,
) -> ThresholdResult {
    let (value, held, reason) = match value {
        Ok(v) if v.is_nan() => (None, true, None),
        Ok(v) => (Some(v), !threshold.op.holds(v, threshold.limit), None),
        Err(reason) => (None, false, Some(reason)),
    };
    ThresholdResult {
        expression: threshold.expression.clone(),
        port,
        figure: threshold.figure.to_string(),
        op: threshold.op.symbol().to_owned(),
        value,
        limit: threshold.limit,
        unit: if threshold.figure.is_duration() {
            "us"
        } else {
            ""
        }
        .to_owned(),
        held,
        reason,
    }
}

/// One line for a threshold: port, figure, measured value (or why there is none), limit.
pub fn describe(result: &ThresholdResult) -> String {
    let port = result.port.map_or(String::new(), |p| format!(":{p} "));
    let value = |v: f64| {
        if result.unit == "us" {
            human_us(v)
        } else {
            format!("{v}")
        }
    };
    match (&result.reason, result.value) {
        (Some(reason), _) if !result.held => format!(
            "{port}{} {} {}: {reason}",
            result.figure,
            result.op,
            value(result.limit)
        ),
        (_, Some(measured)) => format!(
            "{port}{} = {} (fails if {} {})",
            result.figure,
            value(measured),
            result.op,
            value(result.limit)
        ),
        (reason, None) => format!(
            "{port}{} {} {}{}",
            result.figure,
            result.op,
            value(result.limit),
            reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {r}"))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample;

    fn broken(results: &[ThresholdResult]) -> Vec<String> {
        results.iter().filter(|r| !r.held).map(describe).collect()
    }

    #[test]
    fn parses_the_documented_forms() {
        let t = parse("accept_wait.p99 > 5ms").unwrap();
        assert_eq!(t.figure, Figure::Latency(Latency::AcceptWait, Stat::P99));
        assert_eq!((t.port, t.op, t.limit), (None, Op::Gt, 5000.0));
        let t = parse("8080:handshake.p999 > 100ms").unwrap();
        assert_eq!((t.port, t.limit), (Some(8080), 100_000.0));
        let t = parse("syn_to_accept.max >= 1s").unwrap();
        assert_eq!((t.op, t.limit), (Op::Ge, 1e6));
        assert_eq!(
            parse("drops > 0").unwrap().figure,
            Figure::Count(Count::Drops)
        );
        assert_eq!(parse("synack_retransmits>10").unwrap().limit, 10.0);
        assert_eq!(parse("lost_events != 0").unwrap().op, Op::Ne);
        assert_eq!(parse("handshake.p50 <= 250us").unwrap().limit, 250.0);
        assert_eq!(parse("accept_wait.count < 100").unwrap().limit, 100.0);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expression, complaint) in [
            ("accept_wait.p99 > 5", "needs a unit"),
            ("accept_wait.p98 > 5ms", "unknown statistic"),
            ("accept_time.p99 > 5ms", "unknown figure"),
            ("accept_wait.p99 5ms", "no comparison"),
            ("drops > 3ms", "not a count"),
            ("0:drops > 0", "not a port"),
            ("http:drops > 0", "not a port"),
            ("8080:lost_events > 0", "whole run"),
            ("accept_wait.p99 > fast", "needs a unit"),
        ] {
            let error = parse(expression).unwrap_err();
            assert!(error.contains(complaint), "{expression}: {error}");
        }
    }

    #[test]
    fn an_expression_is_the_failure_condition() {
        let report = sample::report(); // port 8080: accept wait p99 600 ms, 412 overflows
        let thresholds = [
            parse("accept_wait.p99 > 500ms").unwrap(),
            parse("accept_wait.p99 > 1s").unwrap(),
            parse("8080:listen_overflows >= 412").unwrap(),
            parse("lost_events > 0").unwrap(),
        ];
        let results = evaluate(&thresholds, &report, false);
        let held: Vec<bool> = results.iter().map(|r| r.held).collect();
        assert_eq!(held, [false, true, false, true]);
        assert_eq!(results[0].value, Some(600_000.0));
        assert_eq!(
            broken(&results),
            [
                ":8080 accept_wait.p99 = 600ms (fails if > 500ms)",
                ":8080 listen_overflows = 412 (fails if >= 412)"
            ]
        );
    }

    #[test]
    fn nothing_measured_never_passes() {
        let mut report = sample::report();
        let results = evaluate(&[parse("9090:drops > 0").unwrap()], &report, false);
        assert_eq!(
            broken(&results),
            [":9090 drops > 0: no traffic reached :9090"]
        );

        // A figure this kernel cannot observe breaks it, unless allowed.
        report.listeners[0].synack_retransmits = None;
        let unobservable = [parse("synack_retransmits > 10").unwrap()];
        let results = evaluate(&unobservable, &report, false);
        assert!(!results[0].held);
        assert!(
            results[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("not observable")
        );
        let results = evaluate(&unobservable, &report, true);
        assert!(results[0].held, "{results:?}");
        assert!(results[0].reason.as_deref().unwrap().contains("allowed"));

        // A latency without samples is not a fast one.
        report.listeners[0].accept_wait_us = Default::default();
        let results = evaluate(&[parse("accept_wait.p99 > 5ms").unwrap()], &report, true);
        assert!(!results[0].held);
        assert!(
            results[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("no accept_wait")
        );

        report.listeners.clear();
        let results = evaluate(&[parse("accept_wait.p99 > 5ms").unwrap()], &report, false);
        assert_eq!(
            results[0].reason.as_deref(),
            Some("no traffic reached any traced port")
        );
    }

    /// `--fail-if` as any text: a threshold or a one-line complaint, never a panic; and every
    /// expression the grammar allows parses to what it says.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn figure() -> impl Strategy<Value = Figure> {
            let latency = prop::sample::select(LATENCIES.to_vec());
            let stat = prop::sample::select(STATS.to_vec());
            prop_oneof![
                (latency, stat).prop_map(|((_, l), (_, s))| Figure::Latency(l, s)),
                prop::sample::select(COUNTS.to_vec()).prop_map(|(_, c)| Figure::Count(c)),
                Just(Figure::LostEvents),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_text(text in any::<String>()) {
                if let Err(complaint) = parse(&text) {
                    prop_assert!(!complaint.contains('\n') || text.contains('\n'), "{complaint}");
                }
            }

            #[test]
            fn near_misses(text in "[0-9]{0,6}:?[a-z_]{0,14}\\.?[a-z0-9]{0,5} ?[<>=!]{1,2} ?[-+0-9.e]{0,8}(us|µs|ms|s|m|)") {
                let _ = parse(&text);
            }

            #[test]
            fn the_grammar_parses_to_what_it_says(
                port in prop::option::of(1u16..),
                figure in figure(),
                op in prop::sample::select(OPS.to_vec()),
                limit in 0u32..1_000_000,
                unit in prop::sample::select(vec![("us", 1.0), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)]),
                spaces in prop::sample::select(vec!["", " ", "  "]),
            ) {
                let port = if figure == Figure::LostEvents { None } else { port };
                let (op_text, op) = op;
                let (unit_text, scale) = if figure.is_duration() { unit } else { ("", 1.0) };
                let expression = format!(
                    "{}{figure}{spaces}{op_text}{spaces}{limit}{unit_text}",
                    port.map(|p| format!("{p}:")).unwrap_or_default()
                );
                let threshold = parse(&expression).map_err(TestCaseError::fail)?;
                prop_assert_eq!(threshold.port, port);
                prop_assert_eq!(threshold.figure, figure);
                prop_assert_eq!(threshold.op, op);
                prop_assert_eq!(threshold.limit, f64::from(limit) * scale);
            }
        }
    }
}

//! The tables: every figure is computed per round, from that round's own baseline (its
//! untraced run, its floor run), and then summarised as the median of rounds with their
//! range. Nothing compares across invocations.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    bpf::Hook,
    load::{Outcome, Workload},
    tracer::Usage,
};

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Untraced,
    /// Empty programs on every hook the tracers use: the accounting's own cost per run.
    Floor,
    /// synscope with this `--hooks` backend; `tag` tells builds apart when several are compared.
    Synscope {
        backend: String,
        binary: std::path::PathBuf,
        tag: Option<String>,
    },
    /// The bpftrace reference script.
    Reference,
}

impl Mode {
    pub fn label(&self) -> String {
        match self {
            Mode::Untraced => "untraced".into(),
            Mode::Floor => "empty programs (floor)".into(),
            Mode::Synscope { backend, tag, .. } => match tag {
                Some(tag) => format!("synscope-{backend} {tag}"),
                None => format!("synscope-{backend}"),
            },
            Mode::Reference => "bpftrace-reference".into(),
        }
    }
}

/// One program's accounting over one round's load.
#[derive(Clone, Debug)]
pub struct ProgramRun {
    pub name: String,
    pub hook: Hook,
    pub ns: u64,
    pub runs: u64,
}

/// One mode in one round.
#[derive(Clone, Debug)]
pub struct Sample {
    pub outcome: Outcome,
    pub programs: Vec<ProgramRun>,
    pub usage: Option<Usage>,
}

/// Every round of every mode of one workload; `samples[m][r]`: mode m, round r.
pub struct Results {
    pub workload: Workload,
    pub rounds: usize,
    pub seconds: u64,
    pub modes: Vec<Mode>,
    pub samples: Vec<Vec<Sample>>,
}

/// Median, minimum and maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }

    /// "median (min-max)" with `decimals`.
    fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

fn show(spread: Option<Spread>, decimals: usize) -> String {
    spread.map_or_else(|| "-".into(), |s| s.show(decimals))
}

/// One tracer's BPF figures in one round, per connection.
#[derive(Clone, Debug, Default)]
struct RoundBpf {
    ns: f64,
    runs: f64,
    /// ns minus runs x the floor of each program's hook, this round.
    beyond_floor: f64,
    /// The floor's share: runs x floor.
    floor: f64,
    /// Per program name: (ns, runs, floor ns per run).
    programs: BTreeMap<String, (f64, f64, f64, Hook)>,
}

impl Results {
    fn index(&self, mode: &Mode) -> Option<usize> {
        self.modes.iter().position(|m| m == mode)
    }

    /// The floor per run of each hook in round `round`.
    fn floor(&self, round: usize) -> BTreeMap<Hook, f64> {
        let Some(m) = self.index(&Mode::Floor) else {
            return BTreeMap::new();
        };
        self.samples[m][round]
            .programs
            .iter()
            .filter(|p| p.runs > 0)
            .map(|p| (p.hook.clone(), p.ns as f64 / p.runs as f64))
            .collect()
    }

    fn round_bpf(&self, m: usize, round: usize) -> RoundBpf {
        let sample = &self.samples[m][round];
        let connections = sample.outcome.connections.max(1) as f64;
        let floor = self.floor(round);
        let mut figures = RoundBpf::default();
        for program in &sample.programs {
            let per_run = floor.get(&program.hook).copied().unwrap_or(f64::NAN);
            let entry = figures.programs.entry(program.name.clone()).or_insert((
                0.0,
                0.0,
                per_run,
                program.hook.clone(),
            ));
            entry.0 += program.ns as f64 / connections;
            entry.1 += program.runs as f64 / connections;
        }
        for (ns, runs, per_run, _) in figures.programs.values() {
            figures.ns += ns;
            figures.runs += runs;
            // A program that did not run costs no floor, whatever its hook's; nor does one on a
            // hook the floor's own round never hit (it ran a handful of times at most: the floor
            // program sees the same load).
            if *runs > 0.0 && per_run.is_finite() {
                figures.floor += runs * per_run;
            }
        }
        figures.beyond_floor = if self.index(&Mode::Floor).is_some() {
            figures.ns - figures.floor
        } else {
            f64::NAN
        };
        figures
    }

    fn rates(&self, m: usize) -> Vec<f64> {
        self.samples[m].iter().map(|s| s.outcome.rate()).collect()
    }

    /// Rate / the same round's untraced rate.
    fn ratios(&self, m: usize) -> Vec<f64> {
        let Some(u) = self.index(&Mode::Untraced) else {
            return Vec::new();
        };
        (0..self.rounds)
            .map(|r| self.samples[m][r].outcome.rate() / self.samples[u][r].outcome.rate())
            .collect()
    }

    fn tracers(&self) -> impl Iterator<Item = (usize, &Mode)> {
        self.modes
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m, Mode::Synscope { .. } | Mode::Reference))
    }

    /// A tracer mode's figures for the summary.
    pub fn headline(&self, mode: &Mode) -> Option<Headline> {
        let m = self.index(mode)?;
        let bpf: Vec<RoundBpf> = (0..self.rounds).map(|r| self.round_bpf(m, r)).collect();
        let cpu = |f: &dyn Fn(f64, &Outcome) -> f64| {
            let values: Vec<f64> = self.samples[m]
                .iter()
                .filter_map(|s| Some(f(s.usage.as_ref()?.cpu_ns as f64, &s.outcome)))
                .collect();
            Spread::of(&values)
        };
        Some(Headline {
            ns: Spread::of(&bpf.iter().map(|b| b.ns).collect::<Vec<_>>())?,
            beyond_floor: Spread::of(&bpf.iter().map(|b| b.beyond_floor).collect::<Vec<_>>()),
            cpu_percent: cpu(&|ns, o| ns / (o.seconds * 1e7)),
            cpu_scaled: cpu(&|ns, o| ns / o.connections.max(1) as f64 * 1e4 / 1e7),
            top_rate: self.rates(m).into_iter().fold(0.0, f64::max),
            lost: self.samples[m]
                .iter()
                .filter_map(|s| s.usage.as_ref()?.lost_events)
                .max(),
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self
            .write_rates(&mut out)
            .and_then(|()| self.write_bpf(&mut out))
            .and_then(|()| self.write_paired(&mut out))
            .and_then(|()| self.write_floor(&mut out))
            .and_then(|()| self.write_usage(&mut out));
        out
    }

    fn write_rates(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "== {}: {}",
            self.workload.name(),
            self.workload.describe()
        )?;
        writeln!(
            out,
            "   {} rounds x {} s per mode; each round runs every mode, in an order rotated each \
             round. Figures: median of rounds (min-max).",
            self.rounds, self.seconds
        )?;
        writeln!(
            out,
            "{:<30} {:>24} {:>22}",
            "mode", "connections/s", "/ untraced, same round"
        )?;
        for (m, mode) in self.modes.iter().enumerate() {
            let ratio = match mode {
                Mode::Untraced => "1".into(),
                _ => show(Spread::of(&self.ratios(m)), 3),
            };
            writeln!(
                out,
                "{:<30} {:>24} {:>22}",
                mode.label(),
                show(Spread::of(&self.rates(m)), 0),
                ratio
            )?;
        }
        Ok(())
    }

    fn write_bpf(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "\nBPF time per connection (kernel accounting); floor: the same hook's empty \
             program, same round"
        )?;
        writeln!(
            out,
            "{:<30} {:<30} {:>9} {:>7} {:>7} {:>18} {:>18}",
            "mode / program", "hook", "runs/conn", "ns/run", "floor", "ns/conn", "beyond floor"
        )?;
        for (m, mode) in self.tracers() {
            let rounds: Vec<RoundBpf> = (0..self.rounds).map(|r| self.round_bpf(m, r)).collect();
            let total =
                |f: fn(&RoundBpf) -> f64| Spread::of(&rounds.iter().map(f).collect::<Vec<_>>());
            writeln!(
                out,
                "{:<30} {:<30} {:>9} {:>7} {:>7} {:>18} {:>18}",
                mode.label(),
                "all programs",
                median(total(|b| b.runs), 2),
                median(total(|b| b.ns / b.runs), 0),
                median(total(|b| b.floor / b.runs), 0),
                show(total(|b| b.ns), 0),
                show(total(|b| b.beyond_floor), 0),
            )?;
            let mut idle = Vec::new();
            for (name, (_, _, _, hook)) in &rounds[0].programs {
                let per = |f: &dyn Fn(f64, f64, f64) -> f64| {
                    Spread::of(
                        &rounds
                            .iter()
                            .filter_map(|b| b.programs.get(name))
                            .map(|(ns, runs, floor, _)| f(*ns, *runs, *floor))
                            .collect::<Vec<_>>(),
                    )
                };
                let runs = per(&|_, runs, _| runs);
                if runs.is_none_or(|r| r.max == 0.0) {
                    idle.push(name.as_str());
                    continue;
                }
                writeln!(
                    out,
                    "  {:<28} {:<30} {:>9} {:>7} {:>7} {:>18} {:>18}",
                    name,
                    hook.to_string(),
                    median(runs, 2),
                    median(per(&|ns, runs, _| ns / runs), 0),
                    median(per(&|_, _, floor| floor), 0),
                    median(per(&|ns, _, _| ns), 0),
                    median(per(&|ns, runs, floor| ns - runs * floor), 0),
                )?;
            }
            if !idle.is_empty() {
                writeln!(out, "  not run by this workload: {}", idle.join(", "))?;
            }
        }
        Ok(())
    }

    /// Each tracer's BPF time against the first synscope build's and the reference's, as the
    /// median of per-round ratios: the machine's drift between rounds, often larger than a
    /// change to the programs, cancels out of each ratio.
    fn write_paired(&self, out: &mut String) -> std::fmt::Result {
        let first_build = self
            .modes
            .iter()
            .position(|m| matches!(m, Mode::Synscope { .. }));
        let reference = self.index(&Mode::Reference);
        let Some(base) = first_build else {
            return Ok(());
        };
        let base_label = self.modes[base].label();
        writeln!(
            out,
            "\npaired, same round: BPF time per connection / {base_label}'s (all programs; \
             beyond the floor), and / the reference's; median of rounds' ratios (min-max)"
        )?;
        writeln!(
            out,
            "{:<30} {:>22} {:>22} {:>22}",
            "mode", "all programs", "beyond floor", "/ reference"
        )?;
        for (m, mode) in self.tracers() {
            // The reference against itself says nothing; nor does the first build alone.
            if (m == base && reference.is_none()) || Some(m) == reference {
                continue;
            }
            let ratios = |other: usize, f: fn(&RoundBpf) -> f64| {
                Spread::of(
                    &(0..self.rounds)
                        .map(|r| f(&self.round_bpf(m, r)) / f(&self.round_bpf(other, r)))
                        .collect::<Vec<_>>(),
                )
            };
            let against_base = |f: fn(&RoundBpf) -> f64| {
                if m == base {
                    "1".to_owned()
                } else {
                    show(ratios(base, f), 3)
                }
            };
            writeln!(
                out,
                "{:<30} {:>22} {:>22} {:>22}",
                mode.label(),
                against_base(|b| b.ns),
                against_base(|b| b.beyond_floor),
                reference.map_or_else(|| "-".into(), |r| show(ratios(r, |b| b.ns), 3)),
            )?;
        }
        Ok(())
    }

    fn write_floor(&self, out: &mut String) -> std::fmt::Result {
        let Some(f) = self.index(&Mode::Floor) else {
            return Ok(());
        };
        writeln!(
            out,
            "floor per run: an empty program (r0 = 0; exit) on each hook; raw_tp hooks are \
             where tp_btf programs attach too"
        )?;
        let mut idle = Vec::new();
        for program in &self.samples[f][0].programs {
            let hook = &program.hook;
            let rounds: Vec<(f64, f64)> = self.samples[f]
                .iter()
                .filter_map(|s| {
                    let p = s.programs.iter().find(|p| &p.hook == hook)?;
                    let connections = s.outcome.connections.max(1) as f64;
                    Some((p.ns as f64 / p.runs as f64, p.runs as f64 / connections))
                })
                .collect();
            let per_run = Spread::of(&rounds.iter().map(|r| r.0).collect::<Vec<_>>());
            let Some(per_run) = per_run else {
                idle.push(hook.to_string());
                continue;
            };
            let runs = Spread::of(&rounds.iter().map(|r| r.1).collect::<Vec<_>>());
            writeln!(
                out,
                "  {:<40} {:>16} ns/run {:>8} runs/conn",
                hook.to_string(),
                per_run.show(0),
                median(runs, 2)
            )?;
        }
        if !idle.is_empty() {
            writeln!(out, "  not hit by this workload: {}", idle.join(", "))?;
        }
        Ok(())
    }

    fn write_usage(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "\ntracer process during the load (CPU: user + system, all threads; memory: highest \
             of rounds; peak RSS is VmHWM, since start)"
        )?;
        writeln!(
            out,
            "{:<30} {:>10} {:>16} {:>10} {:>9} {:>9} {:>5} {:>9}",
            "mode",
            "CPU % core",
            "ms/100k conn",
            "% at 10k/s",
            "peak RSS",
            "BPF maps",
            "lost",
            "accepts seen"
        )?;
        for (m, mode) in self.tracers() {
            let samples: Vec<(&Sample, &Usage)> = self.samples[m]
                .iter()
                .filter_map(|s| Some((s, s.usage.as_ref()?)))
                .collect();
            let figure = |f: &dyn Fn(&Sample, &Usage) -> f64| {
                Spread::of(&samples.iter().map(|(s, u)| f(s, u)).collect::<Vec<_>>())
            };
            let connections = |s: &Sample| s.outcome.connections.max(1) as f64;
            let percent = figure(&|s, u| u.cpu_ns as f64 / (s.outcome.seconds * 1e9) * 100.0);
            let per_100k = figure(&|s, u| u.cpu_ns as f64 / 1e6 / connections(s) * 1e5);
            let at_10k = figure(&|s, u| u.cpu_ns as f64 / connections(s) * 1e4 / 1e9 * 100.0);
            let seen = figure(&|s, u| u.accepted as f64 / connections(s) * 100.0);
            let rss = samples
                .iter()
                .map(|(_, u)| u.peak_rss_kib)
                .max()
                .unwrap_or(0);
            let maps = samples.iter().map(|(_, u)| u.map_bytes).max().unwrap_or(0);
            let lost = samples.iter().filter_map(|(_, u)| u.lost_events).max();
            writeln!(
                out,
                "{:<30} {:>10} {:>16} {:>10} {:>6.1} MB {:>5.1} MiB {:>5} {:>11}%",
                mode.label(),
                median(percent, 2),
                show(per_100k, 0),
                median(at_10k, 2),
                rss as f64 / 1024.0,
                maps as f64 / (1024.0 * 1024.0),
                lost.map_or("-".into(), |l| l.to_string()),
                median(seen, 1),
            )?;
        }
        Ok(())
    }
}

fn median(spread: Option<Spread>, decimals: usize) -> String {
    spread.map_or_else(|| "-".into(), |s| format!("{:.d$}", s.median, d = decimals))
}

/// A tracer's figures that the targets are judged on.
#[derive(Clone, Copy, Debug)]
pub struct Headline {
    pub ns: Spread,
    pub beyond_floor: Option<Spread>,
    /// CPU % of one core at the rounds' own rate.
    pub cpu_percent: Option<Spread>,
    /// CPU % of one core at 10,000 connections/s, scaled from the cost per connection.
    pub cpu_scaled: Option<Spread>,
    pub top_rate: f64,
    pub lost: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(connections: u64, programs: &[(&str, Hook, u64, u64)]) -> Sample {
        Sample {
            outcome: Outcome {
                connections,
                seconds: 1.0,
            },
            programs: programs
                .iter()
                .map(|(name, hook, ns, runs)| ProgramRun {
                    name: (*name).into(),
                    hook: hook.clone(),
                    ns: *ns,
                    runs: *runs,
                })
                .collect(),
            usage: None,
        }
    }

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 4.0]).unwrap().median, 2.5);
        assert!(Spread::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn beyond_floor_subtracts_each_hooks_floor_per_run() {
        let raw = Hook::Raw("consume_skb".into());
        let tp = Hook::Tracepoint("sys_exit_accept4".into());
        let results = Results {
            workload: Workload::LoopClose,
            rounds: 1,
            seconds: 1,
            modes: vec![Mode::Untraced, Mode::Floor, Mode::Reference],
            samples: vec![
                vec![sample(100, &[])],
                // floor: 90 ns per run on consume_skb, 50 on accept4
                vec![sample(
                    200,
                    &[
                        ("f1", raw.clone(), 90 * 600, 600),
                        ("f2", tp.clone(), 50 * 200, 200),
                    ],
                )],
                // 100 connections; two programs share a name and are added up
                vec![sample(
                    100,
                    &[
                        ("syn", raw.clone(), 300 * 300, 300),
                        ("accept", tp.clone(), 200 * 100, 100),
                        ("accept", tp.clone(), 0, 0),
                    ],
                )],
            ],
        };
        let b = results.round_bpf(2, 0);
        assert_eq!(b.runs, 4.0);
        assert_eq!(b.ns, 900.0 + 200.0);
        assert_eq!(b.floor, 3.0 * 90.0 + 50.0);
        assert_eq!(b.beyond_floor, 1100.0 - 320.0);
        assert_eq!(b.programs.len(), 2);
        let text = results.render();
        assert!(text.contains("bpftrace-reference"), "{text}");
    }

    #[test]
    fn paired_ratios_are_taken_within_each_round() {
        let raw = Hook::Raw("consume_skb".into());
        let build = |tag: &str| Mode::Synscope {
            backend: "tracepoint".into(),
            binary: tag.into(),
            tag: Some(tag.into()),
        };
        let tracer = |ns: u64| sample(100, &[("syn", raw.clone(), ns * 100, 100)]);
        // The machine is twice as slow in round 2: every tracer's time doubles, and the
        // second build stays at 0.8 of the first in both rounds.
        let results = Results {
            workload: Workload::LoopClose,
            rounds: 2,
            seconds: 1,
            modes: vec![build("#1"), build("#2"), Mode::Reference],
            samples: vec![
                vec![tracer(1000), tracer(2000)],
                vec![tracer(800), tracer(1600)],
                vec![tracer(500), tracer(1000)],
            ],
        };
        let text = results.render();
        let line = |label: &str| {
            text.lines()
                .skip_while(|l| !l.starts_with("paired"))
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no paired line for {label}: {text}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        // The label's two words, then all programs, beyond the floor (no floor run here: "-"
        // for the second build) and / reference, each a median and its range but the first
        // build's own "1".
        let first = line("synscope-tracepoint #1");
        assert_eq!(
            (first[2].as_str(), first[4].as_str()),
            ("1", "2.000"),
            "{text}"
        );
        let second = line("synscope-tracepoint #2");
        assert_eq!(second[2..5], ["0.800", "(0.800-0.800)", "-"], "{text}");
        assert_eq!(second[5], "1.600", "{text}");
    }
}

//! Figures that must agree between backends on one kernel. The integration tests record them
//! (`synscope_tests::figure`, into the file `SYNSCOPE_FIGURES` names) with a relative
//! tolerance; after the matrix ran, every figure that two backends or more recorded on the
//! same kernel is compared.

use std::collections::BTreeMap;

/// backend -> (value, tolerance)
type ByBackend = BTreeMap<String, (f64, f64)>;

/// kernel -> figure -> backend -> (value, tolerance)
#[derive(Default)]
pub struct Figures {
    by_kernel: BTreeMap<String, BTreeMap<String, ByBackend>>,
}

impl Figures {
    /// Adds the lines of one cell's figure file: `name value tolerance`.
    pub fn add(&mut self, kernel: &str, backend: &str, text: &str) {
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, value, tolerance] = fields[..] else {
                continue;
            };
            let (Ok(value), Ok(tolerance)) = (value.parse(), tolerance.parse()) else {
                continue;
            };
            self.by_kernel
                .entry(kernel.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_default()
                .insert(backend.to_owned(), (value, tolerance));
        }
    }

    /// Prints the comparison per kernel; false if any figure disagrees.
    pub fn compare(&self) -> bool {
        let mut all_agree = true;
        for (kernel, figures) in &self.by_kernel {
            let compared: Vec<_> = figures.iter().filter(|(_, b)| b.len() > 1).collect();
            if compared.is_empty() {
                continue;
            }
            let mut disagreeing = 0;
            for (name, backends) in &compared {
                let values: Vec<f64> = backends.values().map(|(v, _)| *v).collect();
                let tolerance = backends.values().map(|(_, t)| *t).fold(0.0, f64::max);
                let agree = within(&values, tolerance);
                // Exact figures are only listed when they differ; measured ones always.
                if !agree || tolerance > 0.0 {
                    let listed: Vec<String> = backends
                        .iter()
                        .map(|(b, (v, _))| format!("{b} {}", shown(*v)))
                        .collect();
                    println!(
                        "  {} {kernel} {name}: {} (tolerance {:.0}%)",
                        if agree { "agree   " } else { "DISAGREE" },
                        listed.join(", "),
                        tolerance * 100.0
                    );
                }
                if !agree {
                    disagreeing += 1;
                }
            }
            println!(
                "{kernel} figures: {} compared between backends, {disagreeing} disagree",
                compared.len()
            );
            all_agree &= disagreeing == 0;
        }
        all_agree
    }
}

/// Whole numbers as they are, measurements to two decimals.
fn shown(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Whether the values lie within `tolerance` (relative to the largest magnitude) of each other.
fn within(values: &[f64], tolerance: f64) -> bool {
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let scale = values.iter().map(|v| v.abs()).fold(0.0, f64::max);
    max - min <= tolerance * scale + 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_relative_tolerances() {
        assert!(within(&[500.0, 500.0, 500.0], 0.0));
        assert!(!within(&[500.0, 499.0], 0.0));
        assert!(within(&[50.0, 65.0], 0.3));
        assert!(!within(&[50.0, 80.0], 0.3));
    }

    #[test]
    fn only_figures_of_two_backends_are_compared() {
        let mut figures = Figures::default();
        figures.add("6.1", "fentry", "t/a 10 0\nt/b 5 0\nbad line\n");
        figures.add("6.1", "kprobe", "t/a 10 0\n");
        assert!(figures.compare());
        figures.add("6.1", "tracepoint", "t/a 11 0\n");
        assert!(!figures.compare());
    }
}

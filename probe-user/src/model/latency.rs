//! Latency distributions: HdrHistogram with 3 significant digits, recorded in nanoseconds and
//! reported in microseconds. A distribution of few values keeps them as they are: an
//! HdrHistogram costs 16 KB empty and 60-170 KB once filled, and a machine with ten thousand
//! quiet listeners has a dozen distributions for each.

use std::borrow::Cow;

use hdrhistogram::Histogram;

use crate::report::schema::LatencySummary;

const SIGNIFICANT_DIGITS: u8 = 3;

/// Values kept as they are (8 bytes each) before they go into a histogram.
const KEPT_AS_VALUES: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct Latency {
    values: Values,
}

#[derive(Clone, Debug)]
enum Values {
    /// At most [`KEPT_AS_VALUES`], in nanoseconds (at least 1).
    Few(Vec<u64>),
    Many(Box<Histogram<u64>>),
}

impl Default for Values {
    fn default() -> Self {
        Values::Few(Vec::new())
    }
}

impl Latency {
    pub fn record_ns(&mut self, nanoseconds: u64) {
        // Zero is not representable with a lowest value of 1; a sub-nanosecond stage is 1 ns.
        let nanoseconds = nanoseconds.max(1);
        match &mut self.values {
            Values::Few(values) if values.len() < KEPT_AS_VALUES => values.push(nanoseconds),
            Values::Few(values) => {
                let mut histogram = histogram_of(values);
                record(&mut histogram, nanoseconds);
                self.values = Values::Many(Box::new(histogram));
            }
            Values::Many(histogram) => record(histogram, nanoseconds),
        }
    }

    pub fn is_empty(&self) -> bool {
        match &self.values {
            Values::Few(values) => values.is_empty(),
            Values::Many(histogram) => histogram.is_empty(),
        }
    }

    /// The recorded values, in nanoseconds (a histogram made for the occasion while they are
    /// few).
    pub fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        match &self.values {
            Values::Few(values) => Cow::Owned(histogram_of(values)),
            Values::Many(histogram) => Cow::Borrowed(histogram),
        }
    }

    /// Adds `other`'s values: the whole run is the sum of its intervals.
    pub fn merge(&mut self, other: &Latency) {
        match &other.values {
            Values::Few(values) => values.iter().for_each(|&v| self.record_ns(v)),
            Values::Many(theirs) => {
                if let Values::Few(values) = &self.values {
                    self.values = Values::Many(Box::new(histogram_of(values)));
                }
                let Values::Many(mine) = &mut self.values else {
                    unreachable!("made a histogram just above");
                };
                if mine.add(theirs.as_ref()).is_err() {
                    // Only when a value cannot be represented at all; keep what can be.
                    for value in theirs.iter_recorded() {
                        mine.saturating_record_n(value.value_iterated_to(), value.count_at_value());
                    }
                }
            }
        }
    }

    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary::default();
        }
        let h = self.histogram();
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        LatencySummary {
            count: h.len(),
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: round3(h.mean() / 1000.0),
            spectrum: SPECTRUM
                .iter()
                .map(|&percentile| [percentile, us(h.value_at_percentile(percentile))])
                .collect(),
        }
    }
}

/// An auto-resizing histogram of `values`, no larger than they need.
fn histogram_of(values: &[u64]) -> Histogram<u64> {
    let highest = values.iter().copied().max().unwrap_or(0).max(2);
    let mut histogram = Histogram::new_with_bounds(1, highest, SIGNIFICANT_DIGITS)
        .expect("bounds of at least 1 and 2 with 3 significant digits are valid");
    // A handshake retried for minutes still fits what comes later.
    histogram.auto(true);
    values.iter().for_each(|&v| record(&mut histogram, v));
    histogram
}

fn record(histogram: &mut Histogram<u64>, nanoseconds: u64) {
    // `record` (not `saturating_record`, which clamps to the current top) lets the
    // auto-resizing histogram grow; it only fails for values beyond u64 range checks.
    if histogram.record(nanoseconds).is_err() {
        histogram.saturating_record(nanoseconds);
    }
}

/// The percentiles of a spectrum: halving the distance to 100 % at each step past 50, as
/// HdrHistogram's percentile distributions do, to 99.999.
const SPECTRUM: [f64; 16] = [
    0.0, 25.0, 50.0, 75.0, 87.5, 90.0, 93.75, 96.875, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995,
    99.999, 100.0,
];

/// Microseconds with nanosecond resolution, without binary-float noise in the JSON.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_distribution_is_all_zero() {
        assert_eq!(Latency::default().summary(), LatencySummary::default());
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut latency = Latency::default();
        for us in 1..=1000u64 {
            latency.record_ns(us * 1000);
        }
        let s = latency.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 1.0);
        // 3 significant digits: each value within 0.1 % of the exact one.
        for (got, want) in [
            (s.p50, 500.0),
            (s.p90, 900.0),
            (s.p99, 990.0),
            (s.p999, 999.0),
            (s.max, 1000.0),
        ] {
            assert!((got - want).abs() <= want * 0.001, "got {got}, want {want}");
        }
        assert!((s.mean - 500.5).abs() < 0.5, "mean {}", s.mean);
    }

    #[test]
    fn few_values_and_a_histogram_summarise_alike() {
        let values: Vec<u64> = (1..=KEPT_AS_VALUES as u64 * 3)
            .map(|i| i * i * 37 % 9_000_000 + 1)
            .collect();
        let mut histogram = Histogram::<u64>::new(SIGNIFICANT_DIGITS).unwrap();
        for &v in &values {
            histogram.record(v).unwrap();
        }
        for n in [1, 2, 17, KEPT_AS_VALUES, KEPT_AS_VALUES + 1, values.len()] {
            let mut latency = Latency::default();
            let mut reference = Histogram::<u64>::new(SIGNIFICANT_DIGITS).unwrap();
            for &v in &values[..n] {
                latency.record_ns(v);
                reference.record(v).unwrap();
            }
            let direct = Latency {
                values: Values::Many(Box::new(reference)),
            };
            assert_eq!(latency.summary(), direct.summary(), "{n} values");
            // Merged from two halves, either way.
            let (mut first, mut second) = (Latency::default(), Latency::default());
            values[..n / 2].iter().for_each(|&v| first.record_ns(v));
            values[n / 2..n].iter().for_each(|&v| second.record_ns(v));
            second.merge(&first);
            assert_eq!(second.summary(), direct.summary(), "{n} values merged");
        }
        assert!(matches!(Latency::default().values, Values::Few(ref v) if v.capacity() == 0));
    }

    #[test]
    fn keeps_sub_microsecond_and_multi_second_values() {
        let mut latency = Latency::default();
        latency.record_ns(0);
        latency.record_ns(250);
        latency.record_ns(75_000_000_000);
        let s = latency.summary();
        assert_eq!(s.min, 0.001);
        assert!((s.max - 75_000_000.0).abs() <= 75_000_000.0 * 0.001);
    }
}

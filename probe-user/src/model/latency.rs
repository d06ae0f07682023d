//! Latency distributions: HdrHistogram with 3 significant digits, recorded in nanoseconds and
//! reported in microseconds.

use hdrhistogram::Histogram;

use crate::report::schema::LatencySummary;

const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            // Auto-resizing: a handshake retried for minutes still fits.
            histogram: Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is valid"),
        }
    }
}

impl Latency {
    pub fn record_ns(&mut self, nanoseconds: u64) {
        // Zero is not representable with a lowest value of 1; a sub-nanosecond stage is 1 ns.
        // `record` (not `saturating_record`, which clamps to the current top) lets the
        // auto-resizing histogram grow; it only fails for values beyond u64 range checks.
        if self.histogram.record(nanoseconds.max(1)).is_err() {
            self.histogram.saturating_record(nanoseconds);
        }
    }

    /// The recorded values, in nanoseconds.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Adds `other`'s values: the whole run is the sum of its intervals.
    pub fn merge(&mut self, other: &Latency) {
        if self.histogram.add(&other.histogram).is_err() {
            // Only when a value cannot be represented at all; keep what can be.
            for value in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
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

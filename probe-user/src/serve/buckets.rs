//! Cumulative Prometheus histograms fed from the sessions' HdrHistograms.

use crate::model::latency::Latency;

/// Upper bounds, in seconds: 10 µs to 10 s in 1-2.5-5 steps. The listen path's waits span
/// that range: a loopback handshake takes tens of microseconds, an accept queue behind a
/// blocked event loop seconds. Three buckets per decade keep `histogram_quantile` within a
/// factor of 2.5 and a listener's series at 22.
pub const BOUNDS_SECONDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts since the start (the `+Inf` bucket is `count`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CumulativeHistogram {
    /// Samples at or below each bound of [`BOUNDS_SECONDS`].
    pub at_or_below: [u64; BOUNDS_SECONDS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl CumulativeHistogram {
    /// Adds an interval's samples.
    pub fn add(&mut self, latency: &Latency) {
        if latency.is_empty() {
            return;
        }
        let histogram = latency.histogram();
        for recorded in histogram.iter_recorded() {
            let nanoseconds = recorded.value_iterated_to();
            let samples = recorded.count_at_value();
            self.count += samples;
            self.sum_seconds += nanoseconds as f64 * 1e-9 * samples as f64;
            let seconds = nanoseconds as f64 * 1e-9;
            for (bound, below) in BOUNDS_SECONDS.iter().zip(&mut self.at_or_below) {
                if seconds <= *bound {
                    *below += samples;
                }
            }
        }
    }

    /// Adds another series' counts (listeners folded into one).
    pub fn merge(&mut self, other: &CumulativeHistogram) {
        for (mine, theirs) in self.at_or_below.iter_mut().zip(other.at_or_below) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }

    /// `(upper bound, cumulative count)` pairs, `+Inf` last, as Prometheus shows them.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS_SECONDS
            .iter()
            .copied()
            .zip(self.at_or_below)
            .chain([(f64::INFINITY, self.count)])
            .collect()
    }

    /// `(upper bound, samples in that bucket alone)`: what prometheus-client's encoder takes
    /// (it sums them into the cumulative `_bucket` series itself).
    pub fn bucket_counts(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        self.buckets()
            .into_iter()
            .map(|(bound, at_or_below)| {
                let own = at_or_below - below;
                below = at_or_below;
                (bound, own)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_every_bucket_at_or_above_them() {
        let mut latency = Latency::default();
        latency.record_ns(7_000); // 7 µs: every bucket
        latency.record_ns(300_000); // 300 µs: from 0.5 ms up
        latency.record_ns(3_000_000_000); // 3 s: from 5 s up
        latency.record_ns(60_000_000_000); // a minute: +Inf only
        let mut histogram = CumulativeHistogram::default();
        histogram.add(&latency);
        let buckets = histogram.buckets();
        let at = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.000_01), 1);
        assert_eq!(at(0.000_25), 1);
        assert_eq!(at(0.000_5), 2);
        assert_eq!(at(2.5), 2);
        assert_eq!(at(5.0), 3);
        assert_eq!(at(10.0), 3);
        assert_eq!(at(f64::INFINITY), 4);
        assert_eq!(histogram.count, 4);
        // HdrHistogram keeps 3 significant digits.
        let sum = 7e-6 + 300e-6 + 3.0 + 60.0;
        assert!((histogram.sum_seconds - sum).abs() < sum * 0.001);
        // Buckets never decrease.
        assert!(buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1));

        let own: Vec<u64> = histogram.bucket_counts().iter().map(|(_, n)| *n).collect();
        assert_eq!(own.iter().sum::<u64>(), 4);
        assert_eq!((own[0], own[5], own[17], own[19]), (1, 1, 1, 1));

        let mut twice = histogram.clone();
        twice.merge(&histogram);
        assert_eq!(twice.count, 8);
        assert_eq!(twice.at_or_below[0], 2);
    }
}

//! Numbers as people read them, shared by the human-readable formats.

/// A latency in the unit that keeps it to 3-4 digits: 0.8µs, 45µs, 2.3ms, 150ms, 1.20s.
pub fn human_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1}µs")
    } else if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 10_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.0}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units_stay_short() {
        assert_eq!(human_us(0.8), "0.8µs");
        assert_eq!(human_us(45.2), "45µs");
        assert_eq!(human_us(2_345.0), "2.35ms");
        assert_eq!(human_us(150_000.0), "150ms");
        assert_eq!(human_us(1_200_000.0), "1.20s");
        assert_eq!(human_us(75_000_000.0), "75.00s");
    }
}

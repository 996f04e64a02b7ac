//! Event time and watermarks. Times are milliseconds since the Unix epoch, as in Flink and
//! Kafka record timestamps.

/// An event time in milliseconds since the Unix epoch.
pub type EventTime = i64;

/// A watermark `w` asserts that no more rows with event time `<= w` will arrive (Flink's
/// definition). A window `[start, end)` is complete once `w >= end - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watermark(pub EventTime);

impl Watermark {
    /// Before any row has been seen.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// End of input: every window is complete.
    pub const MAX: Watermark = Watermark(i64::MAX);

    /// The watermark for bounded out-of-orderness: rows may arrive up to `delay_ms` later than
    /// the highest event time seen so far.
    pub fn bounded_out_of_orderness(max_event_time: EventTime, delay_ms: i64) -> Self {
        Watermark(max_event_time.saturating_sub(delay_ms).saturating_sub(1))
    }

    /// Whether a window ending (exclusively) at `end` is complete under this watermark.
    pub fn closes_window_ending_at(self, end: EventTime) -> bool {
        self.0 >= end.saturating_sub(1)
    }
}

impl std::fmt::Display for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Watermark::MIN => write!(f, "-inf"),
            Watermark::MAX => write!(f, "+inf"),
            Watermark(t) => write!(f, "{t}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_out_of_orderness_follows_flink() {
        // Flink: maxTimestamp - outOfOrderness - 1.
        let w = Watermark::bounded_out_of_orderness(10_000, 2_000);
        assert_eq!(w, Watermark(7_999));
        assert!(!w.closes_window_ending_at(9_000));
        assert!(w.closes_window_ending_at(8_000));
        assert!(Watermark::MAX.closes_window_ending_at(i64::MAX));
    }
}

//! Watermark bookkeeping: per source partition (bounded out-of-orderness, the minimum over
//! the partitions a source instance reads) and per input channel of a stage (the minimum
//! over its senders). Watermarks only move forward.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use millrace_types::{EventTime, SourcePartition, Watermark};

/// The watermark of one source instance over the partitions assigned to it.
#[derive(Debug)]
pub struct PartitionWatermarks {
    max_out_of_orderness_ms: i64,
    idle_timeout: Option<Duration>,
    /// Highest event time seen per partition (`None` until the partition yields a row), and
    /// when the partition last yielded one (or was assigned).
    partitions: BTreeMap<SourcePartition, (Option<EventTime>, Instant)>,
    emitted: Watermark,
}

impl PartitionWatermarks {
    pub fn new(max_out_of_orderness_ms: i64, idle_timeout: Option<Duration>) -> Self {
        Self { max_out_of_orderness_ms, idle_timeout, partitions: BTreeMap::new(), emitted: Watermark::MIN }
    }

    /// Sets the partitions this instance reads; unseen partitions hold the watermark back
    /// (until they count as idle).
    pub fn assign(&mut self, partitions: &[SourcePartition], now: Instant) {
        self.partitions.retain(|p, _| partitions.contains(p));
        for p in partitions {
            self.partitions.entry(*p).or_insert((None, now));
        }
    }

    /// Records the highest event time of a batch from `partition`.
    pub fn observe(&mut self, partition: SourcePartition, max_event_time: EventTime, now: Instant) {
        let (seen, active) = self.partitions.entry(partition).or_insert((None, now));
        *seen = Some(seen.map_or(max_event_time, |m| m.max(max_event_time)));
        *active = now;
    }

    /// The new watermark if it advanced since the last call: the minimum over the partitions
    /// that are not idle (if all are idle, the watermark holds).
    pub fn advance(&mut self, now: Instant) -> Option<Watermark> {
        let idle =
            |active: &Instant| self.idle_timeout.is_some_and(|t| now.saturating_duration_since(*active) >= t);
        let min = self
            .partitions
            .values()
            .filter(|(_, active)| !idle(active))
            .map(|(seen, _)| match seen {
                Some(t) => Watermark::bounded_out_of_orderness(*t, self.max_out_of_orderness_ms),
                None => Watermark::MIN,
            })
            .min()?;
        (min > self.emitted).then(|| {
            self.emitted = min;
            min
        })
    }
}

/// The watermark of a stage instance fed by several upstream senders.
#[derive(Debug)]
pub struct InputWatermarks {
    per_sender: Vec<Watermark>,
    ended: Vec<bool>,
    emitted: Watermark,
}

impl InputWatermarks {
    pub fn new(senders: usize) -> Self {
        Self {
            per_sender: vec![Watermark::MIN; senders],
            ended: vec![false; senders],
            emitted: Watermark::MIN,
        }
    }

    /// Records a sender's watermark; returns the merged watermark if it advanced.
    pub fn update(&mut self, sender: usize, watermark: Watermark) -> Option<Watermark> {
        if let Some(w) = self.per_sender.get_mut(sender) {
            *w = (*w).max(watermark);
        }
        let min = self.per_sender.iter().copied().min().unwrap_or(Watermark::MIN);
        (min > self.emitted).then(|| {
            self.emitted = min;
            min
        })
    }

    /// Records that a sender finished; returns true once every sender has.
    pub fn end(&mut self, sender: usize) -> bool {
        if let Some(e) = self.ended.get_mut(sender) {
            *e = true;
        }
        self.ended.iter().all(|e| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_watermark_is_the_minimum_and_waits_for_every_partition() {
        let now = Instant::now();
        let mut w = PartitionWatermarks::new(1000, None);
        w.assign(&[SourcePartition(0), SourcePartition(1)], now);
        w.observe(SourcePartition(0), 10_000, now);
        assert_eq!(w.advance(now), None, "partition 1 has not been seen");
        w.observe(SourcePartition(1), 5_000, now);
        assert_eq!(w.advance(now), Some(Watermark(3_999)));
        w.observe(SourcePartition(1), 4_000, now);
        assert_eq!(w.advance(now), None, "watermarks never go back");
        w.observe(SourcePartition(1), 20_000, now);
        assert_eq!(w.advance(now), Some(Watermark(8_999)));
        assert_eq!(w.advance(now + Duration::from_secs(3600)), None, "without a timeout nothing is idle");
    }

    #[test]
    fn idle_partitions_stop_holding_the_watermark_back() {
        let start = Instant::now();
        let timeout = Duration::from_secs(5);
        let mut w = PartitionWatermarks::new(0, Some(timeout));
        w.assign(&[SourcePartition(0), SourcePartition(1)], start);
        w.observe(SourcePartition(0), 10_000, start);
        assert_eq!(w.advance(start), None, "partition 1 is silent but not idle yet");
        let later = start + timeout;
        assert_eq!(w.advance(later), None, "every partition is idle: the watermark holds");
        w.observe(SourcePartition(0), 12_000, later);
        assert_eq!(w.advance(later), Some(Watermark(11_999)), "partition 1 is idle and ignored");
        w.observe(SourcePartition(1), 500, later);
        assert_eq!(w.advance(later), None, "a partition back from idleness cannot move the watermark back");
    }

    #[test]
    fn input_watermark_is_the_minimum_over_senders() {
        let mut w = InputWatermarks::new(2);
        assert_eq!(w.update(0, Watermark(5)), None);
        assert_eq!(w.update(1, Watermark(3)), Some(Watermark(3)));
        assert_eq!(w.update(1, Watermark(9)), Some(Watermark(5)));
        assert!(!w.end(0));
        assert!(w.end(1));
    }
}

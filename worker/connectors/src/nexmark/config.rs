//! The Nexmark event sequence as pure arithmetic: which kind of event event number `n` is,
//! its id, its event time, the ids it may refer to, which numbers a source instance owns, and
//! the wall-clock pacing schedule. Follows the Beam / nexmark-flink `GeneratorConfig`
//! (1 person, 3 auctions and 46 bids in every 50 events; ids derived from event numbers;
//! out-of-order groups permuted by `n * 953 mod size`). No randomness and no Arrow here.

use std::time::Duration;

/// Events per proportion period and the share of each kind (Beam's defaults).
pub const PERSON_PROPORTION: u64 = 1;
pub const AUCTION_PROPORTION: u64 = 3;
pub const BID_PROPORTION: u64 = 46;
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// The first ids handed out (Beam's `FIRST_PERSON_ID`, `FIRST_AUCTION_ID`, `FIRST_CATEGORY_ID`).
pub const FIRST_PERSON_ID: i64 = 1000;
pub const FIRST_AUCTION_ID: i64 = 1000;
pub const FIRST_CATEGORY_ID: i64 = 10;

/// The default event-time rate: nexmark-flink's benchmark suite runs at 10 M events/s.
pub const DEFAULT_FIRST_EVENT_RATE: u64 = 10_000_000;

/// The three kinds of Nexmark event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Person,
    Auction,
    Bid,
}

impl EventKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "person" => Some(EventKind::Person),
            "auction" => Some(EventKind::Auction),
            "bid" => Some(EventKind::Bid),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Person => "person",
            EventKind::Auction => "auction",
            EventKind::Bid => "bid",
        }
    }

    /// The kind of the event with id `event_id`.
    pub fn of(event_id: u64) -> Self {
        let rem = event_id % TOTAL_PROPORTION;
        if rem < PERSON_PROPORTION {
            EventKind::Person
        } else if rem < PERSON_PROPORTION + AUCTION_PROPORTION {
            EventKind::Auction
        } else {
            EventKind::Bid
        }
    }
}

/// A Nexmark source table's settings (`WITH (connector = 'nexmark', …)`).
#[derive(Debug, Clone, PartialEq)]
pub struct NexmarkConfig {
    /// Which events of the sequence this table's rows are.
    pub kind: EventKind,
    /// Length of the global sequence (all kinds, all instances); unbounded if `None`.
    pub events: Option<u64>,
    /// Wall-clock generation rate of the global sequence; `None`: as fast as possible.
    pub events_per_second: Option<f64>,
    /// The rate event times are computed from (events per second of event time).
    pub first_event_rate: u64,
    pub out_of_order_group_size: u64,
    pub seed: u64,
    pub batch_size: usize,
    /// Event time of event 0, ms since the epoch.
    pub base_time_ms: i64,
    /// Beam's defaults: the people and auctions bids and auctions pick from.
    pub num_active_people: u64,
    pub num_in_flight_auctions: u64,
    /// `1 - 1/ratio` of bids go to a hot auction / come from a hot bidder; of auctions, from a
    /// hot seller.
    pub hot_auction_ratio: u32,
    pub hot_bidders_ratio: u32,
    pub hot_sellers_ratio: u32,
    /// Average row sizes the `extra` column pads to.
    pub avg_person_bytes: usize,
    pub avg_auction_bytes: usize,
    pub avg_bid_bytes: usize,
}

impl NexmarkConfig {
    /// Beam's defaults for everything but the kind and the base time.
    pub fn new(kind: EventKind, base_time_ms: i64) -> Self {
        Self {
            kind,
            events: None,
            events_per_second: None,
            first_event_rate: DEFAULT_FIRST_EVENT_RATE,
            out_of_order_group_size: 1,
            seed: 0,
            batch_size: 8192,
            base_time_ms,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
            hot_auction_ratio: 2,
            hot_bidders_ratio: 4,
            hot_sellers_ratio: 4,
            avg_person_bytes: 200,
            avg_auction_bytes: 500,
            avg_bid_bytes: 100,
        }
    }

    /// The event at position `n` of the sequence carries the id (and event time) of event
    /// `adjusted(n)`: positions are permuted within groups of `out_of_order_group_size`, so
    /// event times are out of order by less than one group.
    pub fn adjusted(&self, n: u64) -> u64 {
        let size = self.out_of_order_group_size.max(1);
        let base = (n / size) * size;
        // 953 is prime, so this permutes each group unless its size is a multiple of 953.
        let offset = ((n as u128 * 953) % size as u128) as u64;
        base + offset
    }

    /// Event time of event `event_id`, ms since the epoch.
    pub fn timestamp_ms(&self, event_id: u64) -> i64 {
        let rate = self.first_event_rate.max(1);
        // 64-bit arithmetic while it cannot overflow (below 1.8e13 events), 128-bit beyond.
        let offset_us = match event_id.checked_mul(1_000_000) {
            Some(us) => us / rate,
            None => (u128::from(event_id) * 1_000_000 / u128::from(rate)) as u64,
        };
        self.base_time_ms + (offset_us / 1000) as i64
    }

    /// The last person id (base 0) created at or before event `event_id`.
    pub fn last_base0_person_id(&self, event_id: u64) -> u64 {
        // Beam adds the offset inside the period, clamped to PERSON_PROPORTION - 1: always 0
        // with one person per period.
        const _: () = assert!(PERSON_PROPORTION == 1);
        event_id / TOTAL_PROPORTION
    }

    /// The last auction id (base 0) created at or before event `event_id` (0 before the first).
    pub fn last_base0_auction_id(&self, event_id: u64) -> u64 {
        let epoch = event_id / TOTAL_PROPORTION;
        let offset = event_id % TOTAL_PROPORTION;
        if offset < PERSON_PROPORTION {
            // A person: the last auction of the previous period.
            (epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1).saturating_sub(AUCTION_PROPORTION)
        } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
            // A bid: the last auction of this period.
            epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1
        } else {
            epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION
        }
    }

    /// Events until `num_in_flight_auctions` more auctions have been created.
    pub fn events_for_in_flight_auctions(&self) -> u64 {
        self.num_in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION
    }

    /// Positions of the sequence that instance `instance` of `instances` owns: every
    /// `instances`-th one from `instance`, so every instance's event times advance together.
    pub fn positions(&self, instance: usize, instances: usize) -> InstancePositions {
        InstancePositions {
            next: instance as u64,
            stride: instances.max(1) as u64,
            end: self.events.unwrap_or(u64::MAX),
        }
    }

    /// How many positions instance `instances`' share may have produced `elapsed` after the
    /// start (`None`: no limit): each instance paces `events_per_second / instances`.
    pub fn positions_due(&self, elapsed: Duration, instances: usize) -> Option<u64> {
        let rate = self.events_per_second.filter(|r| *r > 0.0)?;
        Some((elapsed.as_secs_f64() * rate / instances.max(1) as f64) as u64)
    }

    /// When the instance's `count`-th position (counted from 0) is due, after the start.
    pub fn position_due_at(&self, count: u64, instances: usize) -> Option<Duration> {
        let rate = self.events_per_second.filter(|r| *r > 0.0)?;
        Some(Duration::from_secs_f64(count as f64 * instances.max(1) as f64 / rate))
    }
}

/// The positions one instance owns, in order.
#[derive(Debug, Clone)]
pub struct InstancePositions {
    next: u64,
    stride: u64,
    end: u64,
}

impl InstancePositions {
    /// These positions after the first `taken` (where a restored instance resumes).
    pub fn resumed(mut self, taken: u64) -> Self {
        self.next = self.next.saturating_add(taken.saturating_mul(self.stride));
        self
    }

    /// `true` once every position has been taken.
    pub fn is_done(&self) -> bool {
        self.next >= self.end
    }
}

impl Iterator for InstancePositions {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let n = self.next;
        self.next = self.next.saturating_add(self.stride);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fifty_events_hold_one_person_three_auctions_and_46_bids() {
        let mut counts = [0u32; 3];
        for id in 0..5_000 {
            counts[EventKind::of(id) as usize] += 1;
        }
        assert_eq!(counts, [100, 300, 4600]);
        assert_eq!(EventKind::of(0), EventKind::Person);
        assert_eq!(EventKind::of(1), EventKind::Auction);
        assert_eq!(EventKind::of(3), EventKind::Auction);
        assert_eq!(EventKind::of(4), EventKind::Bid);
        assert_eq!(EventKind::of(50), EventKind::Person);
    }

    #[test]
    fn ids_follow_event_numbers() {
        let c = NexmarkConfig::new(EventKind::Bid, 0);
        // Event 50 is the second person, events 51..=53 the 4th to 6th auctions.
        assert_eq!(c.last_base0_person_id(50), 1);
        assert_eq!(c.last_base0_person_id(99), 1);
        assert_eq!(c.last_base0_auction_id(51), 3);
        assert_eq!(c.last_base0_auction_id(53), 5);
        assert_eq!(c.last_base0_auction_id(60), 5);
        assert_eq!(c.last_base0_auction_id(100), 5);
        assert_eq!(c.last_base0_auction_id(0), 0);
    }

    #[test]
    fn out_of_order_groups_permute_positions_and_bound_the_disorder() {
        let mut c = NexmarkConfig::new(EventKind::Bid, 1_000);
        c.out_of_order_group_size = 100;
        c.first_event_rate = 1_000;
        let adjusted: Vec<u64> = (0..1_000).map(|n| c.adjusted(n)).collect();
        let mut sorted = adjusted.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1_000).collect::<Vec<_>>(), "a permutation");
        assert_ne!(adjusted, sorted, "out of order");
        // Event time never runs behind the highest seen by more than one group's span.
        let mut max_seen = i64::MIN;
        for &a in &adjusted {
            let ts = c.timestamp_ms(a);
            max_seen = max_seen.max(ts);
            assert!(max_seen - ts < 100, "{max_seen} vs {ts}");
        }
        assert_eq!(c.timestamp_ms(0), 1_000);
        assert_eq!(c.timestamp_ms(1_500), 2_500);
    }

    #[test]
    fn instances_split_the_sequence_without_overlap() {
        let mut c = NexmarkConfig::new(EventKind::Bid, 0);
        c.events = Some(1_001);
        let mut all: Vec<u64> = (0..3).flat_map(|i| c.positions(i, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1_001).collect::<Vec<_>>());
    }

    #[test]
    fn the_pacing_schedule_honours_the_rate() {
        let mut c = NexmarkConfig::new(EventKind::Bid, 0);
        assert_eq!(c.positions_due(Duration::from_secs(10), 2), None, "unlimited");
        c.events_per_second = Some(1_000.0);
        // Two instances share 1,000 events/s: 500 each.
        assert_eq!(c.positions_due(Duration::from_secs(2), 2), Some(1_000));
        assert_eq!(c.positions_due(Duration::from_millis(1), 1), Some(1));
        assert_eq!(c.position_due_at(500, 2), Some(Duration::from_secs(1)));
        c.events_per_second = Some(0.0);
        assert_eq!(c.position_due_at(500, 2), None, "0 is max speed");
    }
}

//! The random parts of Nexmark events, as the Beam / nexmark-flink generators draw them: each
//! event has its own random stream seeded by its id (and the table's `seed`), so an event's
//! values never depend on which instance made it or on the events before it.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::config::NexmarkConfig;

/// Beam's `PERSON_ID_LEAD` / `AUCTION_ID_LEAD`: references may point a little into the future.
const PERSON_ID_LEAD: u64 = 10;
const AUCTION_ID_LEAD: u64 = 10;

/// The random stream of event `event_id`.
pub fn event_rng(seed: u64, event_id: u64) -> SmallRng {
    // seed_from_u64 scrambles its input (SplitMix64), so neighbouring ids give unrelated streams.
    SmallRng::seed_from_u64(event_id ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A uniform integer in `[0, n)` (`0` when `n == 0`).
pub fn below(rng: &mut SmallRng, n: u64) -> u64 {
    if n == 0 { 0 } else { rng.random_range(0..n) }
}

/// A price in cents, log-uniform in `[100, 100_000_000)` (Beam's `PriceGenerator`).
pub fn next_price(rng: &mut SmallRng) -> i64 {
    (10f64.powf(rng.random::<f64>() * 6.0) * 100.0).round() as i64
}

/// One of the active people, or a few not created yet (base 0).
pub fn next_base0_person_id(config: &NexmarkConfig, event_id: u64, rng: &mut SmallRng) -> u64 {
    let people = config.last_base0_person_id(event_id) + 1;
    let active = people.min(config.num_active_people);
    people - active + below(rng, active + PERSON_ID_LEAD)
}

/// One of the auctions likely still open, or a few not created yet (base 0).
pub fn next_base0_auction_id(config: &NexmarkConfig, event_id: u64, rng: &mut SmallRng) -> u64 {
    let max = config.last_base0_auction_id(event_id);
    let min = max.saturating_sub(config.num_in_flight_auctions);
    min + below(rng, max - min + 1 + AUCTION_ID_LEAD)
}

/// Appends `len` random lowercase letters, eight from each 64-bit draw: byte `b` of the draw
/// (little-endian order) becomes letter `(b * 26) >> 8` (multiply-shift onto 0..26; the bias is
/// well below 1%).
pub fn push_letters(rng: &mut SmallRng, len: usize, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.reserve(len);
    let mut left = len;
    while left > 0 {
        let letters = eight_letters(rng.next_u64()).to_le_bytes();
        let take = left.min(letters.len());
        bytes.extend_from_slice(&letters[..take]);
        left -= take;
    }
    // One check of the whole text (ASCII letters after text that was UTF-8 already).
    *out = String::from_utf8(bytes).expect("lowercase ASCII letters");
}

/// Maps each byte `b` of `bits` to the ASCII letter `b'a' + ((b * 26) >> 8)`, all eight at once:
/// the even and the odd bytes each sit alone in a 16-bit lane, where `b * 26 <= 6630` cannot
/// carry into the next lane.
fn eight_letters(bits: u64) -> u64 {
    const LOW_BYTES: u64 = 0x00FF_00FF_00FF_00FF;
    let even = (((bits & LOW_BYTES) * 26) >> 8) & LOW_BYTES;
    let odd = (((bits >> 8) & LOW_BYTES) * 26) & !LOW_BYTES;
    (even | odd) + 0x6161_6161_6161_6161
}

/// Beam's `nextString`: 3 to `max_len - 1` characters, each a letter or (1 in 13) `special`,
/// trimmed of spaces.
pub fn push_string(rng: &mut SmallRng, max_len: u64, special: char, out: &mut String) {
    let len = 3 + below(rng, max_len.saturating_sub(3));
    let start = out.len();
    for _ in 0..len {
        if below(rng, 13) == 0 {
            out.push(special);
        } else {
            out.push(char::from(b'a' + below(rng, 26) as u8));
        }
    }
    if special == ' ' {
        let trimmed = out[start..].trim().to_string();
        out.truncate(start);
        out.push_str(&trimmed);
    }
}

/// Beam's `nextExtra`: letters that pad a row of `current_size` bytes to about
/// `average_size` (±20 %).
pub fn push_extra(rng: &mut SmallRng, current_size: usize, average_size: usize, out: &mut String) {
    if current_size > average_size {
        return;
    }
    let wanted = average_size - current_size;
    let delta = (wanted as f64 * 0.2).round() as usize;
    let size = wanted - delta + below(rng, 2 * delta as u64) as usize;
    push_letters(rng, size, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexmark::config::EventKind;

    #[test]
    fn prices_and_strings_stay_in_their_ranges() {
        let mut rng = event_rng(7, 1);
        for _ in 0..10_000 {
            let price = next_price(&mut rng);
            assert!((100..=100_000_000).contains(&price), "{price}");
        }
        let mut s = String::new();
        for _ in 0..1_000 {
            s.clear();
            push_string(&mut rng, 20, ' ', &mut s);
            assert!(s.len() < 20 && s == s.trim(), "{s:?}");
            s.clear();
            push_extra(&mut rng, 32, 100, &mut s);
            assert!((54..82).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase()), "{s}");
        }
    }

    #[test]
    fn eight_letters_maps_every_byte_as_one_at_a_time_would() {
        let one_at_a_time = |bits: u64| bits.to_le_bytes().map(|b| b'a' + ((u32::from(b) * 26) >> 8) as u8);
        let mut rng = event_rng(3, 11);
        let mut draws: Vec<u64> = (0..10_000).map(|_| rng.next_u64()).collect();
        draws.extend([0, u64::MAX, 0x00FF_00FF_00FF_00FF, 0xFF00_FF00_FF00_FF00, 0x0123_4567_89AB_CDEF]);
        for bits in draws {
            assert_eq!(eight_letters(bits).to_le_bytes(), one_at_a_time(bits), "{bits:#x}");
        }
    }

    #[test]
    fn references_point_at_existing_or_soon_created_ids() {
        let config = NexmarkConfig::new(EventKind::Bid, 0);
        for id in (4..200_000).step_by(997) {
            let mut rng = event_rng(0, id);
            let person = next_base0_person_id(&config, id, &mut rng);
            assert!(person <= config.last_base0_person_id(id) + PERSON_ID_LEAD);
            let auction = next_base0_auction_id(&config, id, &mut rng);
            let last = config.last_base0_auction_id(id);
            assert!(auction + config.num_in_flight_auctions >= last && auction <= last + AUCTION_ID_LEAD);
        }
    }
}

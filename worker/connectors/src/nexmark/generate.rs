//! Builds Arrow batches of one event kind straight from the sequence: column builders sized
//! per batch, values drawn per event (Beam's Person/Auction/Bid generators), only the
//! declared columns materialized. The `extra` padding, the costliest column, is drawn only
//! when declared; it is each event's last draw, so leaving it out changes no other value.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringBuilder, StringViewBuilder, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use rand::rngs::SmallRng;

use super::config::{
    EventKind, FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID, InstancePositions, NexmarkConfig,
};
use super::model::{ColumnSource, NexmarkField};
use super::random::{
    below, event_rng, next_base0_auction_id, next_base0_person_id, next_price, push_extra, push_string,
};
use crate::MetadataField;

/// Beam's block sizes for hot ids, categories, and channels.
const HOT_AUCTION_BLOCK: u64 = 100;
const HOT_BIDDER_BLOCK: u64 = 100;
const HOT_SELLER_BLOCK: u64 = 100;
const NUM_CATEGORIES: u64 = 5;
const HOT_CHANNELS_RATIO: u64 = 2;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const CHANNELS_NUMBER: u64 = 10_000;
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES: [&str; 9] =
    ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];

/// Builds one text column in the type the table declares (string views directly, so they
/// need no second copy).
enum Texts {
    Plain(StringBuilder),
    Views(StringViewBuilder),
}

impl Texts {
    fn append(&mut self, value: &str) {
        match self {
            Texts::Plain(b) => b.append_value(value),
            Texts::Views(b) => b.append_value(value),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Texts::Plain(b) => Arc::new(b.finish()),
            Texts::Views(b) => Arc::new(b.finish()),
        }
    }
}

/// Column values of one batch, kept only for the fields the table declares (indexed by
/// field, so storing a value is one array access).
struct Values {
    ints: Vec<Option<Vec<i64>>>,
    texts: Vec<Option<Texts>>,
}

impl Values {
    /// `row_bytes`: the kind's average row size, which bounds its longest texts (`extra` pads a
    /// row to about that size), so their buffers need not grow while a batch is made.
    fn new(fields: &[(NexmarkField, DataType)], rows: usize, row_bytes: usize) -> Self {
        let mut ints: Vec<Option<Vec<i64>>> = (0..NexmarkField::COUNT).map(|_| None).collect();
        let mut texts: Vec<Option<Texts>> = (0..NexmarkField::COUNT).map(|_| None).collect();
        for (field, declared) in fields {
            if field.data_type() != DataType::Utf8 {
                ints[*field as usize] = Some(Vec::with_capacity(rows));
            } else if declared == &DataType::Utf8View {
                texts[*field as usize] = Some(Texts::Views(StringViewBuilder::with_capacity(rows)));
            } else {
                let bytes = match field {
                    NexmarkField::Extra | NexmarkField::Description | NexmarkField::Url => row_bytes,
                    _ => 16,
                };
                texts[*field as usize] = Some(Texts::Plain(StringBuilder::with_capacity(rows, rows * bytes)));
            }
        }
        Values { ints, texts }
    }

    fn int(&mut self, field: NexmarkField, value: i64) {
        if let Some(v) = &mut self.ints[field as usize] {
            v.push(value);
        }
    }

    fn string(&mut self, field: NexmarkField, value: &str) {
        if let Some(b) = &mut self.texts[field as usize] {
            b.append(value);
        }
    }

    fn wants(&self, field: NexmarkField) -> bool {
        self.texts[field as usize].is_some()
    }
}

/// Generates one instance's batches of one event kind.
pub struct BatchGenerator {
    config: NexmarkConfig,
    schema: SchemaRef,
    columns: Vec<ColumnSource>,
    /// The distinct generated fields the table declares, with the type declared first.
    fields: Vec<(NexmarkField, DataType)>,
    instance: i64,
    /// Channel and URL of every channel number (hot channels first), fixed per seed.
    channels: Vec<(String, String)>,
}

/// One generated batch and how many positions of the sequence it covered.
pub struct Generated {
    pub batch: Option<RecordBatch>,
    pub positions: u64,
}

impl BatchGenerator {
    pub fn new(
        config: NexmarkConfig,
        schema: SchemaRef,
        columns: Vec<ColumnSource>,
        instance: usize,
    ) -> Self {
        let mut fields: Vec<(NexmarkField, DataType)> = Vec::new();
        for (c, declared) in columns.iter().zip(schema.fields()) {
            // Event times are kept for every row anyway (for watermarks and metadata).
            if let ColumnSource::Field(f) = c
                && *f != NexmarkField::DateTime
                && !fields.iter().any(|(known, _)| known == f)
            {
                fields.push((*f, declared.data_type().clone()));
            }
        }
        let channels = if config.kind == EventKind::Bid { channel_table(config.seed) } else { Vec::new() };
        Self { config, schema, columns, fields, instance: instance as i64, channels }
    }

    /// Takes positions from `positions` (at most `max_positions`) until a batch is full.
    pub fn next_batch(
        &self,
        positions: &mut InstancePositions,
        max_positions: u64,
    ) -> Result<Generated, ArrowError> {
        let rows = self.config.batch_size.max(1);
        let row_bytes = match self.config.kind {
            EventKind::Person => self.config.avg_person_bytes,
            EventKind::Auction => self.config.avg_auction_bytes,
            EventKind::Bid => self.config.avg_bid_bytes,
        };
        let mut values = Values::new(&self.fields, rows, row_bytes);
        let mut times = Vec::with_capacity(rows);
        let mut numbers = Vec::with_capacity(rows);
        let mut scratch = String::with_capacity(256);
        let mut taken = 0u64;
        while times.len() < rows && taken < max_positions {
            let Some(n) = positions.next() else { break };
            taken += 1;
            let id = self.config.adjusted(n);
            if EventKind::of(id) != self.config.kind {
                continue;
            }
            let time = self.config.timestamp_ms(id);
            let mut rng = event_rng(self.config.seed, id);
            match self.config.kind {
                EventKind::Person => self.person(id, &mut rng, &mut values, &mut scratch),
                EventKind::Auction => self.auction(id, time, &mut rng, &mut values, &mut scratch),
                EventKind::Bid => self.bid(id, &mut rng, &mut values, &mut scratch),
            }
            times.push(time);
            numbers.push(n as i64);
        }
        if times.is_empty() {
            return Ok(Generated { batch: None, positions: taken });
        }
        let batch = self.finish(values, times, numbers)?;
        Ok(Generated { batch: Some(batch), positions: taken })
    }

    fn person(&self, id: u64, rng: &mut SmallRng, out: &mut Values, s: &mut String) {
        let c = &self.config;
        out.int(NexmarkField::PersonId, (c.last_base0_person_id(id) as i64) + FIRST_PERSON_ID);
        let first = FIRST_NAMES[below(rng, FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[below(rng, LAST_NAMES.len() as u64) as usize];
        s.clear();
        s.push_str(first);
        s.push(' ');
        s.push_str(last);
        out.string(NexmarkField::Name, s);
        let mut size = 8 + s.len();
        s.clear();
        push_string(rng, 7, ' ', s);
        s.push('@');
        push_string(rng, 5, ' ', s);
        s.push_str(".com");
        out.string(NexmarkField::EmailAddress, s);
        size += s.len();
        s.clear();
        for group in 0..4 {
            if group > 0 {
                s.push(' ');
            }
            let digits = below(rng, 10_000);
            s.push_str(&format!("{digits:04}"));
        }
        out.string(NexmarkField::CreditCard, s);
        size += s.len();
        let city = US_CITIES[below(rng, US_CITIES.len() as u64) as usize];
        let state = US_STATES[below(rng, US_STATES.len() as u64) as usize];
        out.string(NexmarkField::City, city);
        out.string(NexmarkField::State, state);
        size += city.len() + state.len();
        self.extra(rng, size, c.avg_person_bytes, out, s);
    }

    fn auction(&self, id: u64, time: i64, rng: &mut SmallRng, out: &mut Values, s: &mut String) {
        let c = &self.config;
        out.int(NexmarkField::AuctionId, c.last_base0_auction_id(id) as i64 + FIRST_AUCTION_ID);
        let seller = if below(rng, u64::from(c.hot_sellers_ratio)) > 0 {
            (c.last_base0_person_id(id) / HOT_SELLER_BLOCK) * HOT_SELLER_BLOCK
        } else {
            next_base0_person_id(c, id, rng)
        };
        out.int(NexmarkField::Seller, seller as i64 + FIRST_PERSON_ID);
        out.int(NexmarkField::Category, FIRST_CATEGORY_ID + below(rng, NUM_CATEGORIES) as i64);
        let initial_bid = next_price(rng);
        out.int(NexmarkField::InitialBid, initial_bid);
        // Lengths average twice the time until `num_in_flight_auctions` more auctions exist.
        let horizon = c.timestamp_ms(id + c.events_for_in_flight_auctions()) - time;
        let length = 1 + below(rng, (horizon * 2).max(1) as u64) as i64;
        out.int(NexmarkField::Expires, time + length);
        s.clear();
        push_string(rng, 20, ' ', s);
        out.string(NexmarkField::ItemName, s);
        let mut size = s.len();
        s.clear();
        push_string(rng, 100, ' ', s);
        out.string(NexmarkField::Description, s);
        size += s.len();
        out.int(NexmarkField::Reserve, initial_bid + next_price(rng));
        self.extra(rng, 8 + size + 40, c.avg_auction_bytes, out, s);
    }

    fn bid(&self, id: u64, rng: &mut SmallRng, out: &mut Values, s: &mut String) {
        let c = &self.config;
        let auction = if below(rng, u64::from(c.hot_auction_ratio)) > 0 {
            (c.last_base0_auction_id(id) / HOT_AUCTION_BLOCK) * HOT_AUCTION_BLOCK
        } else {
            next_base0_auction_id(c, id, rng)
        };
        out.int(NexmarkField::Auction, auction as i64 + FIRST_AUCTION_ID);
        let bidder = if below(rng, u64::from(c.hot_bidders_ratio)) > 0 {
            // The second person of the block, so hot bidders are not the hot sellers.
            (c.last_base0_person_id(id) / HOT_BIDDER_BLOCK) * HOT_BIDDER_BLOCK + 1
        } else {
            next_base0_person_id(c, id, rng)
        };
        out.int(NexmarkField::Bidder, bidder as i64 + FIRST_PERSON_ID);
        out.int(NexmarkField::Price, next_price(rng));
        let channel = if below(rng, HOT_CHANNELS_RATIO) > 0 {
            below(rng, HOT_CHANNELS.len() as u64)
        } else {
            HOT_CHANNELS.len() as u64 + below(rng, CHANNELS_NUMBER)
        };
        let (name, url) = &self.channels[channel as usize];
        out.string(NexmarkField::Channel, name);
        out.string(NexmarkField::Url, url);
        self.extra(rng, 32, c.avg_bid_bytes, out, s);
    }

    fn extra(&self, rng: &mut SmallRng, size: usize, average: usize, out: &mut Values, s: &mut String) {
        if out.wants(NexmarkField::Extra) {
            s.clear();
            push_extra(rng, size, average, s);
            out.string(NexmarkField::Extra, s);
        }
    }

    fn finish(
        &self,
        mut values: Values,
        times: Vec<i64>,
        numbers: Vec<i64>,
    ) -> Result<RecordBatch, ArrowError> {
        let rows = times.len();
        let times: ArrayRef = Arc::new(TimestampMillisecondArray::from(times));
        let mut built: Vec<Option<ArrayRef>> = vec![None; NexmarkField::COUNT];
        for (field, _) in &self.fields {
            let i = *field as usize;
            built[i] = match (values.ints[i].take(), values.texts[i].as_mut()) {
                (Some(v), _) if field.data_type() == DataType::Int64 => Some(Arc::new(Int64Array::from(v))),
                (Some(v), _) => Some(Arc::new(TimestampMillisecondArray::from(v))),
                (None, Some(texts)) => Some(texts.finish()),
                (None, None) => None,
            };
        }
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (column, target) in self.columns.iter().zip(self.schema.fields()) {
            let array = match column {
                ColumnSource::Field(NexmarkField::DateTime)
                | ColumnSource::Metadata(MetadataField::Timestamp) => Arc::clone(&times),
                ColumnSource::Metadata(MetadataField::Partition) => {
                    Arc::new(Int64Array::from(vec![self.instance; rows]))
                }
                ColumnSource::Metadata(MetadataField::Offset) => Arc::new(Int64Array::from(numbers.clone())),
                ColumnSource::Field(field) => built[*field as usize].clone().ok_or_else(|| {
                    ArrowError::InvalidArgumentError(format!("{field:?} was not generated"))
                })?,
            };
            arrays.push(if array.data_type() == target.data_type() {
                array
            } else {
                cast(&array, target.data_type())?
            });
        }
        RecordBatch::try_new(Arc::clone(&self.schema), arrays)
    }
}

/// Hot channels (with their fixed URLs) then `CHANNELS_NUMBER` channels `channel-<i>`, whose
/// URL carries `&channel_id=<reversed bits of i>` 9 times in 10, as nexmark-flink's cache.
fn channel_table(seed: u64) -> Vec<(String, String)> {
    let url = |rng: &mut SmallRng| {
        let mut s = String::from("https://www.nexmark.com/");
        for _ in 0..3 {
            push_string(rng, 5, '_', &mut s);
            s.push('/');
        }
        s.push_str("item.htm?query=1");
        s
    };
    let mut table = Vec::with_capacity(HOT_CHANNELS.len() + CHANNELS_NUMBER as usize);
    for (i, name) in HOT_CHANNELS.iter().enumerate() {
        let mut rng = event_rng(seed ^ 0x4e45_584d, i as u64);
        table.push((name.to_string(), url(&mut rng)));
    }
    for i in 0..CHANNELS_NUMBER {
        let mut rng = event_rng(seed ^ 0x4348_414e, i);
        let mut u = url(&mut rng);
        if below(&mut rng, 10) > 0 {
            u.push_str(&format!("&channel_id={}", (i as i32).reverse_bits().unsigned_abs()));
        }
        table.push((format!("channel-{i}"), u));
    }
    table
}

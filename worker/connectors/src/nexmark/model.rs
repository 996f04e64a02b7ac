//! The Nexmark row model: the columns of Person, Auction and Bid (nexmark-flink's
//! `ddl_gen.sql` names and types), and how a table's declared columns map onto them. A table
//! may declare any subset in any order; names match without regard to case or underscores
//! (`dateTime`, `datetime` and `date_time` are one column), and a declared type must be of
//! the generated type's family (any integer, float or decimal for a BIGINT; any string type;
//! any timestamp), which the generated column is cast to. Anything else is refused before the
//! job runs.

use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use super::config::EventKind;
use crate::MetadataField;

/// One generated column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkField {
    // Person
    PersonId,
    Name,
    EmailAddress,
    CreditCard,
    City,
    State,
    // Auction
    AuctionId,
    ItemName,
    Description,
    InitialBid,
    Reserve,
    Expires,
    Seller,
    Category,
    // Bid
    Auction,
    Bidder,
    Price,
    Channel,
    Url,
    // All kinds
    DateTime,
    Extra,
}

impl NexmarkField {
    /// How many fields there are (for tables indexed by field).
    pub const COUNT: usize = NexmarkField::Extra as usize + 1;

    /// The type the generator builds for the column.
    pub fn data_type(self) -> DataType {
        use NexmarkField::*;
        match self {
            PersonId | AuctionId | InitialBid | Reserve | Seller | Category | Auction | Bidder | Price => {
                DataType::Int64
            }
            DateTime | Expires => DataType::Timestamp(TimeUnit::Millisecond, None),
            Name | EmailAddress | CreditCard | City | State | ItemName | Description | Channel | Url
            | Extra => DataType::Utf8,
        }
    }
}

/// The columns of each kind, in nexmark-flink's order, with their Flink names.
pub fn columns(kind: EventKind) -> &'static [(&'static str, NexmarkField)] {
    use NexmarkField::*;
    match kind {
        EventKind::Person => &[
            ("id", PersonId),
            ("name", Name),
            ("emailAddress", EmailAddress),
            ("creditCard", CreditCard),
            ("city", City),
            ("state", State),
            ("dateTime", DateTime),
            ("extra", Extra),
        ],
        EventKind::Auction => &[
            ("id", AuctionId),
            ("itemName", ItemName),
            ("description", Description),
            ("initialBid", InitialBid),
            ("reserve", Reserve),
            ("dateTime", DateTime),
            ("expires", Expires),
            ("seller", Seller),
            ("category", Category),
            ("extra", Extra),
        ],
        EventKind::Bid => &[
            ("auction", Auction),
            ("bidder", Bidder),
            ("price", Price),
            ("channel", Channel),
            ("url", Url),
            ("dateTime", DateTime),
            ("extra", Extra),
        ],
    }
}

/// What fills one column of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnSource {
    Field(NexmarkField),
    /// `METADATA FROM 'timestamp'` (the event time), `'partition'` (the source instance) or
    /// `'offset'` (the event's position in the global sequence).
    Metadata(MetadataField),
}

fn comparable(name: &str) -> String {
    name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// Whether a column declared `declared` can hold the generated `generated` values.
fn compatible(generated: &DataType, declared: &DataType) -> bool {
    match generated {
        DataType::Int64 => declared.is_numeric(),
        DataType::Utf8 => matches!(declared, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
        DataType::Timestamp(_, _) => matches!(declared, DataType::Timestamp(_, _)),
        _ => generated == declared,
    }
}

/// Maps every column of `schema` to what fills it, or says which column cannot be filled.
pub fn map_columns(
    kind: EventKind,
    schema: &SchemaRef,
    metadata: &[(usize, MetadataField)],
) -> Result<Vec<ColumnSource>, String> {
    let known = columns(kind);
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            if let Some((_, m)) = metadata.iter().find(|(c, _)| *c == i) {
                return Ok(ColumnSource::Metadata(*m));
            }
            let wanted = comparable(field.name());
            let Some((_, source)) = known.iter().find(|(name, _)| comparable(name) == wanted) else {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "column '{}' is not a {} column (event_type = '{}' has {})",
                    field.name(),
                    kind.name(),
                    kind.name(),
                    names.join(", ")
                ));
            };
            let generated = source.data_type();
            if !compatible(&generated, field.data_type()) {
                return Err(format!(
                    "column '{}' is declared {} but the generator produces {generated}",
                    field.name(),
                    field.data_type()
                ));
            }
            Ok(ColumnSource::Field(*source))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
    }

    #[test]
    fn columns_match_by_name_ignoring_case_and_underscores() {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let s =
            schema(&[("price", DataType::Int64), ("datetime", ts.clone()), ("AUCTION", DataType::Float64)]);
        let mapped = map_columns(EventKind::Bid, &s, &[]).expect("valid");
        assert_eq!(
            mapped,
            vec![
                ColumnSource::Field(NexmarkField::Price),
                ColumnSource::Field(NexmarkField::DateTime),
                ColumnSource::Field(NexmarkField::Auction)
            ]
        );
        let s = schema(&[("email_address", DataType::Utf8), ("t", ts)]);
        let mapped = map_columns(EventKind::Person, &s, &[(1, MetadataField::Timestamp)]).expect("valid");
        assert_eq!(mapped[1], ColumnSource::Metadata(MetadataField::Timestamp));
    }

    #[test]
    fn unknown_columns_and_impossible_types_are_refused() {
        let err = map_columns(EventKind::Bid, &schema(&[("seller", DataType::Int64)]), &[])
            .expect_err("not a bid column");
        assert!(err.contains("'seller' is not a bid column"), "{err}");
        let err = map_columns(EventKind::Bid, &schema(&[("price", DataType::Boolean)]), &[])
            .expect_err("a bool cannot hold a price");
        assert!(err.contains("declared Boolean"), "{err}");
    }
}

//! The changelog vocabulary: how a stream of updates, not only appends, travels as Arrow
//! batches.
//!
//! Flink's model is the row kind (`+I`, `-U`, `+U`, `-D`). Millrace streams are either
//! append-only or *upsert* streams: keyed by given columns, every row is an upsert
//! (`+I` the first time a key is emitted, `+U` after) or a delete (`-D`) of its key. There
//! are no `-U` rows: an upsert replaces the previous row of its key. The row kind travels
//! in one extra, last column named [`ROW_KIND_COLUMN`] (`Int8`, Flink's `RowKind` byte
//! values), which the planner adds after the logical columns and the sinks consume. A batch
//! without that column is append-only (every row an insert).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int8Array};
use arrow::datatypes::{DataType, Field, Int8Type, Schema};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

/// The name of the row-kind column of a changelog batch (always its last column).
pub const ROW_KIND_COLUMN: &str = "__row_kind";

/// What one row of an upsert stream does to its key. The discriminants are Flink's
/// `RowKind` byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum RowKind {
    /// The key's first row.
    Insert = 0,
    /// The key's new row, replacing the previous one.
    UpdateAfter = 2,
    /// The key is gone.
    Delete = 3,
}

impl RowKind {
    /// Flink's short string: `+I`, `+U`, `-D`.
    pub fn short_string(self) -> &'static str {
        match self {
            RowKind::Insert => "+I",
            RowKind::UpdateAfter => "+U",
            RowKind::Delete => "-D",
        }
    }

    pub fn from_byte(value: i8) -> Option<Self> {
        match value {
            0 => Some(RowKind::Insert),
            2 => Some(RowKind::UpdateAfter),
            3 => Some(RowKind::Delete),
            _ => None,
        }
    }

    /// Whether the row replaces (or creates) its key's row, rather than deleting it.
    pub fn is_upsert(self) -> bool {
        self != RowKind::Delete
    }
}

/// The row-kind field of a changelog schema.
pub fn row_kind_field() -> Field {
    Field::new(ROW_KIND_COLUMN, DataType::Int8, false)
}

/// `schema` with the row-kind field appended.
pub fn with_row_kind(schema: &Schema) -> Schema {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(row_kind_field());
    Schema::new(fields)
}

/// A row-kind column.
pub fn row_kind_array(kinds: impl IntoIterator<Item = RowKind>) -> ArrayRef {
    Arc::new(Int8Array::from_iter_values(kinds.into_iter().map(|k| k as i8)))
}

/// Splits a batch into its logical columns and its row kinds; `None` for an append-only
/// batch (no row-kind column), whose rows are all inserts.
pub fn split_row_kinds(batch: &RecordBatch) -> Result<(RecordBatch, Option<Vec<RowKind>>), ArrowError> {
    let schema = batch.schema();
    let last = schema.fields().len().checked_sub(1);
    let Some(last) = last.filter(|&i| schema.field(i).name() == ROW_KIND_COLUMN) else {
        return Ok((batch.clone(), None));
    };
    let column = batch.column(last);
    let Some(bytes) = column.as_primitive_opt::<Int8Type>() else {
        return Err(ArrowError::SchemaError(format!(
            "{ROW_KIND_COLUMN} must be Int8, got {}",
            column.data_type()
        )));
    };
    let kinds = (0..bytes.len())
        .map(|i| {
            let byte = if bytes.is_null(i) { -1 } else { bytes.value(i) };
            RowKind::from_byte(byte)
                .ok_or_else(|| ArrowError::InvalidArgumentError(format!("invalid row kind {byte}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut logical = batch.clone();
    logical.remove_column(last);
    Ok((logical, Some(kinds)))
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;

    use super::*;

    #[test]
    fn row_kinds_split_off_the_last_column() {
        let schema = Arc::new(with_row_kind(&Schema::new(vec![Field::new("n", DataType::Int64, true)])));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1, 2])), row_kind_array([RowKind::Insert, RowKind::Delete])],
        )
        .expect("batch");
        let (logical, kinds) = split_row_kinds(&batch).expect("splits");
        assert_eq!(logical.num_columns(), 1);
        assert_eq!(kinds, Some(vec![RowKind::Insert, RowKind::Delete]));
        let (same, none) = split_row_kinds(&logical).expect("append-only");
        assert_eq!((same.num_columns(), none), (1, None));
        assert_eq!(RowKind::UpdateAfter.short_string(), "+U");
    }
}

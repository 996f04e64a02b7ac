//! The shape of operator state at a checkpoint: what an operator hands the runtime when it
//! snapshots ([`TableSnapshot`]), and the key-group bookkeeping that lets state written at
//! one parallelism be restored at another. Keyed tables carry the key group of every row in
//! a first column named [`KEY_GROUP_COLUMN`]; the runtime keeps, on restore, only the rows
//! of the key groups the restoring subtask owns. Where the bytes go is not this module's
//! business (that is the checkpoint storage).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, UInt32Array};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, UInt32Type};
use arrow::record_batch::RecordBatch;
use datafusion_common::hash_utils::{RandomState, create_hashes};
use millrace_types::KeyGroup;

use crate::error::OperatorError;

/// The first column of every keyed state table: the row's key group (UInt32, not null).
pub const KEY_GROUP_COLUMN: &str = "__key_group";

/// One declared state table's rows at a checkpoint. The schema is the operator's own
/// business, except that a keyed table's first column is [`KEY_GROUP_COLUMN`].
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub name: String,
    pub batches: Vec<RecordBatch>,
}

/// The key groups `first..=last` a subtask owns (Flink's contiguous ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupRange {
    pub first: u32,
    pub last: u32,
}

impl KeyGroupRange {
    /// The range subtask `subtask` of `parallelism` owns among `max_parallelism` key groups:
    /// exactly the key groups `subtask_for_key_group` maps to it.
    pub fn of_subtask(subtask: usize, parallelism: usize, max_parallelism: u32) -> Self {
        let (p, m, s) = (parallelism.max(1) as u64, u64::from(max_parallelism.max(1)), subtask as u64);
        // Key group g belongs to floor(g * p / m); the first g with floor(g*p/m) == s is
        // ceil(s*m/p).
        let first = (s * m).div_ceil(p);
        let last = ((s + 1) * m).div_ceil(p).saturating_sub(1);
        Self { first: first as u32, last: last as u32 }
    }

    pub fn contains(&self, key_group: u32) -> bool {
        (self.first..=self.last).contains(&key_group)
    }
}

/// The key group of every row whose key is `columns` — the same function the hash exchange
/// routes rows with, so that restored state lands where its future rows will be sent.
/// `columns` must have the types the exchange's key expressions evaluate to.
pub fn key_groups_of(
    columns: &[ArrayRef],
    rows: usize,
    max_parallelism: u32,
) -> Result<Vec<u32>, OperatorError> {
    let mut hashes = vec![0u64; rows];
    create_hashes(columns, &RandomState::with_seed(0), &mut hashes)?;
    Ok(hashes.iter().map(|h| KeyGroup::of_hash(*h, max_parallelism).0).collect())
}

/// [`key_groups_of`] for key columns an operator keeps in other types than the exchange
/// hashes: each column is first cast to `types` (what the exchange's key expressions
/// evaluate to).
pub fn key_groups_as(
    columns: &[ArrayRef],
    types: &[DataType],
    max_parallelism: u32,
) -> Result<Vec<u32>, OperatorError> {
    if columns.len() != types.len() {
        return Err(OperatorError::Invalid(format!(
            "{} key columns but {} key types",
            columns.len(),
            types.len()
        )));
    }
    let rows = columns.first().map_or(0, |c| c.len());
    let hashed = columns
        .iter()
        .zip(types)
        .map(|(c, t)| if c.data_type() == t { Ok(Arc::clone(c)) } else { cast(c, t) })
        .collect::<Result<Vec<_>, _>>()?;
    key_groups_of(&hashed, rows, max_parallelism)
}

/// The field of the key-group column, for operators building a keyed table's schema.
pub fn key_group_field() -> Field {
    Field::new(KEY_GROUP_COLUMN, DataType::UInt32, false)
}

/// The key-group column for `key_groups`.
pub fn key_group_array(key_groups: Vec<u32>) -> ArrayRef {
    Arc::new(UInt32Array::from(key_groups))
}

/// The rows of a keyed table's batch whose key group is in `range`.
pub fn retain_key_groups(batch: &RecordBatch, range: KeyGroupRange) -> Result<RecordBatch, OperatorError> {
    let column = batch
        .schema()
        .index_of(KEY_GROUP_COLUMN)
        .map_err(|_| OperatorError::Invalid(format!("keyed state has no {KEY_GROUP_COLUMN} column")))?;
    let groups = batch.column(column).as_primitive_opt::<UInt32Type>().ok_or_else(|| {
        OperatorError::Invalid(format!(
            "{KEY_GROUP_COLUMN} must be UInt32, not {}",
            batch.column(column).data_type()
        ))
    })?;
    let keep: BooleanArray = groups.iter().map(|g| Some(g.is_some_and(|g| range.contains(g)))).collect();
    Ok(filter_record_batch(batch, &keep)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_types::subtask_for_key_group;

    #[test]
    fn subtask_ranges_are_exactly_the_key_groups_routed_there() {
        for (p, m) in [(1usize, 128u32), (2, 128), (3, 128), (4, 128), (7, 10), (10, 10), (5, 7)] {
            for s in 0..p {
                let range = KeyGroupRange::of_subtask(s, p, m);
                for g in 0..m {
                    let owner = subtask_for_key_group(KeyGroup(g), p, m).map(|o| o.0).unwrap_or(usize::MAX);
                    assert_eq!(range.contains(g), owner == s, "p={p} m={m} s={s} g={g}");
                }
            }
        }
    }

    #[test]
    fn key_groups_as_hashes_the_exchange_types() -> Result<(), OperatorError> {
        let ints: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![1, 2, 3, 4, 5]));
        let doubles: ArrayRef = Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        let exchange = key_groups_of(&[Arc::clone(&ints)], 5, 128)?;
        assert_eq!(key_groups_as(&[Arc::clone(&doubles)], &[DataType::Int32], 128)?, exchange);
        assert_ne!(key_groups_of(&[doubles], 5, 128)?, exchange, "the cast is what makes them equal");
        assert_eq!(key_groups_as(&[ints], &[DataType::Int32], 128)?, exchange);
        Ok(())
    }

    #[test]
    fn retain_keeps_only_owned_key_groups() -> Result<(), OperatorError> {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            key_group_field(),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                key_group_array(vec![0, 5, 64, 127]),
                Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )?;
        let kept = retain_key_groups(&batch, KeyGroupRange::of_subtask(0, 2, 128))?;
        assert_eq!(kept.num_rows(), 2);
        Ok(())
    }
}

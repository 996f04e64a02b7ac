//! The rows one input of a join holds: the batches they came in (kept while any of their
//! rows is held, rows are referenced, never copied one by one), an index by join key, and an
//! index by expiry time, plus the keyed state table they are written to at a checkpoint.
//! What a row's times mean and when it matches is the join operator's business, not this
//! module's. When most rows of the batches kept are no longer held, the held rows are copied
//! into one new batch, so a few long-lived rows do not keep many batches alive. It keeps its
//! size in memory up to date ([`JoinSide::state_bytes`]) for the process's state budget.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter};
use datafusion_physical_expr::PhysicalExpr;

use super::state_table::StateLayout;
use crate::error::OperatorError;
use crate::operator::{OperatorContext, StateScope, StateTable};
use crate::state::{TableSnapshot, key_groups_of};

/// A row held by a join input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldRow {
    pub batch: u64,
    pub row: u32,
    /// The row's time as the join kind uses it (event time, or window end).
    pub time: i64,
    /// When the row leaves the state (a watermark or, for TTL, the wall clock at or past it).
    pub expires: i64,
    /// Whether it has joined with a row of the other input (outer joins pad the others).
    pub matched: bool,
    /// A NULL key column: the row never matches (SQL equality).
    pub unmatchable: bool,
}

/// One input's held rows; see the module docs.
pub(crate) struct JoinSide {
    schema: SchemaRef,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Batch id → the batch and how many of its rows are held.
    batches: HashMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    rows: HashMap<OwnedRow, Vec<HeldRow>>,
    /// Expiry time → keys with a row expiring then (a key may be listed more than once).
    expiry: BTreeMap<i64, Vec<OwnedRow>>,
    layout: StateLayout,
    /// Rows in the kept batches, and how many of them are held.
    kept_rows: usize,
    held_rows: usize,
    /// Arrow bytes of the kept batches.
    kept_bytes: usize,
    /// Keys listed in `expiry`, and the byte length of the last key held (keys of fixed-width
    /// types all have the same; for strings it is an estimate).
    expiry_entries: usize,
    key_len: usize,
}

/// Compaction starts once the kept batches have this many rows, four times those held.
const COMPACT_ABOVE_ROWS: usize = 65_536;

impl JoinSide {
    pub fn new(name: &'static str, schema: SchemaRef, keys: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        let mut fields = vec![
            Field::new("time", DataType::Int64, false),
            Field::new("expires", DataType::Int64, false),
            Field::new("matched", DataType::Boolean, false),
        ];
        fields.extend(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
        let layout = StateLayout::new(name, StateScope::KeyGroups, fields);
        Self {
            schema,
            keys,
            batches: HashMap::new(),
            next_batch: 0,
            rows: HashMap::new(),
            expiry: BTreeMap::new(),
            layout,
            kept_rows: 0,
            held_rows: 0,
            kept_bytes: 0,
            expiry_entries: 0,
            key_len: 0,
        }
    }

    /// The bytes this input's state holds: the kept batches' Arrow buffers, each held row's
    /// entry, its entry in the expiry index, and the keys (see the module docs).
    pub fn state_bytes(&self) -> usize {
        let key = std::mem::size_of::<OwnedRow>() + self.key_len;
        self.kept_bytes
            + self.held_rows * std::mem::size_of::<HeldRow>()
            + self.expiry_entries * key
            + self.rows.capacity() * (std::mem::size_of::<(OwnedRow, Vec<HeldRow>)>() + 1)
            + self.rows.len() * self.key_len
    }

    pub fn table(&self) -> StateTable {
        self.layout.table()
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The key columns of `batch` (this input's rows), and for each row whether one is NULL.
    pub fn key_columns(&self, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Vec<bool>), OperatorError> {
        let rows = batch.num_rows();
        let columns = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch).and_then(|v| v.into_array(rows)))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let nulls = (0..rows).map(|i| columns.iter().any(|c| c.is_null(i))).collect();
        Ok((columns, nulls))
    }

    /// Registers a batch of this input; its rows can then be referenced and held. A batch
    /// none of whose rows is held is let go by [`JoinSide::release_batch_if_unused`].
    pub fn add_batch(&mut self, batch: RecordBatch) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.kept_rows += batch.num_rows();
        self.kept_bytes += batch.get_array_memory_size();
        self.batches.insert(id, (batch, 0));
        id
    }

    pub fn release_batch_if_unused(&mut self, id: u64) {
        if self.batches.get(&id).is_some_and(|(_, held)| *held == 0) {
            self.drop_batch(id);
        }
    }

    /// Holds `row` under `key`; a row that never expires (`i64::MAX`) is not indexed by time.
    pub fn hold(&mut self, key: OwnedRow, row: HeldRow) {
        if let Some((_, held)) = self.batches.get_mut(&row.batch) {
            *held += 1;
            self.held_rows += 1;
        }
        self.key_len = key.row().as_ref().len();
        if row.expires != i64::MAX {
            self.expiry.entry(row.expires).or_default().push(key.clone());
            self.expiry_entries += 1;
        }
        self.rows.entry(key).or_default().push(row);
    }

    /// Takes the rows of `key` for which `drop` holds out of the state (their batches stay
    /// until released).
    pub fn take_where(&mut self, key: &OwnedRow, drop: impl Fn(&HeldRow) -> bool) -> Vec<HeldRow> {
        let Some(rows) = self.rows.get_mut(key) else { return Vec::new() };
        let taken: Vec<HeldRow> = rows.iter().filter(|r| drop(r)).copied().collect();
        rows.retain(|r| !drop(r));
        if rows.is_empty() {
            self.rows.remove(key);
        }
        taken
    }

    /// The held rows of `key`, for probing and for marking matches.
    pub fn rows_of_mut(&mut self, key: &OwnedRow) -> Option<&mut Vec<HeldRow>> {
        self.rows.get_mut(key)
    }

    /// Takes every row whose expiry is at or before `upto` out of the state (their batches
    /// stay until [`JoinSide::release`]), oldest expiry first.
    pub fn expire(&mut self, upto: i64) -> Vec<HeldRow> {
        self.expire_keyed(upto).into_iter().map(|(_, row)| row).collect()
    }

    /// [`JoinSide::expire`], with each row's key.
    pub fn expire_keyed(&mut self, upto: i64) -> Vec<(OwnedRow, HeldRow)> {
        let mut removed = Vec::new();
        for key in self.due_keys(upto) {
            if let Some(rows) = self.rows.get_mut(&key) {
                removed.extend(rows.iter().filter(|r| r.expires <= upto).map(|r| (key.clone(), *r)));
                rows.retain(|r| r.expires > upto);
                if rows.is_empty() {
                    self.rows.remove(&key);
                }
            }
        }
        removed
    }

    /// Every key with a held row.
    pub fn keys(&self) -> Vec<OwnedRow> {
        self.rows.keys().cloned().collect()
    }

    /// The keys with a row expiring at or before `upto`, each once, in expiry order; their
    /// expiry entries are consumed.
    pub fn due_keys(&mut self, upto: i64) -> Vec<OwnedRow> {
        let later = match upto.checked_add(1) {
            Some(next) => self.expiry.split_off(&next),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.expiry, later);
        self.expiry_entries = self.expiry_entries.saturating_sub(due.values().map(Vec::len).sum());
        let mut seen = HashSet::new();
        due.into_values().flatten().filter(|k| seen.insert(k.clone())).collect()
    }

    /// Takes all rows of `key` out of the state (their batches stay until released).
    pub fn take_key(&mut self, key: &OwnedRow) -> Vec<HeldRow> {
        self.rows.remove(key).unwrap_or_default()
    }

    /// Lets go of rows taken out of the state, and of batches no row is held from any more.
    pub fn release(&mut self, rows: &[HeldRow]) -> Result<(), OperatorError> {
        for row in rows {
            if let Some((_, held)) = self.batches.get_mut(&row.batch) {
                *held = held.saturating_sub(1);
                self.held_rows = self.held_rows.saturating_sub(1);
                if *held == 0 {
                    self.drop_batch(row.batch);
                }
            }
        }
        self.compact_if_sparse()
    }

    fn drop_batch(&mut self, id: u64) {
        if let Some((batch, _)) = self.batches.remove(&id) {
            self.kept_rows = self.kept_rows.saturating_sub(batch.num_rows());
            self.kept_bytes = self.kept_bytes.saturating_sub(batch.get_array_memory_size());
        }
    }

    /// Copies the held rows into one batch when the kept batches are mostly rows no longer
    /// held. Only between calls: no row taken out of the state may be waiting for release.
    fn compact_if_sparse(&mut self) -> Result<(), OperatorError> {
        if self.kept_rows < COMPACT_ABOVE_ROWS || self.kept_rows < 4 * self.held_rows {
            return Ok(());
        }
        let refs: Vec<(u64, u32)> = self.rows.values().flatten().map(|r| (r.batch, r.row)).collect();
        if refs.len() != self.held_rows {
            // Rows taken out and not released yet still count: leave the batches alone.
            return Ok(());
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), self.gather(&refs)?)?;
        let id = self.next_batch;
        self.next_batch += 1;
        // The map is not modified in between, so it iterates in the same order.
        for (i, row) in self.rows.values_mut().flatten().enumerate() {
            row.batch = id;
            row.row = i as u32;
        }
        self.batches.clear();
        self.kept_rows = batch.num_rows();
        self.kept_bytes = batch.get_array_memory_size();
        self.batches.insert(id, (batch, self.held_rows));
        Ok(())
    }

    /// This input's columns for `rows` (batch id, row), in that order.
    pub fn gather(&self, rows: &[(u64, u32)]) -> Result<Vec<ArrayRef>, OperatorError> {
        let mut position: HashMap<u64, usize> = HashMap::new();
        let mut batches: Vec<&RecordBatch> = Vec::new();
        let mut indices = Vec::with_capacity(rows.len());
        for (batch, row) in rows {
            let slot = match position.get(batch) {
                Some(slot) => *slot,
                None => {
                    let (b, _) = self.batches.get(batch).ok_or_else(|| {
                        OperatorError::Invalid(format!("join row refers to batch {batch}, which is gone"))
                    })?;
                    batches.push(b);
                    position.insert(*batch, batches.len() - 1);
                    batches.len() - 1
                }
            };
            indices.push((slot, *row as usize));
        }
        (0..self.schema.fields().len())
            .map(|c| {
                if batches.is_empty() {
                    return Ok(arrow::array::new_empty_array(self.schema.field(c).data_type()));
                }
                let columns: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
                Ok(interleave(&columns, &indices)?)
            })
            .collect()
    }

    /// Every held row, with its key group (of the key the exchange hashed).
    pub fn snapshot(&self, max_parallelism: u32) -> Result<TableSnapshot, OperatorError> {
        let held: Vec<&HeldRow> = self.rows.values().flatten().collect();
        let refs: Vec<(u64, u32)> = held.iter().map(|r| (r.batch, r.row)).collect();
        let columns = self.gather(&refs)?;
        let rows = held.len();
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns.clone())?;
        let (keys, _) = self.key_columns(&batch)?;
        let key_groups = key_groups_of(&keys, rows, max_parallelism)?;
        let mut all: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(held.iter().map(|r| r.time))),
            Arc::new(Int64Array::from_iter_values(held.iter().map(|r| r.expires))),
            Arc::new(BooleanArray::from_iter(held.iter().map(|r| Some(r.matched)))),
        ];
        all.extend(columns);
        self.layout.snapshot(key_groups, all, rows)
    }

    /// Holds the rows of this input's restored table (if any), keyed by `converter`.
    pub fn restore(
        &mut self,
        tables: &mut Vec<TableSnapshot>,
        ctx: &OperatorContext,
        converter: &RowConverter,
    ) -> Result<(), OperatorError> {
        for batch in self.layout.take_restored(tables, ctx)? {
            let columns: Vec<ArrayRef> = batch.columns()[3..].to_vec();
            let rows =
                RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| self.layout.error(e))?;
            let (keys, nulls) = self.key_columns(&rows)?;
            let converted = converter.convert_columns(&keys)?;
            let time = batch.column(0).as_primitive::<Int64Type>().clone();
            let expires = batch.column(1).as_primitive::<Int64Type>().clone();
            let matched = batch.column(2).as_boolean().clone();
            let id = self.add_batch(rows);
            for (i, unmatchable) in nulls.into_iter().enumerate() {
                let row = HeldRow {
                    batch: id,
                    row: i as u32,
                    time: time.value(i),
                    expires: expires.value(i),
                    matched: matched.value(i),
                    unmatchable,
                };
                self.hold(converted.row(i).owned(), row);
            }
            self.release_batch_if_unused(id);
        }
        Ok(())
    }

    /// How many rows are held (tests, metrics).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }

    /// How many rows the kept batches have (tests).
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.kept_rows
    }
}

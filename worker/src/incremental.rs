//! Incremental checkpoints: which state files a checkpoint writes and which it takes over,
//! unchanged, from the checkpoint before it.
//!
//! A keyed state table's rows are cut into key-group chunks, each its own file whose
//! `keyGroups` is the chunk's range. Chunks lie on a fixed grid of [`chunk_width`] key
//! groups, cut again at the subtask's own range, so files of different subtasks never
//! overlap (what `SnapshotMetadata::check` asks) and a chunk's range is the same from one
//! checkpoint to the next at the same parallelism. Instance tables and sink state stay one
//! file per subtask. Every file's bytes are hashed (xxh3-128, see [`content_hash`]); a file
//! whose slot (operator, table, key-group range or subtask) had a file of the same hash in
//! the last completed checkpoint is not written: the new checkpoint references the old file,
//! which retention keeps while any kept checkpoint references it.
//!
//! The grid width: `max_parallelism / 32` key groups (at least 1), so a table has at most 32
//! grid chunks plus one cut per subtask boundary. A subtask's table of fewer than
//! [`MIN_ROWS_TO_CHUNK`] rows is one file over the subtask's range: small state gains nothing
//! from chunks and would pay a file for each. At the default maxParallelism 128 that is
//! 4 key groups a chunk: a checkpoint after updates to a few keys rewrites about 1/32 of the
//! state per touched key rather than all of it, while the file count (and the metadata's
//! size and the per-file cost of object storage) stays bounded by 32 + parallelism per table
//! at any maxParallelism. Finer chunks would save little more and multiply files.
//!
//! A reused file's bytes are exactly those a new file would hold (equal hashes of the
//! encoded bytes), so reuse never changes what a restore reads. A chunk's rows are sorted by
//! their whole row value (Arrow's row format), so its bytes depend on its rows only, not on
//! the order an operator's hash map hands them out in (which changes when the map grows, and
//! after a restore). A table with a column the row format cannot encode keeps the snapshot
//! order: a different order then costs a rewrite of the chunk, never a wrong restore.

use std::collections::HashMap;

use arrow::array::{AsArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::UInt32Type;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use millrace_checkpoint::{CheckpointStorage, KeyGroupRange as StoredRange, SnapshotMetadata, StateFile};
use millrace_runtime::KeyGroupRange;
use millrace_runtime::state::KEY_GROUP_COLUMN;

/// Grid chunks per keyed table (see the module docs).
pub const CHUNKS_PER_TABLE: u32 = 32;

/// A subtask's keyed table with fewer rows is one file over its whole range: cutting small
/// state saves no bytes and costs a file per chunk (a watermark table, one row per key
/// group, would otherwise be 32 files rewritten at every checkpoint).
pub const MIN_ROWS_TO_CHUNK: usize = 4096;

/// Key groups per grid chunk for a subtask's keyed table of `rows` rows.
pub fn chunk_width(max_parallelism: u32, rows: usize) -> u32 {
    if rows < MIN_ROWS_TO_CHUNK {
        return max_parallelism.max(1);
    }
    (max_parallelism / CHUNKS_PER_TABLE).max(1)
}

/// The algorithm prefix of [`content_hash`]: a hash of another algorithm never matches.
const HASH_ALGORITHM: &str = "xxh3-128";

/// The content hash of a state file's bytes, as stored in the metadata.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{HASH_ALGORITHM}:{:032x}", twox_hash::XxHash3_128::oneshot(bytes))
}

/// The rows of one subtask's keyed table (`batches`, key-group column first) cut into grid
/// chunks within `owned`, in key-group order; each chunk is one batch, its rows sorted (see
/// the module docs). A row outside `owned` is an error: the file would claim key groups it lacks.
pub fn key_group_chunks(
    batches: &[RecordBatch],
    owned: KeyGroupRange,
    width: u32,
) -> Result<Vec<(KeyGroupRange, RecordBatch)>, String> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(Vec::new());
    };
    let width = width.max(1);
    let mut pieces: Vec<(u32, RecordBatch)> = Vec::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        let column = batch
            .schema()
            .index_of(KEY_GROUP_COLUMN)
            .map_err(|_| format!("keyed state has no {KEY_GROUP_COLUMN} column"))?;
        let groups = batch.column(column).as_primitive_opt::<UInt32Type>().ok_or_else(|| {
            format!("{KEY_GROUP_COLUMN} is {}, not UInt32", batch.column(column).data_type())
        })?;
        // Row indices per grid chunk, in row order (a stable bucket sort).
        let mut rows: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
        for (row, group) in groups.iter().enumerate() {
            let group = group.ok_or_else(|| format!("{KEY_GROUP_COLUMN} is null"))?;
            if !owned.contains(group) {
                return Err(format!(
                    "a row of key group {group} in the state of the subtask owning {}..={}",
                    owned.first, owned.last
                ));
            }
            rows.entry(group / width).or_default().push(row as u32);
        }
        for (chunk, indices) in rows {
            let piece = take_record_batch(batch, &UInt32Array::from(indices)).map_err(|e| e.to_string())?;
            pieces.push((chunk, piece));
        }
    }
    pieces.sort_by_key(|(chunk, _)| *chunk);
    let mut chunks = Vec::new();
    for group in pieces.chunk_by(|a, b| a.0 == b.0) {
        let chunk = group[0].0;
        let range = KeyGroupRange {
            first: (chunk * width).max(owned.first),
            last: chunk.saturating_mul(width).saturating_add(width - 1).min(owned.last),
        };
        let batch = if group.len() == 1 {
            group[0].1.clone()
        } else {
            concat_batches(&schema, group.iter().map(|(_, b)| b)).map_err(|e| e.to_string())?
        };
        chunks.push((range, sorted(batch)?));
    }
    Ok(chunks)
}

/// `batch` with its rows in the order of their row-format encoding; as it is when a column
/// has a type the row format cannot encode.
fn sorted(batch: RecordBatch) -> Result<RecordBatch, String> {
    let fields = batch.schema().fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
    let Ok(converter) = RowConverter::new(fields) else { return Ok(batch) };
    let Ok(rows) = converter.convert_columns(batch.columns()) else { return Ok(batch) };
    let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
    order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    take_record_batch(&batch, &UInt32Array::from(order)).map_err(|e| e.to_string())
}

/// Where in a state table a file belongs: what a later checkpoint's file must match to
/// replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    KeyGroups { first: u32, last: u32 },
    Subtask(u32),
}

impl Slot {
    fn of(file: &StateFile) -> Option<Self> {
        match (file.key_groups, file.subtask) {
            (Some(range), _) => Some(Slot::KeyGroups { first: range.first, last: range.last }),
            (None, Some(subtask)) => Some(Slot::Subtask(subtask)),
            (None, None) => None,
        }
    }

    /// The file's name within its table's folder.
    fn file_name(&self, extension: &str) -> String {
        match self {
            Slot::KeyGroups { first, last } => format!("kg-{first}-{last}.{extension}"),
            Slot::Subtask(subtask) => format!("{subtask}.{extension}"),
        }
    }

    fn state_file(&self, path: String, bytes: u64, hash: String) -> StateFile {
        let (key_groups, subtask) = match *self {
            Slot::KeyGroups { first, last } => (Some(StoredRange { first, last }), None),
            Slot::Subtask(subtask) => (None, Some(subtask)),
        };
        StateFile { path, key_groups, subtask, bytes, content_hash: Some(hash) }
    }
}

/// The hashed files of one completed checkpoint, by (operator id, table, slot).
#[derive(Debug, Clone, Default)]
pub struct FileIndex(HashMap<(String, String, Slot), StateFile>);

impl FileIndex {
    /// The files of `metadata` that carry a content hash (older checkpoints' files have
    /// none and are never reused).
    pub fn of_checkpoint(metadata: &SnapshotMetadata) -> Self {
        let mut index = HashMap::new();
        for operator in &metadata.operators {
            for table in &operator.tables {
                for file in table.files.iter().filter(|f| f.content_hash.is_some()) {
                    if let Some(slot) = Slot::of(file) {
                        index.insert((operator.operator_id.clone(), table.name.clone(), slot), file.clone());
                    }
                }
            }
        }
        Self(index)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Writes the state files of one checkpoint, reusing the last checkpoint's unchanged ones.
pub struct StateWriter<'a> {
    storage: &'a CheckpointStorage,
    checkpoint_id: u64,
    previous: &'a FileIndex,
    files: FileIndex,
    /// Bytes of every file the checkpoint references.
    pub referenced: u64,
    /// Bytes of the files this checkpoint wrote.
    pub written: u64,
}

impl<'a> StateWriter<'a> {
    pub fn new(storage: &'a CheckpointStorage, checkpoint_id: u64, previous: &'a FileIndex) -> Self {
        Self { storage, checkpoint_id, previous, files: FileIndex::default(), referenced: 0, written: 0 }
    }

    /// The file of `slot` in `operator_id`'s `table` holding `bytes`: the last checkpoint's,
    /// if it held the same bytes, else a new one of this checkpoint.
    pub async fn file(
        &mut self,
        operator_id: &str,
        table: &str,
        slot: Slot,
        extension: &str,
        bytes: Bytes,
    ) -> Result<StateFile, String> {
        let hash = content_hash(&bytes);
        let size = bytes.len() as u64;
        let key = (operator_id.to_owned(), table.to_owned(), slot);
        let file = match self.previous.0.get(&key) {
            Some(old) if old.content_hash.as_deref() == Some(hash.as_str()) && old.bytes == size => {
                old.clone()
            }
            _ => {
                let path = self
                    .storage
                    .put_state_file(self.checkpoint_id, operator_id, table, &slot.file_name(extension), bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                self.written += size;
                slot.state_file(path, size, hash)
            }
        };
        self.referenced += size;
        self.files.0.insert(key, file.clone());
        Ok(file)
    }

    /// The files this checkpoint references: the index the next checkpoint reuses from.
    pub fn into_index(self) -> FileIndex {
        self.files
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use millrace_checkpoint::{OperatorState, SnapshotKind, StateScope, TableState};

    use super::*;

    fn keyed(groups: Vec<u32>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(KEY_GROUP_COLUMN, DataType::UInt32, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let values: Vec<i64> = (0..groups.len() as i64).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(UInt32Array::from(groups)), Arc::new(Int64Array::from(values))],
        )
        .expect("valid batch")
    }

    fn groups_and_values(batch: &RecordBatch) -> Vec<(u32, i64)> {
        let g = batch.column(0).as_primitive::<UInt32Type>();
        let v = batch.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        (0..batch.num_rows()).map(|i| (g.value(i), v.value(i))).collect()
    }

    #[test]
    fn the_grid_width_is_a_32nd_of_max_parallelism_and_at_least_one() {
        let big = MIN_ROWS_TO_CHUNK;
        assert_eq!(chunk_width(128, big), 4);
        assert_eq!(chunk_width(32768, big), 1024);
        assert_eq!(chunk_width(10, big), 1);
        assert_eq!(chunk_width(1, big), 1);
        // Small tables are one chunk: the subtask's whole range.
        assert_eq!(chunk_width(128, big - 1), 128);
        let owned = KeyGroupRange::of_subtask(1, 2, 128);
        let chunks =
            key_group_chunks(&[keyed(vec![64, 100, 127])], owned, chunk_width(128, 3)).expect("chunks");
        assert_eq!(chunks.iter().map(|(r, _)| (r.first, r.last)).collect::<Vec<_>>(), vec![(64, 127)]);
    }

    #[test]
    fn rows_are_cut_into_grid_chunks_within_the_subtask_range_and_sorted() {
        // Subtask 1 of 3 at maxParallelism 128 owns 43..=85; the grid (width 4) cuts it at
        // 44, 48, …, 84.
        let owned = KeyGroupRange::of_subtask(1, 3, 128);
        assert_eq!((owned.first, owned.last), (43, 85));
        let batches = [keyed(vec![85, 43, 50, 44, 49, 43]), keyed(vec![50, 84])];
        let chunks = key_group_chunks(&batches, owned, 4).expect("chunks");
        let ranges: Vec<(u32, u32)> = chunks.iter().map(|(r, _)| (r.first, r.last)).collect();
        assert_eq!(ranges, vec![(43, 43), (44, 47), (48, 51), (84, 85)]);
        let rows: Vec<Vec<(u32, i64)>> = chunks.iter().map(|(_, b)| groups_and_values(b)).collect();
        assert_eq!(
            rows,
            vec![
                vec![(43, 1), (43, 5)],
                vec![(44, 3)],
                vec![(49, 4), (50, 0), (50, 2)],
                vec![(84, 1), (85, 0)],
            ]
        );
        for (range, batch) in &chunks {
            assert!(groups_and_values(batch).iter().all(|(g, _)| range.contains(*g)));
        }
    }

    #[test]
    fn a_chunk_encodes_the_same_whatever_order_its_rows_came_in() -> Result<(), String> {
        let owned = KeyGroupRange::of_subtask(0, 1, 128);
        let encoded = |batches: &[RecordBatch]| -> Result<Vec<String>, String> {
            key_group_chunks(batches, owned, 4)?
                .iter()
                .map(|(_, b)| crate::state_files::encode(std::slice::from_ref(b)).map(|e| content_hash(&e)))
                .collect()
        };
        let one = keyed(vec![5, 1, 6, 2]);
        let reversed =
            take_record_batch(&one, &UInt32Array::from(vec![3, 2, 1, 0])).map_err(|e| e.to_string())?;
        let split = [one.slice(0, 1), one.slice(1, 3)];
        assert_eq!(encoded(std::slice::from_ref(&one))?, encoded(&[reversed])?);
        assert_eq!(encoded(&[one])?, encoded(&split)?);
        Ok(())
    }

    #[test]
    fn a_row_outside_the_subtask_range_or_a_missing_column_is_an_error() {
        let owned = KeyGroupRange::of_subtask(0, 2, 128);
        let err = key_group_chunks(&[keyed(vec![1, 64])], owned, 4).expect_err("refused");
        assert!(err.contains("key group 64"), "{err}");
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let plain = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).expect("batch");
        assert!(key_group_chunks(&[plain], owned, 4).expect_err("refused").contains(KEY_GROUP_COLUMN));
        assert!(key_group_chunks(&[], owned, 4).expect("no rows").is_empty());
    }

    #[test]
    fn chunks_of_every_subtask_pass_the_metadata_check() {
        for (p, m) in [(1usize, 128u32), (2, 128), (3, 128), (5, 7), (4, 10)] {
            let mut metadata = SnapshotMetadata::new(SnapshotKind::Checkpoint, "job", 1, m, p as u32);
            let mut files = Vec::new();
            for s in 0..p {
                let owned = KeyGroupRange::of_subtask(s, p, m);
                let all: Vec<u32> = (owned.first..=owned.last).collect();
                for (range, _) in
                    key_group_chunks(&[keyed(all)], owned, chunk_width(m, MIN_ROWS_TO_CHUNK)).expect("chunks")
                {
                    let slot = Slot::KeyGroups { first: range.first, last: range.last };
                    files.push(slot.state_file(
                        format!("shared/chk-1/op/t/{}", slot.file_name("arrow")),
                        1,
                        "h".into(),
                    ));
                }
            }
            let covered: u32 = files.iter().filter_map(|f| f.key_groups).map(|r| r.last - r.first + 1).sum();
            assert_eq!(covered, m, "p={p} m={m}: the chunks cover every key group once");
            metadata.operators.push(OperatorState {
                operator_id: "op".into(),
                tables: vec![TableState { name: "t".into(), scope: StateScope::KeyGroups, files }],
            });
            metadata.to_json().unwrap_or_else(|e| panic!("p={p} m={m}: {e}"));
        }
    }

    #[test]
    fn the_content_hash_is_stable_and_tells_bytes_apart() {
        // Pinned: hashes in existing checkpoints' metadata depend on it.
        assert_eq!(
            content_hash(b""),
            format!("xxh3-128:{:032x}", 0x99aa_06d3_0147_98d8_6001_c324_468d_497fu128)
        );
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
        assert_eq!(content_hash(b"state"), content_hash(b"state"));
    }

    #[tokio::test]
    async fn unchanged_files_are_referenced_and_changed_ones_written() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let storage = CheckpointStorage::open(&format!("file://{}", dir.path().display()))
            .map_err(|e| e.to_string())?;
        let (a, b) = (Slot::KeyGroups { first: 0, last: 3 }, Slot::KeyGroups { first: 4, last: 7 });
        let empty = FileIndex::default();
        let mut first = StateWriter::new(&storage, 1, &empty);
        first.file("op", "t", a, "arrow", Bytes::from_static(b"aaaa")).await?;
        first.file("op", "t", b, "arrow", Bytes::from_static(b"bb")).await?;
        assert_eq!((first.written, first.referenced), (6, 6));
        let index = first.into_index();

        let mut second = StateWriter::new(&storage, 2, &index);
        let kept = second.file("op", "t", a, "arrow", Bytes::from_static(b"aaaa")).await?;
        let changed = second.file("op", "t", b, "arrow", Bytes::from_static(b"bc")).await?;
        // Same bytes in another slot or table are not the same file.
        let other = second.file("op", "u", a, "arrow", Bytes::from_static(b"aaaa")).await?;
        assert_eq!(kept.path, "shared/chk-1/op/t/kg-0-3.arrow");
        assert_eq!(changed.path, "shared/chk-2/op/t/kg-4-7.arrow");
        assert_eq!(other.path, "shared/chk-2/op/u/kg-0-3.arrow");
        assert_eq!((second.written, second.referenced), (6, 10));
        assert_eq!(storage.read(&changed.path).await.map_err(|e| e.to_string())?, Bytes::from_static(b"bc"));
        Ok(())
    }
}

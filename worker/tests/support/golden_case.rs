//! The golden cases' files (see `tests/golden.rs` for their layout) and how their output
//! is compared: shared by the golden tests and the checkpoint/restore tests that replay them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use millrace_connectors::MemoryRecord;
use millrace_types::changelog::split_row_kinds;
use serde_json::Value;

pub fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn job_sql(case: &Path) -> String {
    let sql = case.join("job.sql");
    if sql.exists() {
        return read(&sql);
    }
    let example = read(&case.join("example"));
    read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(example.trim()))
}

pub fn records(path: &Path) -> Vec<MemoryRecord> {
    let parsed: Vec<Value> =
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parsed
        .into_iter()
        .map(|r| MemoryRecord {
            partition: r.get("partition").and_then(Value::as_i64).unwrap_or(0) as i32,
            timestamp_ms: r.get("timestamp").and_then(Value::as_i64),
            value: match r.get("value") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone().into_bytes()),
                Some(other) => Some(other.to_string().into_bytes()),
            },
        })
        .collect()
}

pub fn rows_as_json(batches: &[RecordBatch]) -> Vec<Value> {
    let mut rows = Vec::new();
    for batch in batches {
        let (logical, kinds) = split_row_kinds(batch).expect("row kinds decode");
        let mut buffer = Vec::new();
        let mut writer = arrow::json::ArrayWriter::new(&mut buffer);
        writer.write(&logical).expect("batches encode as JSON");
        writer.finish().expect("JSON writer finishes");
        drop(writer);
        if buffer.is_empty() {
            continue;
        }
        let mut batch_rows: Vec<Value> = serde_json::from_slice(&buffer).expect("arrow writes valid JSON");
        if let Some(kinds) = kinds {
            for (row, kind) in batch_rows.iter_mut().zip(kinds) {
                if let Some(object) = row.as_object_mut() {
                    object.insert("op".into(), Value::String(kind.short_string().into()));
                }
            }
        }
        rows.extend(batch_rows);
    }
    rows
}

/// Applies a changelog (rows with `op`) by `key` (column names): the last row per key,
/// deleted keys removed, sorted.
pub fn upserted_table(changelog: &[Value], key: &[String]) -> Vec<Value> {
    let mut table: std::collections::BTreeMap<String, Value> = Default::default();
    for row in changelog {
        let id = Value::Array(key.iter().map(|k| row[k].clone()).collect()).to_string();
        let mut row = row.clone();
        let op = row.as_object_mut().and_then(|o| o.remove("op"));
        if op.as_ref().and_then(Value::as_str) == Some("-D") {
            table.remove(&id);
        } else {
            table.insert(id, row);
        }
    }
    let mut rows: Vec<Value> = table.into_values().collect();
    rows.sort_by_key(Value::to_string);
    rows
}

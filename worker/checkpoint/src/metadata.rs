//! The metadata of a completed checkpoint or savepoint (`_metadata`, JSON): which state files
//! make up each operator's state tables, which key groups each file holds, and where every
//! source stood. This module owns the format, its version, and the checks that make a
//! malformed or foreign file an error with a reason rather than a panic or a silent partial
//! restore. It does no I/O. The format is documented in docs/savepoint-format.md.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::CheckpointError;

/// The value of the `format` field: tells our metadata from any other JSON.
pub const FORMAT: &str = "millrace-checkpoint";

/// The newest metadata version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Checkpoints are the engine's own (incremental, sharing files with earlier checkpoints);
/// savepoints are the user's (self-contained: every file lives under the savepoint's folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// How a state table is partitioned, which decides how it is redistributed on rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StateScope {
    /// Keyed state: each file holds a range of key groups.
    KeyGroups,
    /// Per-instance state (global operators run with parallelism 1): one file per subtask.
    Instance,
}

/// Key groups `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGroupRange {
    pub first: u32,
    pub last: u32,
}

impl KeyGroupRange {
    pub fn contains(&self, key_group: u32) -> bool {
        (self.first..=self.last).contains(&key_group)
    }
}

/// One file of a state table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateFile {
    /// Relative path: for a checkpoint, to the job's storage root (files may belong to an
    /// earlier checkpoint: that is what makes checkpoints incremental); for a savepoint, to
    /// the savepoint's own folder.
    pub path: String,
    /// The key groups the file holds (keyed tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<KeyGroupRange>,
    /// The subtask whose state it is (instance tables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask: Option<u32>,
    pub bytes: u64,
    /// A hash of the file's bytes, `<algorithm>:<hex>` (`xxh3-128:…`). A later checkpoint
    /// whose file for the same slot hashes the same references this file instead of writing
    /// its own. Absent in older documents and where nothing hashed the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

/// One declared state table of an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableState {
    pub name: String,
    pub scope: StateScope,
    pub files: Vec<StateFile>,
}

/// The state of one operator, under its stable id (derived from the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorState {
    pub operator_id: String,
    pub tables: Vec<TableState>,
}

/// Where a Kafka source table stood: the next offset to read per partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourcePosition {
    pub table: String,
    pub topic: String,
    pub next_offsets: BTreeMap<i32, i64>,
}

/// The whole `_metadata` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotMetadata {
    pub format: String,
    pub version: u32,
    pub kind: SnapshotKind,
    pub job: String,
    pub checkpoint_id: u64,
    /// Milliseconds since the epoch when the snapshot completed.
    pub completed_at_ms: i64,
    pub max_parallelism: u32,
    pub parallelism: u32,
    pub operators: Vec<OperatorState>,
    pub sources: Vec<SourcePosition>,
    /// Set on the final checkpoint of a job whose input ended: its output is complete and
    /// committed, and there is nothing to resume (absent in older documents: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

impl SnapshotMetadata {
    /// A new, empty document of the current version.
    pub fn new(
        kind: SnapshotKind,
        job: &str,
        checkpoint_id: u64,
        max_parallelism: u32,
        parallelism: u32,
    ) -> Self {
        Self {
            format: FORMAT.to_owned(),
            version: FORMAT_VERSION,
            kind,
            job: job.to_owned(),
            checkpoint_id,
            completed_at_ms: 0,
            max_parallelism,
            parallelism,
            operators: Vec::new(),
            sources: Vec::new(),
            finished: false,
        }
    }

    /// Every state file the snapshot references.
    pub fn files(&self) -> impl Iterator<Item = &StateFile> {
        self.operators.iter().flat_map(|o| o.tables.iter()).flat_map(|t| t.files.iter())
    }

    pub fn operator(&self, id: &str) -> Option<&OperatorState> {
        self.operators.iter().find(|o| o.operator_id == id)
    }

    /// Parses and checks a `_metadata` document read from `location`.
    pub fn parse(location: &str, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let malformed =
            |why: String| CheckpointError::MalformedMetadata { location: location.to_owned(), why };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| malformed(format!("not JSON: {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(malformed(format!("its \"format\" is not {FORMAT:?}")));
        }
        // The version decides how to read the rest, so check it before the shape.
        let version = value
            .get("version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| malformed("no \"version\"".into()))?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(CheckpointError::UnsupportedVersion {
                location: location.to_owned(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let metadata: SnapshotMetadata =
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
        metadata.check().map_err(malformed)?;
        Ok(metadata)
    }

    /// The document as written to storage.
    pub fn to_json(&self) -> Result<Vec<u8>, CheckpointError> {
        self.check()
            .map_err(|why| CheckpointError::MalformedMetadata { location: "(to be written)".into(), why })?;
        serde_json::to_vec_pretty(self).map_err(|e| CheckpointError::MalformedMetadata {
            location: "(to be written)".into(),
            why: e.to_string(),
        })
    }

    /// The invariants a restore relies on.
    fn check(&self) -> Result<(), String> {
        if self.max_parallelism == 0 {
            return Err("maxParallelism is 0".into());
        }
        if self.parallelism == 0 || self.parallelism > self.max_parallelism {
            return Err(format!(
                "parallelism {} is not within 1..={}",
                self.parallelism, self.max_parallelism
            ));
        }
        let mut ids = BTreeSet::new();
        for operator in &self.operators {
            if !ids.insert(operator.operator_id.as_str()) {
                return Err(format!("operator {:?} appears twice", operator.operator_id));
            }
            let mut tables = BTreeSet::new();
            for table in &operator.tables {
                let at = format!("operator {:?} table {:?}", operator.operator_id, table.name);
                if !tables.insert(table.name.as_str()) {
                    return Err(format!("{at} appears twice"));
                }
                self.check_table(table).map_err(|why| format!("{at}: {why}"))?;
            }
        }
        Ok(())
    }

    fn check_table(&self, table: &TableState) -> Result<(), String> {
        let mut covered: Vec<KeyGroupRange> = Vec::new();
        for file in &table.files {
            check_relative_path(&file.path)?;
            match (table.scope, file.key_groups, file.subtask) {
                (StateScope::KeyGroups, Some(range), None) => {
                    if range.first > range.last || range.last >= self.max_parallelism {
                        return Err(format!(
                            "{}: key groups {}..={} are not within 0..{}",
                            file.path, range.first, range.last, self.max_parallelism
                        ));
                    }
                    if let Some(other) =
                        covered.iter().find(|o| o.first <= range.last && range.first <= o.last)
                    {
                        return Err(format!(
                            "{}: key groups {}..={} overlap {}..={} of another file",
                            file.path, range.first, range.last, other.first, other.last
                        ));
                    }
                    covered.push(range);
                }
                (StateScope::Instance, None, Some(_)) => {}
                (StateScope::KeyGroups, _, _) => {
                    return Err(format!("{}: a keyed file needs keyGroups only", file.path));
                }
                (StateScope::Instance, _, _) => {
                    return Err(format!("{}: an instance file needs subtask only", file.path));
                }
            }
        }
        Ok(())
    }
}

/// State paths are relative and stay inside their base: no absolute paths, no `..`.
fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.contains('\\') {
        return Err(format!("state file path {path:?} must be relative"));
    }
    if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(format!("state file path {path:?} must not contain empty, '.' or '..' parts"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotMetadata {
        let mut m = SnapshotMetadata::new(SnapshotKind::Checkpoint, "clicks", 7, 128, 2);
        m.operators.push(OperatorState {
            operator_id: "s1.window_aggregate".into(),
            tables: vec![TableState {
                name: "windows".into(),
                scope: StateScope::KeyGroups,
                files: vec![
                    StateFile {
                        path: "shared/chk-5/a.arrow".into(),
                        key_groups: Some(KeyGroupRange { first: 0, last: 63 }),
                        subtask: None,
                        bytes: 10,
                        content_hash: None,
                    },
                    StateFile {
                        path: "shared/chk-7/b.arrow".into(),
                        key_groups: Some(KeyGroupRange { first: 64, last: 127 }),
                        subtask: None,
                        bytes: 20,
                        content_hash: Some("xxh3-128:00ff".into()),
                    },
                ],
            }],
        });
        m.sources.push(SourcePosition {
            table: "input".into(),
            topic: "clicks".into(),
            next_offsets: BTreeMap::from([(0, 42), (1, 17)]),
        });
        m
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let m = sample();
        let bytes = m.to_json().expect("valid metadata serializes");
        assert_eq!(SnapshotMetadata::parse("mem", &bytes).expect("parses back"), m);
        assert_eq!(m.files().count(), 2);
        // contentHash is written only where there is one, so older readers see v1 as before.
        let text = String::from_utf8(bytes).expect("JSON is UTF-8");
        assert_eq!(text.matches("\"contentHash\": \"xxh3-128:00ff\"").count(), 1, "{text}");
    }

    #[test]
    fn malformed_documents_are_reported_with_the_reason() {
        let err = |bytes: &[u8]| {
            SnapshotMetadata::parse("s3://b/chk-7/_metadata", bytes).expect_err("refused").to_string()
        };
        assert!(err(b"{not json").contains("not JSON"));
        assert!(err(br#"{"format": "flink"}"#).contains("format"));
        assert!(err(br#"{"format": "millrace-checkpoint"}"#).contains("no \"version\""));
        let newer = err(br#"{"format": "millrace-checkpoint", "version": 9}"#);
        assert!(newer.contains("format version 9") && newer.contains("up to 1"), "{newer}");
        assert!(
            err(br#"{"format": "millrace-checkpoint", "version": 1, "kind": "checkpoint"}"#)
                .contains("missing field")
        );
        assert!(
            err(br#"{"format": "millrace-checkpoint", "version": 1}"#)
                .starts_with("s3://b/chk-7/_metadata is not valid")
        );
    }

    #[test]
    fn inconsistent_state_layouts_are_refused() {
        let refuse = |m: SnapshotMetadata| {
            let bytes = serde_json::to_vec(&m).expect("serializes");
            SnapshotMetadata::parse("mem", &bytes).expect_err("refused").to_string()
        };
        let mut overlap = sample();
        overlap.operators[0].tables[0].files[1].key_groups = Some(KeyGroupRange { first: 60, last: 127 });
        assert!(refuse(overlap).contains("overlap"));
        let mut outside = sample();
        outside.operators[0].tables[0].files[1].key_groups = Some(KeyGroupRange { first: 64, last: 128 });
        assert!(refuse(outside).contains("not within 0..128"));
        let mut escape = sample();
        escape.operators[0].tables[0].files[0].path = "../other-job/x.arrow".into();
        assert!(refuse(escape).contains("'..'"));
        let mut twice = sample();
        twice.operators.push(twice.operators[0].clone());
        assert!(refuse(twice).contains("appears twice"));
        let mut wide = sample();
        wide.parallelism = 129;
        assert!(refuse(wide).contains("parallelism 129"));
        let mut unkeyed = sample();
        unkeyed.operators[0].tables[0].files[0].key_groups = None;
        assert!(refuse(unkeyed).contains("needs keyGroups"));
    }
}

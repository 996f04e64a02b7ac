//! Checkpoint and savepoint storage of the Millrace engine: the versioned `_metadata` format
//! ([`metadata`]) and its home on `object_store` ([`storage`]): layout, "metadata written
//! last", retention of the last N checkpoints with cleanup of unreferenced and failed files,
//! and self-contained savepoints. Malformed or foreign metadata is an error that says where
//! and why, never a panic.
//!
//! This crate knows nothing of operators, Arrow or Kafka: the state backend decides what the
//! bytes of a state file are, the coordinator decides when a checkpoint is complete.
//!
//! Not wired into the runtime yet: nothing takes checkpoints today (see docs/engine.md).

mod error;
pub mod metadata;
pub mod storage;

pub use error::CheckpointError;
pub use metadata::{
    FORMAT, FORMAT_VERSION, KeyGroupRange, OperatorState, SnapshotKind, SnapshotMetadata, SourcePosition,
    StateFile, StateScope, TableState,
};
pub use storage::{CheckpointStorage, METADATA_FILE, Retention};

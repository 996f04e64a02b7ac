//! Job files: plain SQL (`*.sql`) or a StreamJob manifest (`*.yaml`/`*.yml`, the resource the
//! operator deploys), of which `run` uses the SQL, the parallelism and the slots.

use std::path::Path;

use serde::Deserialize;

use crate::job::JobError;

/// A job as read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSource {
    pub name: String,
    pub sql: String,
    pub parallelism: Option<usize>,
    pub slots_per_worker: Option<usize>,
    pub max_parallelism: Option<u32>,
    /// spec.checkpointing.storage
    pub checkpoint_storage: Option<String>,
    pub checkpoint_interval_ms: Option<u64>,
    pub checkpoints_retained: Option<usize>,
    pub initial_savepoint: Option<String>,
    pub allow_non_restored_state: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    sql: String,
    parallelism: Option<usize>,
    slots_per_worker: Option<usize>,
    max_parallelism: Option<u32>,
    checkpointing: Option<Checkpointing>,
    initial_savepoint: Option<String>,
    #[serde(default)]
    allow_non_restored_state: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checkpointing {
    interval_ms: Option<u64>,
    storage: Option<String>,
    retained: Option<usize>,
}

/// Reads a job from `path` (SQL or a StreamJob manifest, by extension).
pub fn load_job_file(path: &Path) -> Result<JobSource, JobError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| JobError::Io(format!("reading {}: {e}", path.display())))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job".into());
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => parse_manifest(&text),
        _ => Ok(JobSource {
            name,
            sql: text,
            parallelism: None,
            slots_per_worker: None,
            max_parallelism: None,
            checkpoint_storage: None,
            checkpoint_interval_ms: None,
            checkpoints_retained: None,
            initial_savepoint: None,
            allow_non_restored_state: false,
        }),
    }
}

/// Parses a StreamJob manifest.
pub fn parse_manifest(text: &str) -> Result<JobSource, JobError> {
    let manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| JobError::Manifest(e.to_string()))?;
    if manifest.kind != "StreamJob" {
        return Err(JobError::Manifest(format!("expected kind StreamJob, got {}", manifest.kind)));
    }
    Ok(JobSource {
        name: manifest.metadata.name,
        sql: manifest.spec.sql,
        parallelism: manifest.spec.parallelism,
        slots_per_worker: manifest.spec.slots_per_worker,
        max_parallelism: manifest.spec.max_parallelism,
        checkpoint_storage: manifest.spec.checkpointing.as_ref().and_then(|c| c.storage.clone()),
        checkpoint_interval_ms: manifest.spec.checkpointing.as_ref().and_then(|c| c.interval_ms),
        checkpoints_retained: manifest.spec.checkpointing.as_ref().and_then(|c| c.retained),
        initial_savepoint: manifest.spec.initial_savepoint,
        allow_non_restored_state: manifest.spec.allow_non_restored_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_manifests_carry_the_seed_sql() {
        for (manifest, sql) in [
            ("seed-a-rolling-average.yaml", "seed-a-rolling-average.sql"),
            ("seed-b-tumbling-average.yaml", "seed-b-tumbling-average.sql"),
            ("seed-b-tumbling-average-event-time.yaml", "seed-b-tumbling-average-event-time.sql"),
        ] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed");
            let job = load_job_file(&dir.join(manifest)).unwrap_or_else(|e| panic!("{manifest}: {e}"));
            let plain = std::fs::read_to_string(dir.join(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let body = |s: &str| {
                s.lines()
                    .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(body(&job.sql), body(&plain), "{manifest} and {sql} drifted apart");
            assert!(job.parallelism.is_some());
        }
        assert!(parse_manifest("kind: Deployment\nmetadata: {name: x}\nspec: {sql: ''}").is_err());
    }
}

//! Checkpoint storage on `object_store`: where state files and `_metadata` documents live,
//! the rule that a checkpoint exists exactly when its `_metadata` does (written last, after
//! every file it references is there), retention of the last N completed checkpoints with the
//! cleanup of files nothing references any more (including those of failed checkpoints), and
//! self-contained savepoints copied out of a checkpoint.
//!
//! Layout under a job's storage root (see docs/savepoint-format.md):
//!
//! ```text
//! chk-<id>/_metadata                             a completed checkpoint
//! shared/chk-<id>/<operator>/<table>/<file>      state files written by checkpoint <id>;
//!                                                later checkpoints may reference them
//! ```
//!
//! A savepoint folder holds `_metadata` and `state/<operator>/<table>/<file>`, nothing else.
//! This module moves bytes; what the bytes mean (Arrow IPC of an operator's state) is the
//! state backend's.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::CheckpointError;
use crate::metadata::{SnapshotKind, SnapshotMetadata};

/// The name of the document that makes a folder a checkpoint or savepoint.
pub const METADATA_FILE: &str = "_metadata";

/// What [`CheckpointStorage::retain`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Completed checkpoints removed (oldest first).
    pub removed_checkpoints: Vec<u64>,
    /// State and metadata objects deleted (of removed, failed or superseded checkpoints).
    pub removed_objects: usize,
}

/// One job's checkpoint storage, or one savepoint folder.
#[derive(Debug, Clone)]
pub struct CheckpointStorage {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl CheckpointStorage {
    /// Opens storage at `url`: `file:///absolute/dir` (created if missing), or
    /// `s3://bucket/prefix` on any S3-compatible store, configured by the standard `AWS_*`
    /// environment variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).
    pub fn open(url: &str) -> Result<Self, CheckpointError> {
        let unsupported =
            |why: &str| CheckpointError::UnsupportedUrl { url: url.to_owned(), why: why.to_owned() };
        let parsed = url::Url::parse(url).map_err(|e| unsupported(&e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed.to_file_path().map_err(|()| unsupported("not an absolute local path"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| unsupported(&format!("cannot create {}: {e}", dir.display())))?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|source| CheckpointError::Store { location: url.to_owned(), source })?;
                Ok(Self { store: Arc::new(store), url: url.trim_end_matches('/').to_owned() })
            }
            "s3" => {
                let bucket =
                    parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| unsupported("no bucket"))?;
                // Endpoint, credentials and region from the standard AWS_* variables
                // (AWS_ENDPOINT_URL for any S3-compatible store, AWS_ALLOW_HTTP for plain http).
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|source| CheckpointError::Store { location: url.to_owned(), source })?;
                let prefix = parsed.path().trim_matches('/');
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(PrefixStore::new(store, prefix))
                };
                Ok(Self { store, url: url.trim_end_matches('/').to_owned() })
            }
            other => Err(unsupported(&format!("scheme {other}:// (supported: file://, s3://)"))),
        }
    }

    /// A storage root under this one (e.g. one job's folder, or one savepoint's).
    pub fn child(&self, name: &str) -> Result<Self, CheckpointError> {
        Self::open(&format!("{}/{}", self.url, name.trim_matches('/')))
    }

    /// The URL of `relative` in this storage, for messages and status.
    pub fn location(&self, relative: &str) -> String {
        format!("{}/{relative}", self.url)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes one state file of checkpoint `checkpoint_id` and returns its relative path, to
    /// be listed in that checkpoint's metadata.
    pub async fn put_state_file(
        &self,
        checkpoint_id: u64,
        operator_id: &str,
        table: &str,
        name: &str,
        bytes: Bytes,
    ) -> Result<String, CheckpointError> {
        let relative = format!("shared/chk-{checkpoint_id}/{operator_id}/{table}/{name}");
        self.put(&relative, bytes).await?;
        Ok(relative)
    }

    /// Reads a file by its path relative to this storage.
    pub async fn read(&self, relative: &str) -> Result<Bytes, CheckpointError> {
        let location = self.location(relative);
        let result =
            self.store.get(&Path::from(relative)).await.map_err(CheckpointError::store(&location))?;
        result.bytes().await.map_err(CheckpointError::store(location))
    }

    /// Completes a checkpoint: checks that every file it references is in storage, then
    /// writes its `_metadata` (last, so a crash before this leaves no half checkpoint).
    /// Returns the metadata's location.
    pub async fn complete_checkpoint(&self, metadata: &SnapshotMetadata) -> Result<String, CheckpointError> {
        if metadata.kind != SnapshotKind::Checkpoint {
            return Err(CheckpointError::MalformedMetadata {
                location: self.url.clone(),
                why: "a savepoint cannot be completed as a checkpoint".into(),
            });
        }
        let relative = format!("chk-{}/{METADATA_FILE}", metadata.checkpoint_id);
        self.check_references(&relative, metadata).await?;
        self.put(&relative, Bytes::from(metadata.to_json()?)).await?;
        Ok(self.location(&relative))
    }

    /// Ids of the completed checkpoints, oldest first.
    pub async fn completed_checkpoints(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids = Vec::new();
        for (id, _) in self.checkpoint_folders().await? {
            let metadata = Path::from(format!("chk-{id}/{METADATA_FILE}"));
            match self.store.head(&metadata).await {
                Ok(_) => ids.push(id),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(CheckpointError::Store {
                        location: self.location(metadata.as_ref()),
                        source,
                    });
                }
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The metadata of completed checkpoint `checkpoint_id`.
    pub async fn load_checkpoint(&self, checkpoint_id: u64) -> Result<SnapshotMetadata, CheckpointError> {
        self.load(&format!("chk-{checkpoint_id}/{METADATA_FILE}"), SnapshotKind::Checkpoint).await
    }

    /// The newest completed checkpoint, if any: where a restarted job resumes.
    pub async fn latest_checkpoint(&self) -> Result<Option<SnapshotMetadata>, CheckpointError> {
        match self.completed_checkpoints().await?.last() {
            Some(id) => Ok(Some(self.load_checkpoint(*id).await?)),
            None => Ok(None),
        }
    }

    /// Reads the savepoint whose folder this storage is, and checks that its files are there.
    pub async fn load_savepoint(&self) -> Result<SnapshotMetadata, CheckpointError> {
        let metadata = self.load(METADATA_FILE, SnapshotKind::Savepoint).await?;
        self.check_references(METADATA_FILE, &metadata).await?;
        Ok(metadata)
    }

    /// Copies completed checkpoint `metadata` (of this storage) into the empty folder
    /// `target` as a self-contained savepoint, writing its `_metadata` last.
    pub async fn write_savepoint(
        &self,
        metadata: &SnapshotMetadata,
        target: &CheckpointStorage,
        completed_at_ms: i64,
    ) -> Result<SnapshotMetadata, CheckpointError> {
        if target.store.head(&Path::from(METADATA_FILE)).await.is_ok() {
            return Err(CheckpointError::MalformedMetadata {
                location: target.location(METADATA_FILE),
                why: "a savepoint already exists there; savepoints are never overwritten".into(),
            });
        }
        let mut savepoint = metadata.clone();
        savepoint.kind = SnapshotKind::Savepoint;
        savepoint.completed_at_ms = completed_at_ms;
        for operator in &mut savepoint.operators {
            for table in &mut operator.tables {
                for (index, file) in table.files.iter_mut().enumerate() {
                    let name = file.path.rsplit('/').next().unwrap_or("state");
                    let copied = format!("state/{}/{}/{index}-{name}", operator.operator_id, table.name);
                    target.put(&copied, self.read(&file.path).await?).await?;
                    file.path = copied;
                }
            }
        }
        target.put(METADATA_FILE, Bytes::from(savepoint.to_json()?)).await?;
        Ok(savepoint)
    }

    /// Keeps the newest `keep` completed checkpoints (at least one) and deletes the rest,
    /// then every state file that no kept checkpoint references and that belongs to a
    /// checkpoint no newer than the newest kept one (files of failed checkpoints included;
    /// files of a checkpoint still in progress, newer than all completed ones, are left).
    pub async fn retain(&self, keep: usize) -> Result<Retention, CheckpointError> {
        let completed = self.completed_checkpoints().await?;
        let Some(&newest) = completed.last() else {
            return Ok(Retention::default());
        };
        let split = completed.len().saturating_sub(keep.max(1));
        let (removed, kept) = completed.split_at(split);
        let mut referenced = BTreeSet::new();
        for id in kept {
            referenced.extend(self.load_checkpoint(*id).await?.files().map(|f| f.path.clone()));
        }
        let mut retention = Retention { removed_checkpoints: removed.to_vec(), removed_objects: 0 };
        // Metadata first: a checkpoint half-deleted must not look complete.
        for id in removed {
            self.delete(&format!("chk-{id}/{METADATA_FILE}")).await?;
            retention.removed_objects += 1;
        }
        for (id, folder) in self.checkpoint_folders().await? {
            if id < newest && !kept.contains(&id) {
                retention.removed_objects += self.delete_all(Some(&folder), |_| true).await?;
            }
        }
        let shared = Path::from("shared");
        retention.removed_objects += self
            .delete_all(Some(&shared), |path| {
                let owner =
                    path.parts().nth(1).and_then(|p| p.as_ref().strip_prefix("chk-")?.parse::<u64>().ok());
                owner.is_some_and(|id| id <= newest) && !referenced.contains(path.as_ref())
            })
            .await?;
        Ok(retention)
    }

    async fn load(&self, relative: &str, kind: SnapshotKind) -> Result<SnapshotMetadata, CheckpointError> {
        let location = self.location(relative);
        let bytes = self.read(relative).await?;
        let metadata = SnapshotMetadata::parse(&location, &bytes)?;
        if metadata.kind != kind {
            return Err(CheckpointError::MalformedMetadata {
                location,
                why: format!("it describes a {:?}, not a {kind:?}", metadata.kind),
            });
        }
        Ok(metadata)
    }

    async fn check_references(
        &self,
        relative: &str,
        metadata: &SnapshotMetadata,
    ) -> Result<(), CheckpointError> {
        for file in metadata.files() {
            let broken = |why: String| CheckpointError::BrokenReference {
                location: self.location(relative),
                path: file.path.clone(),
                why,
            };
            match self.store.head(&Path::from(file.path.as_str())).await {
                Ok(meta) if meta.size == file.bytes => {}
                Ok(meta) => return Err(broken(format!("has {} bytes, not {}", meta.size, file.bytes))),
                Err(object_store::Error::NotFound { .. }) => return Err(broken("is missing".into())),
                Err(source) => {
                    return Err(CheckpointError::Store { location: self.location(&file.path), source });
                }
            }
        }
        Ok(())
    }

    /// The `chk-<id>` folders at the root, with or without metadata.
    async fn checkpoint_folders(&self) -> Result<Vec<(u64, Path)>, CheckpointError> {
        let listing =
            self.store.list_with_delimiter(None).await.map_err(CheckpointError::store(&self.url))?;
        Ok(listing
            .common_prefixes
            .into_iter()
            .filter_map(|p| Some((p.as_ref().strip_prefix("chk-")?.parse::<u64>().ok()?, p)))
            .collect())
    }

    async fn put(&self, relative: &str, bytes: Bytes) -> Result<(), CheckpointError> {
        self.store
            .put(&Path::from(relative), PutPayload::from_bytes(bytes))
            .await
            .map_err(CheckpointError::store(self.location(relative)))?;
        Ok(())
    }

    async fn delete(&self, relative: &str) -> Result<(), CheckpointError> {
        match self.store.delete(&Path::from(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(CheckpointError::Store { location: self.location(relative), source }),
        }
    }

    /// Deletes everything under this root (a job's checkpoints and savepoints, when its
    /// StreamJob says `disposeOnDelete`): every `_metadata` first, so nothing half-deleted
    /// looks complete, then the rest; a `file://` root's emptied folders go too. Returns the
    /// objects deleted.
    pub async fn dispose(&self) -> Result<usize, CheckpointError> {
        let metadata = self.delete_all(None, |path| path.filename() == Some(METADATA_FILE)).await?;
        let rest = self.delete_all(None, |_| true).await?;
        let local = url::Url::parse(&self.url).ok().filter(|u| u.scheme() == "file");
        if let Some(dir) = local.and_then(|u| u.to_file_path().ok())
            && let Err(err) = std::fs::remove_dir_all(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(CheckpointError::Dispose { location: self.url.clone(), why: err.to_string() });
        }
        Ok(metadata + rest)
    }

    async fn delete_all(
        &self,
        prefix: Option<&Path>,
        mut select: impl FnMut(&Path) -> bool,
    ) -> Result<usize, CheckpointError> {
        let objects: Vec<_> =
            self.store.list(prefix).try_collect().await.map_err(CheckpointError::store(&self.url))?;
        let mut deleted = 0;
        for object in objects {
            if select(&object.location) {
                self.delete(object.location.as_ref()).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

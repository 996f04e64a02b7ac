//! The one error type of checkpoint storage. Every variant names the location it concerns, so
//! a person can go and look; malformed metadata is its own variant, never a panic.

/// What went wrong reading or writing checkpoint storage.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint storage URL {url:?} is not supported: {why}")]
    UnsupportedUrl { url: String, why: String },
    #[error("disposing of {location}: {why}")]
    Dispose { location: String, why: String },
    #[error("checkpoint storage at {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{location} is not valid checkpoint metadata: {why}")]
    MalformedMetadata { location: String, why: String },
    #[error("{location} has metadata format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion { location: String, found: u32, supported: u32 },
    #[error("no completed checkpoint or savepoint at {0}")]
    NotFound(String),
    #[error("state file {path} is listed in {location} but {why}")]
    BrokenReference { location: String, path: String, why: String },
}

impl CheckpointError {
    pub(crate) fn store(location: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let location = location.into();
        move |source| match source {
            object_store::Error::NotFound { .. } => CheckpointError::NotFound(location),
            source => CheckpointError::Store { location, source },
        }
    }
}

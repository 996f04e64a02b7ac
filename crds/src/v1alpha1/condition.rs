//! The status condition shared by every Millrace resource, shaped like
//! `metav1.Condition` so that `kubectl wait --for=condition=Ready` and generic tooling work.
//!
//! Defined here rather than reusing `k8s_openapi`'s type because that one needs the
//! `schemars` feature of `k8s-openapi`, which would change the feature set (and rebuild) the
//! whole workspace's Kubernetes stack for one struct.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type every Millrace resource carries: the resource is in its desired state.
pub const READY: &str = "Ready";

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation about a resource, as in `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The kind of observation, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// A PascalCase reason, also used as the Event reason and the failure metric label.
    pub reason: String,
    /// What happened and, when something is wrong, what a person can do about it.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

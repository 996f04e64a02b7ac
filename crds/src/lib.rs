//! Millrace's Kubernetes API: the custom resource types (`StreamJob`, `KafkaTopic`) under the
//! `millrace.io` group, shared spec types and their pure validation, and the rendering of the
//! CustomResourceDefinitions that `crdgen` writes to `charts/millrace/crds/`.
//!
//! It must not talk to a cluster or to Kafka; controllers live in the operator crate.

pub mod crdgen;
pub mod v1alpha1;

/// The API group every Millrace custom resource belongs to.
pub const API_GROUP: &str = "millrace.io";

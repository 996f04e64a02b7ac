//! Keeping the catalog and the tenant's KafkaTopics in step, in both directions:
//!
//! - **status reflected back**: the Ready condition (for the current generation) and the
//!   partitions the operator observed in Kafka are copied into the topic's row;
//! - **drift repaired**: a KafkaTopic deleted or edited outside the API is re-applied from
//!   the catalog (the source of truth), and the repair is reported on the topic
//!   (`status.drift`) and in the audit log (`topic.drift-repaired`).
//!
//! This runs on every read of a topic and, for every topic, every `--resync-seconds` in
//! [`resync_loop`]. A repair locks the topic's row first and re-checks, so it never races
//! an update or delete that has applied to Kubernetes but not yet committed.

use std::time::Duration;

use kube::ResourceExt;
use millrace_crds::v1alpha1::{ConditionStatus, KafkaTopic};
use serde_json::json;
use uuid::Uuid;

use super::{TopicRow, topic_columns};
use crate::AppState;
use crate::audit::{self, Change};
use crate::error::ApiError;
use crate::kubernetes;

/// Who the audit log names for repairs the server makes on its own.
const SYSTEM_ACTOR: &str = "millrace-api";

/// What the Ready condition says about the current generation.
struct Observed {
    ready: &'static str,
    reason: String,
    message: String,
    partitions: Option<i32>,
}

fn observe(topic: &KafkaTopic) -> Observed {
    let generation = topic.metadata.generation;
    let partitions = topic.status.as_ref().and_then(|s| s.partitions);
    match topic.ready_condition() {
        Some(ready) if ready.observed_generation.is_some() && ready.observed_generation == generation => {
            Observed {
                ready: match ready.status {
                    ConditionStatus::True => "True",
                    ConditionStatus::False => "False",
                    ConditionStatus::Unknown => "Unknown",
                },
                reason: ready.reason.clone(),
                message: ready.message.clone(),
                partitions,
            }
        }
        Some(_) => Observed {
            ready: "Unknown",
            reason: "Reconciling".into(),
            message: format!(
                "the operator has not yet reconciled generation {}",
                generation.unwrap_or_default()
            ),
            partitions,
        },
        None => Observed {
            ready: "Unknown",
            reason: "Pending".into(),
            message: "waiting for the operator to reconcile the KafkaTopic".into(),
            partitions,
        },
    }
}

/// Copies `topic`'s status into the row (unless the row changed meanwhile) and returns the row.
async fn reflect(
    db: impl sqlx::PgExecutor<'_>,
    row: &TopicRow,
    topic: &KafkaTopic,
    drift: Option<&str>,
) -> Result<Option<TopicRow>, ApiError> {
    let seen = observe(topic);
    let sql = concat!(
        "UPDATE topics SET ready = $3, ready_reason = $4, ready_message = $5, observed_partitions = $6, \
         observed_at = now(), drift = COALESCE($7, drift), \
         drift_at = CASE WHEN $7::text IS NULL THEN drift_at ELSE now() END \
         WHERE id = $1 AND version = $2 RETURNING ",
        topic_columns!()
    );
    Ok(sqlx::query_as(sql)
        .bind(row.id)
        .bind(row.version)
        .bind(seen.ready)
        .bind(&seen.reason)
        .bind(&seen.message)
        .bind(seen.partitions)
        .bind(drift)
        .fetch_optional(db)
        .await?)
}

/// How `observed` differs from the row; `None` when in step.
fn drift_of(row: &TopicRow, observed: Option<&KafkaTopic>) -> Option<String> {
    match observed {
        None => Some("the KafkaTopic was missing (deleted outside the API); it was re-created".into()),
        Some(topic) if topic.metadata.deletion_timestamp.is_some() => {
            Some("the KafkaTopic was being deleted outside the API; it will be re-created".into())
        }
        Some(topic) => kubernetes::spec_drift(&row.desired(), &topic.spec).map(|difference| {
            format!(
                "the KafkaTopic was edited outside the API ({difference}); the catalog's spec was re-applied"
            )
        }),
    }
}

/// Brings one topic in step: repairs drift, reflects status, returns the up-to-date row.
/// `observed` is the KafkaTopic as just read (`None`: it does not exist).
pub async fn reconcile(
    state: &AppState,
    tenant: &str,
    namespace: &str,
    row: TopicRow,
    observed: Option<KafkaTopic>,
) -> Result<TopicRow, ApiError> {
    if drift_of(&row, observed.as_ref()).is_none()
        && let Some(topic) = &observed
    {
        return Ok(reflect(&state.db, &row, topic, None).await?.unwrap_or(row));
    }
    // Drift: lock the row, then look again, so a change in flight is not mistaken for drift.
    let mut tx = state.db.begin().await?;
    let sql = concat!("SELECT ", topic_columns!(), " FROM topics WHERE id = $1 FOR UPDATE");
    let locked: Option<TopicRow> = sqlx::query_as(sql).bind(row.id).fetch_optional(&mut *tx).await?;
    let row = locked.ok_or_else(|| ApiError::not_found("topic", &row.name))?;
    let observed = kubernetes::get_topic(&state.kube, namespace, &row.name).await?;
    let Some(drift) = drift_of(&row, observed.as_ref()) else {
        let topic = observed.ok_or_else(|| ApiError::Internal("KafkaTopic vanished while checked".into()))?;
        let fresh = reflect(&mut *tx, &row, &topic, None).await?;
        tx.commit().await?;
        return Ok(fresh.unwrap_or(row));
    };
    if let Some(topic) = observed.as_ref().filter(|t| t.metadata.deletion_timestamp.is_some()) {
        // Cannot re-apply until the finalizer lets go; report and let the next read or resync re-create it.
        let fresh = reflect(&mut *tx, &row, topic, Some(&drift)).await?;
        tx.commit().await?;
        return Ok(fresh.unwrap_or(row));
    }
    tracing::warn!(tenant, topic = %row.name, %drift, "repairing KafkaTopic drift");
    kubernetes::apply_namespace(&state.kube, tenant).await?;
    let applied = kubernetes::repair_topic(&state.kube, tenant, namespace, &row.desired()).await?;
    let change = Change {
        tenant_id: Some(row.tenant_id),
        actor: SYSTEM_ACTOR,
        action: "topic.drift-repaired",
        resource_type: "topic",
        resource_name: &row.name,
        details: json!({ "drift": drift }),
    };
    audit::record(&mut *tx, change).await?;
    let fresh = reflect(&mut *tx, &row, &applied, Some(&drift)).await?;
    tx.commit().await?;
    Ok(fresh.unwrap_or(row))
}

/// Reconciles every topic (and, through `jobs::sync`, every job) of every tenant, forever,
/// every `period`. Errors are logged and
/// retried at the next pass. Also reports KafkaTopics in tenant namespaces that the catalog
/// does not know (created by hand), which it leaves alone, and drops idempotency records
/// older than a day.
pub async fn resync_loop(state: AppState, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = resync_once(&state).await {
            tracing::warn!(error = %err, "topic resync pass failed; retrying at the next one");
        }
        if let Err(err) = crate::jobs::sync::resync_once(&state).await {
            tracing::warn!(error = %err, "job resync pass failed; retrying at the next one");
        }
        if let Err(err) =
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '1 day'")
                .execute(&state.db)
                .await
        {
            tracing::warn!(error = %err, "pruning idempotency keys failed");
        }
    }
}

/// One pass of [`resync_loop`].
pub async fn resync_once(state: &AppState) -> Result<(), ApiError> {
    let tenants: Vec<(Uuid, String, String)> =
        sqlx::query_as("SELECT id, name, namespace FROM tenants ORDER BY created_at")
            .fetch_all(&state.db)
            .await?;
    for (tenant_id, tenant, namespace) in tenants {
        let sql = concat!("SELECT ", topic_columns!(), " FROM topics WHERE tenant_id = $1");
        let rows: Vec<TopicRow> = sqlx::query_as(sql).bind(tenant_id).fetch_all(&state.db).await?;
        let mut observed = match kubernetes::list_topics(&state.kube, &namespace).await {
            Ok(observed) => observed,
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "listing KafkaTopics failed");
                continue;
            }
        };
        for row in rows {
            let name = row.name.clone();
            let topic = observed.remove(&name);
            match reconcile(state, &tenant, &namespace, row, topic).await {
                // Deleted since this pass read it: nothing to do.
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(err) => tracing::warn!(%tenant, topic = %name, error = %err, "reconciling topic failed"),
            }
        }
        for unknown in observed.values() {
            tracing::warn!(%tenant, kafka_topic = %unknown.name_any(), "KafkaTopic in a tenant namespace is not in the catalog; leaving it alone");
        }
    }
    Ok(())
}

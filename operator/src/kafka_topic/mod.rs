//! The KafkaTopic controller: keeps a topic in Kafka as its `KafkaTopic` resource says.
//!
//! Each reconcile goes read → validate → plan → apply → status:
//! - validate ([`millrace_crds::v1alpha1::validation`]) and check the binding and ownership
//!   ([`plan::check_binding`], [`plan::owner`]), all pure;
//! - read the connection ([`connection`]) and the topic as Kafka reports it;
//! - plan every change or refuse them all ([`plan::plan`], pure);
//! - apply the plan ([`apply`]), then write the status and Events ([`status`]).
//!
//! Deletion goes through a finalizer ([`cleanup`]). This module wires the phases to the
//! kube-runtime `Controller`; it must not grow Kafka or status logic of its own.

pub mod apply;
pub mod connection;
pub mod error;
pub mod plan;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use millrace_crds::v1alpha1::{ConditionStatus, DeletionPolicy, KafkaTopic, validation};
use tracing::{Instrument, info, info_span, warn};

use self::apply::{Applied, Synced};
use self::connection::{AdminClients, Target};
pub use self::error::Error;
use self::error::{Retry, backoff};
use self::plan::Claim;
use crate::kafka_admin::{Deleted, KafkaAdmin, KafkaAdminError, ObservedTopic};
use crate::metrics::Metrics;

/// The controller's name in metrics and logs.
pub const CONTROLLER: &str = "kafkatopic";
/// Held on every KafkaTopic until its topic is deleted (or deliberately left) in Kafka.
pub const FINALIZER: &str = "kafkatopics.millrace.io/cleanup";

/// How the controller behaves; from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Kafka cluster of resources without `spec.connection`.
    pub default_bootstrap: String,
    /// How often an in-sync topic is compared with Kafka again (this reverts drift).
    pub resync: Duration,
    /// How long to wait before looking again at a resource whose spec must change.
    pub wait_for_change: Duration,
    /// Cap of the exponential backoff after transient failures.
    pub max_backoff: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Reported in Events (`reportingInstance`), e.g. the Pod name.
    pub instance: Option<String>,
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
    admins: AdminClients,
    store: Store<DeserializeGuard<KafkaTopic>>,
    /// Consecutive transient failures per object, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The last connection that worked, per object: lets cleanup reach Kafka after the
    /// connection Secret is gone, as happens when a whole namespace is deleted.
    last_targets: Mutex<HashMap<String, Target>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api = Api::<DeserializeGuard<KafkaTopic>>::all(client.clone());
    let (store, writer) = reflector::store();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(what_a_reconcile_acts_on, PredicateConfig::default());
    let controller = Controller::for_stream(changes, store);
    let reporter = Reporter { controller: "millrace-operator".into(), instance: settings.instance.clone() };
    let concurrency = settings.concurrency;
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        settings,
        admins: AdminClients::default(),
        store: controller.store(),
        failures: Mutex::default(),
        last_targets: Mutex::default(),
    });
    info!("KafkaTopic controller started");
    controller
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "reconcile did not complete");
            }
        })
        .await;
    info!("KafkaTopic controller stopped");
}

/// What of a KafkaTopic a reconcile acts on: its spec (the generation, which deletion bumps
/// too), finalizers and annotations (the skip-cleanup one). A change to anything else, the
/// status this controller writes above all, is not a reason to reconcile: without this
/// filter every status write came back as a reconcile (9 a topic when 1,000 were created at
/// once). The periodic resync still looks at every topic (drift made in Kafka, a rival claim
/// that went away).
fn what_a_reconcile_acts_on(guard: &DeserializeGuard<KafkaTopic>) -> Option<u64> {
    predicates::generation
        .combine(predicates::finalizers)
        .combine(predicates::annotations)
        .hash_property(guard)
}

fn topic_key(topic: &KafkaTopic) -> String {
    format!("{}/{}", topic.namespace().unwrap_or_default(), topic.name_any())
}

fn object_key(guard: &DeserializeGuard<KafkaTopic>) -> String {
    format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any())
}

async fn reconcile(guard: Arc<DeserializeGuard<KafkaTopic>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(&guard);
    let started = Instant::now();
    let result = async {
        match &guard.0 {
            Ok(topic) => reconcile_topic(Arc::new(topic.clone()), &ctx).await,
            Err(invalid) => report_malformed(invalid, &ctx).await,
        }
    }
    .instrument(info_span!("reconcile", controller = CONTROLLER, object = %key))
    .await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed(), result.as_ref().err().map(Error::reason));
    if result.is_ok() {
        ctx.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
    }
    result
}

fn error_policy(guard: Arc<DeserializeGuard<KafkaTopic>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&guard);
    let settings = &ctx.settings;
    let (action, after) = match error.retry() {
        Retry::AfterChange => (Action::requeue(settings.wait_for_change), settings.wait_for_change),
        Retry::AtResync => (Action::requeue(settings.resync), settings.resync),
        Retry::WithBackoff => {
            let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let attempt = failures.entry(key.clone()).or_insert(0);
            *attempt += 1;
            let after = backoff(*attempt, settings.max_backoff);
            (Action::requeue(after), after)
        }
    };
    warn!(object = %key, reason = error.reason(), retry_in = ?after, "{error}");
    action
}

async fn reconcile_topic(topic: Arc<KafkaTopic>, ctx: &Context) -> Result<Action, Error> {
    let namespace = topic.namespace().unwrap_or_default();
    let api: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            Finalized::Apply(topic) => apply_topic(&api, &topic, ctx).await,
            Finalized::Cleanup(topic) => cleanup(&api, &topic, ctx).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)))
}

/// Seconds-precision RFC 3339 time for conditions.
fn now() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second()).unwrap_or(now).to_string()
}

async fn apply_topic(api: &Api<KafkaTopic>, topic: &KafkaTopic, ctx: &Context) -> Result<Action, Error> {
    let outcome = sync(topic, ctx).await;
    let next = status::next_status(topic, outcome.as_ref(), &now());
    if let Ok(synced) = &outcome {
        for change in &synced.changes {
            let (reason, note) = change.event(&synced.topic);
            info!(reason, "{note}");
            publish(ctx, &topic.object_ref(&()), EventType::Normal, reason, note).await;
        }
    }
    if let Some(ready) = next.conditions.iter().find(|c| c.type_ == millrace_crds::v1alpha1::READY)
        && status::is_transition(topic.ready_condition(), ready)
    {
        let kind = if ready.status == ConditionStatus::True { EventType::Normal } else { EventType::Warning };
        publish(ctx, &topic.object_ref(&()), kind, &ready.reason, ready.message.clone()).await;
    }
    let written = if topic.status.as_ref() == Some(&next) {
        Ok(())
    } else {
        status::write(api, &topic.name_any(), &next).await
    };
    match outcome {
        Ok(synced) => {
            written?;
            // Look again soon after a change, to report what Kafka settled on.
            let settle = synced.replicas.is_none() || !synced.changes.is_empty();
            Ok(Action::requeue(if settle { Duration::from_secs(5) } else { ctx.settings.resync }))
        }
        Err(err) => {
            if let Err(write_err) = written {
                warn!(%write_err, "could not record the failure in the status");
            }
            Err(err)
        }
    }
}

/// validate → check binding and ownership → read → plan → apply.
async fn sync(topic: &KafkaTopic, ctx: &Context) -> Result<Synced, Error> {
    validation::validate(topic)?;
    let name = topic.kafka_topic_name().unwrap_or_default();
    plan::check_binding(topic, name).map_err(|refusal| Error::Refused(vec![refusal]))?;
    check_ownership(topic, ctx).await?;
    let target = connection::resolve(topic, &ctx.client, &ctx.settings.default_bootstrap).await?;
    let admin = ctx.admins.get(&target)?;
    ctx.last_targets.lock().unwrap_or_else(PoisonError::into_inner).insert(topic_key(topic), target);
    let observed = admin.describe_topic(name).await?;
    let plan = plan::plan(topic, observed.as_ref()).map_err(Error::Refused)?;
    if !plan.is_noop() {
        info!(?plan, "applying");
    }
    match apply::execute(&admin, topic, name, plan, observed.as_ref()).await? {
        Applied::Synced(synced) => Ok(synced),
        Applied::CreateRaced => {
            let observed = observe_after_create_race(&admin, name).await?;
            let plan = plan::plan(topic, Some(&observed)).map_err(Error::Refused)?;
            info!(?plan, "the topic already existed; applying against what is there");
            match apply::execute(&admin, topic, name, plan, Some(&observed)).await? {
                Applied::Synced(synced) => Ok(synced),
                // plan() never says create for an observed topic.
                Applied::CreateRaced => Err(create_race_unresolved(name)),
            }
        }
    }
}

/// How long a topic Kafka says exists may stay missing from its metadata.
const METADATA_CATCH_UP: Duration = Duration::from_secs(5);

/// The topic Kafka just said exists, once its metadata shows it (a broker answers metadata
/// from a cache the controller updates shortly after a create).
async fn observe_after_create_race(admin: &KafkaAdmin, name: &str) -> Result<ObservedTopic, Error> {
    let deadline = Instant::now() + METADATA_CATCH_UP;
    loop {
        if let Some(observed) = admin.describe_topic(name).await? {
            return Ok(observed);
        }
        if Instant::now() >= deadline {
            return Err(create_race_unresolved(name));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn create_race_unresolved(name: &str) -> Error {
    Error::Kafka(KafkaAdminError::Unavailable {
        op: "create",
        topic: name.to_owned(),
        detail: format!(
            "Kafka says the topic exists but its metadata did not show it within {}s; it will be adopted on retry",
            METADATA_CATCH_UP.as_secs()
        ),
    })
}

fn claim_of(topic: &KafkaTopic, default_bootstrap: &str) -> Claim {
    Claim {
        namespace: topic.namespace().unwrap_or_default(),
        name: topic.name_any(),
        created: topic.metadata.creation_timestamp.clone(),
        cluster: connection::cluster_of(topic, default_bootstrap),
        topic: topic.kafka_topic_name().unwrap_or_default().to_owned(),
    }
}

/// Refuses to act for a resource when an older one names the same topic on the same cluster.
async fn check_ownership(topic: &KafkaTopic, ctx: &Context) -> Result<(), Error> {
    // Until the first full list is in, the cache could miss the older claimant; the only
    // error is a writer dropped at shutdown, when the cache is as good as it will get.
    let _ = ctx.store.wait_until_ready().await;
    let default = &ctx.settings.default_bootstrap;
    let me = claim_of(topic, default);
    let claims: Vec<Claim> = ctx
        .store
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .map(|t| claim_of(t, default))
        .collect();
    plan::owner(&me, &claims)
        .map_err(|owner| Error::ResourceConflict { topic: me.topic.clone(), owner: owner.key() })
}

/// The finalizer's half: delete the topic in Kafka unless the resource says otherwise.
async fn cleanup(api: &Api<KafkaTopic>, topic: &KafkaTopic, ctx: &Context) -> Result<Action, Error> {
    let reference = topic.object_ref(&());
    let name = topic.kafka_topic_name().unwrap_or_default().to_owned();
    let bound = topic.status.as_ref().and_then(|s| s.topic_name.clone());
    let key = topic_key(topic);
    let release = |reason: &'static str, note: String| async move {
        ctx.last_targets.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        info!(reason, "{note}");
        publish(ctx, &reference, EventType::Normal, reason, note).await;
        Ok(Action::await_change())
    };
    if topic.skips_kafka_cleanup() {
        let note = format!(
            "{}=true: topic {name:?} was left in Kafka untouched",
            millrace_crds::v1alpha1::SKIP_KAFKA_CLEANUP_ANNOTATION
        );
        return release("CleanupSkipped", note).await;
    }
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        return release("TopicRetained", format!("deletionPolicy retain: topic {name:?} stays in Kafka"))
            .await;
    }
    let Some(bound) = bound else {
        return release("NothingToDelete", format!("the resource never created or adopted topic {name:?}"))
            .await;
    };
    if let Err(err) = check_ownership(topic, ctx).await {
        return release("TopicLeftToOwner", format!("not deleting topic {bound:?}: {err}")).await;
    }
    let deleted = async {
        let target = match connection::resolve(topic, &ctx.client, &ctx.settings.default_bootstrap).await {
            Ok(target) => target,
            Err(err @ Error::ConnectionSecret { .. }) => {
                let remembered = ctx
                    .last_targets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&topic_key(topic))
                    .cloned();
                let target = remembered.ok_or(err)?;
                info!("connection Secret gone: deleting the topic with the connection last used");
                target
            }
            Err(err) => return Err(err),
        };
        Ok::<_, Error>(ctx.admins.get(&target)?.delete_topic(&bound).await?)
    }
    .await;
    match deleted {
        Ok(Deleted::Deleted) => release("TopicDeleted", format!("deleted topic {bound:?} from Kafka")).await,
        Ok(Deleted::AlreadyGone) => {
            release("TopicDeleted", format!("topic {bound:?} was already gone from Kafka")).await
        }
        Err(err) => {
            let mut next = status::next_status(topic, Err(&err), &now());
            for condition in &mut next.conditions {
                condition.message = format!(
                    "cannot delete the topic: {}. To let the resource go and leave the topic in Kafka, \
                     annotate it with {}=\"true\"",
                    condition.message,
                    millrace_crds::v1alpha1::SKIP_KAFKA_CLEANUP_ANNOTATION
                );
            }
            if topic.status.as_ref() != Some(&next)
                && let Err(write_err) = status::write(api, &topic.name_any(), &next).await
            {
                warn!(%write_err, "could not record the cleanup failure in the status");
            }
            Err(err)
        }
    }
}

/// A KafkaTopic that does not deserialize: say so on the object, and never let it block a
/// namespace deletion (its finalizer goes, leaving any topic in Kafka, since its spec
/// cannot be trusted to name one).
async fn report_malformed(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let error = Error::MalformedObject(invalid.error.clone());
    let meta = &invalid.metadata;
    let (Some(name), Some(namespace)) = (meta.name.clone(), meta.namespace.clone()) else {
        return Err(error);
    };
    let api: Api<KafkaTopic> = Api::namespaced(ctx.client.clone(), &namespace);
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some() && finalizers.iter().any(|f| f == FINALIZER) {
        let remaining: Vec<&String> = finalizers.iter().filter(|f| *f != FINALIZER).collect();
        let patch = serde_json::json!({
            "metadata": { "finalizers": remaining, "resourceVersion": meta.resource_version }
        });
        api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await?;
        return Ok(Action::await_change());
    }
    let condition = status::ready_condition(
        None,
        ConditionStatus::False,
        error.reason(),
        error.to_string(),
        meta.generation,
        &now(),
    );
    let patch =
        serde_json::json!({ "status": { "observedGeneration": meta.generation, "conditions": [condition] } });
    if let Err(err) =
        api.patch_status(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await
    {
        warn!(%err, "could not record the malformed object in its status");
    }
    let reference = ObjectReference {
        api_version: Some(KafkaTopic::api_version(&()).into_owned()),
        kind: Some(KafkaTopic::kind(&()).into_owned()),
        name: Some(name),
        namespace: Some(namespace),
        uid: meta.uid.clone(),
        ..ObjectReference::default()
    };
    publish(ctx, &reference, EventType::Warning, error.reason(), error.to_string()).await;
    Err(error)
}

/// Publishes an Event; a failure to do so is logged, never fatal.
async fn publish(ctx: &Context, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        // The API server limits a note to 1 kB.
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, reference).await {
        Ok(()) => {}
        // A namespace being deleted takes no new Events; that is expected during cleanup.
        Err(err) if err.to_string().contains("is being terminated") => {
            tracing::debug!(%err, reason, "Event not published: namespace terminating");
        }
        Err(err) => warn!(%err, reason, "could not publish an Event"),
    }
}

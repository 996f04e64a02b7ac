//! `bench-reconcile`: the operator's reconcile latency under many objects (bench/reconcile.sh).
//! In a fresh namespace it applies `--topics` KafkaTopics, then `--jobs` StreamJobs, all at
//! once (`--concurrency` requests in flight), and times each from the start of its apply to the
//! moment a watch first shows it Ready=True. Jobs are created `suspended`: each is validated
//! and planned by the operator (the SQL through the engine's planner) and reaches Ready without
//! Pods, since a machine that runs the benchmark cannot run hundreds of job Pods. The operator's
//! own reconcile-duration histogram (its `/metrics`) is read before and after, so the time one
//! reconcile takes is reported beside the end-to-end latency. Deleting the namespace at the end
//! (every KafkaTopic's finalizer deleting its topic in Kafka) is timed too.
//!
//! The result is printed as `key=value` lines.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use millrace_crds::v1alpha1::{ConditionStatus, KafkaTopic, READY, StreamJob};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "bench-reconcile")]
struct Args {
    /// The namespace the objects are created in (created, and deleted at the end).
    #[arg(long, default_value = "bench-reconcile")]
    namespace: String,
    /// KafkaTopics to create (one partition each).
    #[arg(long, default_value_t = 1000)]
    topics: usize,
    /// StreamJobs to create (suspended).
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Apply requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up waiting for Ready (or for the namespace's deletion) after this long.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
    /// The operator's `/metrics` URL, for its reconcile-duration histogram.
    #[arg(long)]
    metrics_url: Option<String>,
}

const FIELD_MANAGER: &str = "bench-reconcile";

/// When each object was first seen Ready, by name.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn is_ready(conditions: &[millrace_crds::v1alpha1::Condition]) -> bool {
    conditions.iter().any(|c| c.type_ == READY && c.status == ConditionStatus::True)
}

/// Records the first Ready of every object of `api` in `seen`, until the task is aborted.
fn watch_ready<K>(api: Api<K>, seen: Seen, ready: fn(&K) -> bool) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).applied_objects().boxed();
        while let Some(event) = events.next().await {
            let Ok(object) = event else { continue };
            if ready(&object) {
                let now = Instant::now();
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(object.name_any())
                    .or_insert(now);
            }
        }
    })
}

fn topic_ready(topic: &KafkaTopic) -> bool {
    topic.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
}

fn job_ready(job: &StreamJob) -> bool {
    job.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
}

/// Applies every `(name, body)` through `api` with `concurrency` in flight; returns when each
/// apply started.
async fn apply_all<K>(
    api: &Api<K>,
    objects: Vec<(String, serde_json::Value)>,
    concurrency: usize,
) -> anyhow::Result<HashMap<String, Instant>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    stream::iter(objects)
        .map(|(name, body)| {
            let params = params.clone();
            async move {
                let started = Instant::now();
                api.patch(&name, &params, &Patch::Apply(&body))
                    .await
                    .with_context(|| format!("applying {name}"))?;
                Ok::<_, anyhow::Error>((name, started))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Waits until every name in `started` is in `seen`, or the deadline.
async fn wait_ready(started: &HashMap<String, Instant>, seen: &Seen, deadline: Instant) -> usize {
    loop {
        let ready = {
            let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            started.keys().filter(|name| seen.contains_key(*name)).count()
        };
        if ready == started.len() || Instant::now() >= deadline {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints the figures of one kind: latency from apply start to Ready, and the time until all were Ready.
fn report(kind: &str, started: &HashMap<String, Instant>, seen: &Seen, first_apply: Instant) -> bool {
    let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut latencies: Vec<f64> = started
        .iter()
        .filter_map(|(name, at)| seen.get(name).map(|ready| ready.duration_since(*at).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let last =
        started.keys().filter_map(|n| seen.get(n)).max().map(|t| t.duration_since(first_apply).as_secs_f64());
    println!("{kind}_created={}", started.len());
    println!("{kind}_ready={}", latencies.len());
    println!("{kind}_p50_ms={:.0}", percentile(&latencies, 50.0));
    println!("{kind}_p99_ms={:.0}", percentile(&latencies, 99.0));
    println!("{kind}_max_ms={:.0}", latencies.last().copied().unwrap_or(f64::NAN));
    println!("{kind}_all_ready_s={:.1}", last.unwrap_or(f64::NAN));
    latencies.len() == started.len()
}

/// `(controller, le) → cumulative count` of the operator's reconcile-duration histogram.
type Buckets = BTreeMap<(String, String), f64>;

async fn scrape(url: &str) -> anyhow::Result<Buckets> {
    let text = reqwest::get(url).await?.error_for_status()?.text().await?;
    let mut buckets = Buckets::new();
    for line in text.lines().filter(|l| l.starts_with("millrace_operator_reconcile_duration_seconds_bucket{"))
    {
        let label = |key: &str| {
            let start = line.find(&format!("{key}=\""))? + key.len() + 2;
            Some(line[start..].split('"').next()?.to_owned())
        };
        let (Some(controller), Some(le)) = (label("controller"), label("le")) else { continue };
        let Some(count) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        buckets.insert((controller, le), count);
    }
    Ok(buckets)
}

/// p50/p99 of the reconciles between two scrapes, as the upper bound of the bucket the rank
/// falls in (the histogram's resolution).
fn reconcile_percentiles(
    before: &Buckets,
    after: &Buckets,
    controller: &str,
) -> Option<(u64, String, String)> {
    let mut bounds: Vec<(f64, String, f64)> = after
        .iter()
        .filter(|((c, _), _)| c == controller)
        .map(|((c, le), count)| {
            let earlier = before.get(&(c.clone(), le.clone())).copied().unwrap_or(0.0);
            (le.parse::<f64>().unwrap_or(f64::INFINITY), le.clone(), count - earlier)
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = bounds.last()?.2;
    if total <= 0.0 {
        return None;
    }
    let at = |p: f64| {
        let rank = (p / 100.0 * total).ceil();
        bounds.iter().find(|(_, _, n)| *n >= rank).map(|(_, le, _)| le.clone()).unwrap_or_default()
    };
    Some((total as u64, at(50.0), at(99.0)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::try_default().await.context("a Kubernetes client from KUBECONFIG")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(&args.namespace).await?.is_some() {
        bail!("namespace {} exists: delete it first (a run needs a fresh one)", args.namespace);
    }
    let namespace =
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": args.namespace } });
    namespaces.patch(&args.namespace, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&namespace)).await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let before = match &args.metrics_url {
        Some(url) => Some(scrape(url).await.context("the operator's metrics")?),
        None => None,
    };

    let topics: Api<KafkaTopic> = Api::namespaced(client.clone(), &args.namespace);
    let jobs: Api<StreamJob> = Api::namespaced(client.clone(), &args.namespace);
    let topics_seen = Seen::default();
    let jobs_seen = Seen::default();
    let watches = [
        watch_ready(topics.clone(), topics_seen.clone(), topic_ready),
        watch_ready(jobs.clone(), jobs_seen.clone(), job_ready),
    ];
    // Kafka topic names are global: the namespace makes them unique per run.
    let topic_objects = (0..args.topics)
        .map(|i| {
            let name = format!("t-{i:04}");
            let body = json!({
                "apiVersion": "millrace.io/v1alpha1", "kind": "KafkaTopic",
                "metadata": { "name": name },
                "spec": { "topicName": format!("{}.{name}", args.namespace), "partitions": 1, "replicas": 1 },
            });
            (name, body)
        })
        .collect();
    let first_topic = Instant::now();
    let topics_started = apply_all(&topics, topic_objects, args.concurrency).await?;
    wait_ready(&topics_started, &topics_seen, deadline).await;

    let sql = |i: usize| {
        format!(
            "CREATE TABLE input (v BIGINT) WITH (connector = 'generator', rows_per_second = '10');\n\
             CREATE TABLE output (v BIGINT) WITH (connector = 'stdout');\n\
             INSERT INTO output SELECT v FROM input WHERE v >= {};\n",
            i % 100
        )
    };
    let job_objects = (0..args.jobs)
        .map(|i| {
            let name = format!("j-{i:04}");
            let body = json!({
                "apiVersion": "millrace.io/v1alpha1", "kind": "StreamJob",
                "metadata": { "name": name },
                "spec": { "sql": sql(i), "parallelism": 1, "state": "suspended" },
            });
            (name, body)
        })
        .collect();
    let first_job = Instant::now();
    let jobs_started = apply_all(&jobs, job_objects, args.concurrency).await?;
    wait_ready(&jobs_started, &jobs_seen, deadline).await;
    let after = match &args.metrics_url {
        Some(url) => Some(scrape(url).await.context("the operator's metrics")?),
        None => None,
    };
    for watch in watches {
        watch.abort();
    }

    let topics_complete = report("topics", &topics_started, &topics_seen, first_topic);
    let jobs_complete = report("jobs", &jobs_started, &jobs_seen, first_job);
    if let (Some(before), Some(after)) = (&before, &after) {
        for controller in ["kafkatopic", "streamjob"] {
            if let Some((count, p50, p99)) = reconcile_percentiles(before, after, controller) {
                println!("{controller}_reconciles={count}");
                println!("{controller}_reconcile_p50_le_s={p50}");
                println!("{controller}_reconcile_p99_le_s={p99}");
            }
        }
    }

    let deleting = Instant::now();
    namespaces.delete(&args.namespace, &DeleteParams::default()).await?;
    let cleanup_deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    while namespaces.get_opt(&args.namespace).await?.is_some() {
        if Instant::now() >= cleanup_deadline {
            bail!("namespace {} still terminating after {}s", args.namespace, args.timeout_seconds);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("cleanup_s={:.1}", deleting.elapsed().as_secs_f64());
    if !(topics_complete && jobs_complete) {
        bail!("not every object became Ready within {}s", args.timeout_seconds);
    }
    Ok(())
}

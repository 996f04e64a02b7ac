//! Runs a [`Dataflow`]: one tokio task per stage subtask, operators chained inside it,
//! bounded channels between stages (a full channel makes the sender wait, so a slow sink
//! backpressures the sources), watermarks merged as the minimum over inputs. With an
//! [`ExchangePlacement`] it runs only this process's subtasks, and edges to subtasks in other
//! processes go over the network exchange (see [`crate::exchange`]), whose credits carry the
//! backpressure across.
//!
//! The executor owns tasks and channels only; connectors feed it [`SourceEvent`]s and drain
//! record batches, so it knows nothing about Kafka or files.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, AsArray, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use millrace_types::{
    CheckpointId, KeyGroup, SinkMessage, SourceEvent, SourcePositions, StreamMessage, Watermark,
    subtask_for_key_group,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::alignment::{Aligned, BarrierAligner};
use crate::chain::{Chain, Placement};
use crate::checkpointing::{CheckpointIo, TaskAck, TaskEvent, operator_ids};
use crate::dataflow::{Dataflow, Exchange, SourceSpec, TimeAttribute};
use crate::error::{OperatorError, RuntimeError};
use crate::exchange::{self, ExchangePlacement, SendError, Target};
use crate::metrics::{OperatorLabels, RuntimeMetrics, StageLabels};
use crate::state::key_groups_of;
use crate::state_budget::StateBudget;
use crate::watermarks::{InputWatermarks, PartitionWatermarks};

/// How a dataflow runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub parallelism: usize,
    /// Key groups (Flink's maxParallelism).
    pub max_parallelism: u32,
    /// Capacity, in messages (batches), of every channel between stages.
    pub channel_capacity: usize,
    /// How often processing-time watermarks advance while no rows arrive.
    pub processing_time_tick: Duration,
    /// The job spread over processes: which subtasks run here, where the others do. `None`
    /// runs every subtask in this process.
    pub placement: Option<Arc<ExchangePlacement>>,
    /// The limit on the operator state this process holds, in bytes (`None`: unlimited);
    /// see [`crate::state_budget`].
    pub state_max_bytes: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            parallelism: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            channel_capacity: 16,
            processing_time_tick: Duration::from_millis(100),
            placement: None,
            state_max_bytes: None,
        }
    }
}

/// The connectors' ends: one source receiver per subtask of each stage reading a source (see
/// [`Dataflow::source_stages`]: the main source's first, then each branch's), one sink sender per
/// last-stage subtask (see [`Dataflow::sink_parallelism`]), and one late-output sender per
/// instance of the window stage that has a late side output (see
/// [`Dataflow::late_output_parallelism`]; empty without one). With a placement, only the
/// subtasks of this process, in subtask order (see [`exchange::local_subtasks`]).
pub struct DataflowIo {
    pub sources: Vec<mpsc::Receiver<SourceEvent>>,
    pub sinks: Vec<mpsc::Sender<SinkMessage>>,
    pub late: Vec<mpsc::Sender<SinkMessage>>,
    /// Set when the job takes checkpoints (sources then inject barriers) or restores.
    pub checkpoints: Option<CheckpointIo>,
}

type Envelope = (usize, StreamMessage);

/// Runs `dataflow` until every source has ended (bounded input) or a task fails.
pub async fn run_dataflow(
    dataflow: &Dataflow,
    io: DataflowIo,
    options: &RunOptions,
    metrics: &RuntimeMetrics,
) -> Result<(), RuntimeError> {
    let p = options.parallelism;
    if p == 0 || p > options.max_parallelism as usize {
        return Err(RuntimeError::InvalidDataflow(format!(
            "parallelism {p} must be between 1 and maxParallelism {}",
            options.max_parallelism
        )));
    }
    if dataflow.stages.is_empty() || dataflow.branches.iter().any(|b| b.stages.is_empty()) {
        return Err(RuntimeError::InvalidDataflow("a dataflow needs at least one stage".into()));
    }
    let placement = options.placement.as_deref();
    let local = |parallelism: usize| exchange::local_subtasks(placement, parallelism).len();
    let source_stages = dataflow.source_stages();
    let source_count = local(p) * source_stages.len();
    if io.sources.len() != source_count || io.sinks.len() != local(dataflow.sink_parallelism(p)) {
        return Err(RuntimeError::InvalidDataflow(format!(
            "expected {source_count} sources and {} sinks, got {} and {}",
            local(dataflow.sink_parallelism(p)),
            io.sources.len(),
            io.sinks.len()
        )));
    }

    if io.late.len() != local(dataflow.late_output_parallelism(p)) {
        return Err(RuntimeError::InvalidDataflow(format!(
            "expected {} late-output senders, got {}",
            local(dataflow.late_output_parallelism(p)),
            io.late.len()
        )));
    }

    // Channels into every stage that does not read a source: one receiver per subtask of
    // this process.
    let mut inputs: Vec<Vec<Option<mpsc::Receiver<Envelope>>>> = Vec::new();
    let mut input_senders: Vec<Vec<Option<mpsc::Sender<Envelope>>>> = Vec::new();
    for k in 0..dataflow.stage_count() {
        if source_stages.iter().any(|(s, _)| *s == k) {
            inputs.push(Vec::new());
            input_senders.push(Vec::new());
            continue;
        }
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..dataflow.stage_parallelism(k, p))
            .map(|j| {
                if !exchange::is_local(placement, j) {
                    return (None, None);
                }
                let (tx, rx) = mpsc::channel(options.channel_capacity);
                (Some(tx), Some(rx))
            })
            .unzip();
        inputs.push(rxs);
        input_senders.push(txs);
    }

    let mut tasks = JoinSet::new();
    // Remote senders into this process's subtasks (forward edges never leave a slot). A
    // channel is named by the upstream stage, the sender's index among all senders of the
    // receiving stage (inputs in order, see `input_senders_of`) and the receiver.
    if let Some(placement) = placement {
        for (k, stage_inputs) in input_senders.iter().enumerate() {
            let senders_per_input = input_senders_of(dataflow, k, p);
            for (input, upstream) in dataflow.upstreams(k).into_iter().enumerate() {
                if matches!(dataflow.downstream(upstream).map(|d| d.exchange), Some(Exchange::Forward)) {
                    continue;
                }
                let offset: usize = senders_per_input[..input].iter().sum();
                for (t, into) in stage_inputs.iter().enumerate() {
                    let Some(into) = into else { continue };
                    for j in 0..dataflow.stage_parallelism(upstream, p) {
                        if exchange::is_local(Some(placement), j) {
                            continue;
                        }
                        let inbound =
                            exchange::expect_remote(placement, upstream, offset + j, t, into.clone())?;
                        tasks.spawn(exchange::watch_inbound(inbound));
                    }
                }
            }
        }
    }

    let ids = operator_ids(dataflow).map_err(|source| RuntimeError::Operator {
        operator: "instantiate",
        subtask: 0,
        source,
    })?;
    let budget = Arc::new(StateBudget::new(options.state_max_bytes));
    metrics.state_max_bytes.set(options.state_max_bytes.map_or(0, |b| b.min(i64::MAX as u64) as i64));
    let restore = io.checkpoints.as_ref().and_then(|c| c.restore.clone());
    let events = io.checkpoints.as_ref().map(|c| c.events.clone());
    let mut sinks = io.sinks.into_iter();
    let mut sources = io.sources.into_iter();
    let mut late_senders = io.late.into_iter();
    for k in 0..dataflow.stage_count() {
        let parallelism = dataflow.stage_parallelism(k, p);
        for j in exchange::local_subtasks(placement, parallelism) {
            let at =
                Placement { stage: k, subtask: j, parallelism, max_parallelism: options.max_parallelism };
            let chain = Chain::new(dataflow, at, &ids[k], restore.as_deref(), metrics, Arc::clone(&budget))?;
            let output = match dataflow.downstream(k) {
                None => {
                    let sink =
                        sinks.next().ok_or_else(|| RuntimeError::InvalidDataflow("missing sink".into()))?;
                    Output::Sink(sink)
                }
                Some(next) => {
                    // Senders of earlier inputs of the same stage come first.
                    let offset: usize = input_senders_of(dataflow, next.stage, p)[..next.input].iter().sum();
                    let me = offset + if matches!(next.exchange, Exchange::Forward) { 0 } else { j };
                    let into = &input_senders[next.stage];
                    let targets = match next.exchange {
                        Exchange::Forward => vec![Target::new(placement, into, k, me, j)?],
                        Exchange::Hash(_) | Exchange::Single => (0..into.len())
                            .map(|t| Target::new(placement, into, k, me, t))
                            .collect::<Result<_, _>>()?,
                    };
                    Output::Exchange {
                        exchange: next.exchange.clone(),
                        me,
                        targets,
                        max_parallelism: options.max_parallelism,
                    }
                }
            };
            let labels = RuntimeMetrics::labels(format!("s{k}"));
            let busy = metrics.busy_seconds.get_or_create(&StageLabels { stage: format!("s{k}") }).clone();
            let late = if dataflow.late_output.as_ref().is_some_and(|l| l.stage == k) {
                Some(
                    late_senders
                        .next()
                        .ok_or_else(|| RuntimeError::InvalidDataflow("missing late output".into()))?,
                )
            } else {
                None
            };
            let mut task = StageTask {
                chain,
                output,
                late,
                metrics: metrics.clone(),
                labels,
                busy,
                stage: k,
                events: events.clone(),
                final_positions: None,
            };
            if let Some((_, spec)) = source_stages.iter().find(|(s, _)| *s == k) {
                let source =
                    sources.next().ok_or_else(|| RuntimeError::InvalidDataflow("missing source".into()))?;
                let spec = (*spec).clone();
                let tick = options.processing_time_tick;
                tasks.spawn(async move { task.run_source(spec, source, tick).await });
            } else {
                // Input i's senders are numbered after those of inputs 0..i.
                let mut input_of_sender = Vec::new();
                for (input, senders) in input_senders_of(dataflow, k, p).into_iter().enumerate() {
                    input_of_sender.extend(std::iter::repeat_n(input, senders));
                }
                let rx = inputs[k][j]
                    .take()
                    .ok_or_else(|| RuntimeError::InvalidDataflow("input reused".into()))?;
                tasks.spawn(async move { task.run_exchange_input(rx, input_of_sender).await });
            }
        }
    }
    // Only the tasks hold senders now, so channels close when their upstream finishes.
    drop(input_senders);

    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tasks.abort_all();
                return Err(err);
            }
            Err(err) => {
                tasks.abort_all();
                return Err(RuntimeError::Task(err.to_string()));
            }
        }
    }
    Ok(())
}

/// How many senders each input of stage `k` has (in input order): one for a forward
/// exchange, else every subtask of the upstream stage.
fn input_senders_of(dataflow: &Dataflow, k: usize, p: usize) -> Vec<usize> {
    dataflow
        .upstreams(k)
        .into_iter()
        .map(|u| match dataflow.downstream(u).map(|d| d.exchange) {
            Some(Exchange::Forward) => 1,
            _ => dataflow.stage_parallelism(u, p),
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Where a stage subtask's output goes.
enum Output {
    Sink(mpsc::Sender<SinkMessage>),
    Exchange { exchange: Exchange, me: usize, targets: Vec<Target>, max_parallelism: u32 },
}

/// One running stage subtask.
struct StageTask {
    chain: Chain,
    output: Output,
    /// The late side output, on the window stage of a job that has one.
    late: Option<mpsc::Sender<SinkMessage>>,
    metrics: RuntimeMetrics,
    labels: OperatorLabels,
    /// This stage's `busy_seconds` counter.
    busy: prometheus_client::metrics::counter::Counter<f64, std::sync::atomic::AtomicU64>,
    stage: usize,
    /// Where checkpoint acknowledgements go (jobs that take checkpoints).
    events: Option<mpsc::UnboundedSender<TaskEvent>>,
    /// Where this task's bounded source ended (first stage only).
    final_positions: Option<SourcePositions>,
}

/// The downstream is gone (its task failed or the job is stopping); stop quietly, the
/// failing task reports the cause.
struct Disconnected;

impl StageTask {
    async fn run_source(
        &mut self,
        spec: SourceSpec,
        mut source: mpsc::Receiver<SourceEvent>,
        tick: Duration,
    ) -> Result<(), RuntimeError> {
        let mut partitions = match spec.time {
            TimeAttribute::EventTime { max_out_of_orderness_ms, idle_timeout_ms, .. } => {
                Some(PartitionWatermarks::new(
                    max_out_of_orderness_ms,
                    idle_timeout_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                ))
            }
            _ => None,
        };
        let idle_timeouts = matches!(spec.time, TimeAttribute::EventTime { idle_timeout_ms: Some(_), .. });
        let proctime = match spec.time {
            TimeAttribute::ProcessingTime { column } => Some(column),
            _ => None,
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let event = tokio::select! {
                event = source.recv() => event,
                _ = ticker.tick(), if proctime.is_some() || idle_timeouts => {
                    // Time passes without input: processing time moves on, and partitions
                    // may have become idle.
                    let watermark = match partitions.as_mut() {
                        Some(p) => p.advance(Instant::now()),
                        None => Some(Watermark(now_ms() - 1)),
                    };
                    if watermark.is_some() && self.step(Vec::new(), watermark, false).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            };
            let step = match event {
                Some(SourceEvent::Assigned(assigned)) => {
                    if assigned.is_empty() && proctime.is_none() {
                        // Nothing to read, ever (more instances than partitions): do not hold
                        // back the watermark downstream.
                        self.step(Vec::new(), Some(Watermark::MAX), false).await
                    } else {
                        if let Some(p) = partitions.as_mut() {
                            p.assign(&assigned, Instant::now());
                        }
                        Ok(())
                    }
                }
                Some(SourceEvent::Batch { partition, batch }) => {
                    let (batch, watermark) = match (proctime, partitions.as_mut(), spec.time) {
                        (Some(column), _, _) => {
                            let now = now_ms();
                            (stamp_processing_time(&spec, batch, column, now)?, Some(Watermark(now - 1)))
                        }
                        (None, Some(p), TimeAttribute::EventTime { column, .. }) => {
                            if let Some(max) = max_event_time(&batch, column)? {
                                p.observe(partition, max, Instant::now());
                            }
                            (batch, p.advance(Instant::now()))
                        }
                        _ => (batch, None),
                    };
                    self.step(vec![batch], watermark, false).await
                }
                Some(SourceEvent::Barrier { checkpoint, positions }) => {
                    self.checkpoint(checkpoint, Some(positions)).await
                }
                end @ (Some(SourceEvent::End { .. }) | None) => {
                    if let Some(SourceEvent::End { positions }) = end {
                        self.final_positions = Some(positions);
                    }
                    if self.step(Vec::new(), Some(Watermark::MAX), true).await.is_ok() {
                        return self.end().await;
                    }
                    return Ok(());
                }
            };
            match step {
                Ok(()) => {}
                Err(StepError::Disconnected) => return Ok(()),
                Err(StepError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Runs a stage fed by an exchange; `input_of_sender[s]` is the stage input sender `s`
    /// feeds (all 0 but for a join). Watermarks merge and barriers align over all senders.
    async fn run_exchange_input(
        &mut self,
        mut input: mpsc::Receiver<Envelope>,
        input_of_sender: Vec<usize>,
    ) -> Result<(), RuntimeError> {
        let senders = input_of_sender.len();
        let mut watermarks = InputWatermarks::new(senders);
        let mut aligner = BarrierAligner::new(senders);
        // Messages released by an alignment, processed before anything new.
        let mut released: VecDeque<Envelope> = VecDeque::new();
        let mut aligning_since: Option<Instant> = None;
        loop {
            let (sender, message) = match released.pop_front() {
                Some(envelope) => envelope,
                None => match input.recv().await {
                    Some(envelope) => envelope,
                    None => return Ok(()),
                },
            };
            if matches!(message, StreamMessage::Barrier(_)) && aligning_since.is_none() {
                aligning_since = Some(Instant::now());
            }
            let step = match aligner.accept(sender, message) {
                Aligned::Held => Ok(()),
                Aligned::Snapshot(checkpoint) => {
                    if let Some(since) = aligning_since.take() {
                        let stage = StageLabels { stage: format!("s{}", self.stage) };
                        self.metrics
                            .last_alignment_ms
                            .get_or_create(&stage)
                            .set(since.elapsed().as_millis() as i64);
                    }
                    let step = self.checkpoint(checkpoint, None).await;
                    for envelope in aligner.release().into_iter().rev() {
                        released.push_front(envelope);
                    }
                    step
                }
                Aligned::Process(sender, message) => match message {
                    StreamMessage::Batch(batch) => {
                        let from = input_of_sender.get(sender).copied().unwrap_or(0);
                        self.step_input(from, vec![batch], None, false).await
                    }
                    StreamMessage::Watermark(w) => match watermarks.update(sender, w) {
                        Some(merged) => self.step(Vec::new(), Some(merged), false).await,
                        None => Ok(()),
                    },
                    // The aligner turns barriers into snapshots.
                    StreamMessage::Barrier(_) => Ok(()),
                    StreamMessage::EndOfStream => {
                        if watermarks.end(sender) {
                            if self.step(Vec::new(), None, true).await.is_ok() {
                                return self.end().await;
                            }
                            return Ok(());
                        }
                        Ok(())
                    }
                },
            };
            match step {
                Ok(()) => {}
                Err(StepError::Disconnected) => return Ok(()),
                Err(StepError::Failed(err)) => return Err(err),
            }
        }
    }

    /// Barriers have aligned: snapshot the chain, acknowledge, and pass the barrier on (to
    /// the next stage, or to the sink and the late output for their pre-commit).
    async fn checkpoint(
        &mut self,
        checkpoint: CheckpointId,
        positions: Option<SourcePositions>,
    ) -> Result<(), StepError> {
        if let Some(events) = &self.events {
            let busy_since = Instant::now();
            let operators = self.chain.snapshot().map_err(StepError::Failed)?;
            let took = busy_since.elapsed();
            self.busy.inc_by(took.as_secs_f64());
            let stage = StageLabels { stage: format!("s{}", self.stage) };
            self.metrics.last_snapshot_ms.get_or_create(&stage).set(took.as_millis() as i64);
            let ack =
                TaskAck { checkpoint, stage: self.stage, subtask: self.chain.subtask, operators, positions };
            events.send(TaskEvent::Ack(ack)).map_err(|_| StepError::Disconnected)?;
        }
        if let Some(late) = &self.late {
            late.send(SinkMessage::Barrier(checkpoint)).await.map_err(|_| StepError::Disconnected)?;
        }
        match &mut self.output {
            Output::Sink(sink) => {
                sink.send(SinkMessage::Barrier(checkpoint)).await.map_err(|_| StepError::Disconnected)?;
            }
            Output::Exchange { me, targets, .. } => {
                for target in targets {
                    target.send((*me, StreamMessage::Barrier(checkpoint))).await?;
                }
            }
        }
        Ok(())
    }

    /// Runs input through the chain and sends the result (then the watermark) downstream.
    async fn step(
        &mut self,
        input: Vec<RecordBatch>,
        watermark: Option<Watermark>,
        close: bool,
    ) -> Result<(), StepError> {
        self.step_input(0, input, watermark, close).await
    }

    /// [`StageTask::step`] for rows of stage input `from`.
    async fn step_input(
        &mut self,
        from: usize,
        input: Vec<RecordBatch>,
        watermark: Option<Watermark>,
        close: bool,
    ) -> Result<(), StepError> {
        let busy_since = Instant::now();
        let output = self.chain.run_input(from, input, watermark, close);
        self.busy.inc_by(busy_since.elapsed().as_secs_f64());
        let output = output.map_err(StepError::Failed)?;
        let side_output = std::mem::take(&mut self.chain.side_output);
        if let Some(late) = &self.late {
            for batch in side_output {
                late.send(SinkMessage::Batch(batch)).await.map_err(|_| StepError::Disconnected)?;
            }
        }
        if let Some(w) = watermark
            && w != Watermark::MAX
        {
            self.metrics.watermark_ms.get_or_create(&self.labels).set(w.0);
            self.metrics.watermark_lag_ms.get_or_create(&self.labels).set(now_ms().saturating_sub(w.0));
        }
        let started = Instant::now();
        let sent = self.send(output, watermark).await;
        let waited = started.elapsed().as_secs_f64();
        self.metrics.backpressured_seconds.get_or_create(&self.labels).inc_by(waited);
        sent
    }

    async fn send(
        &mut self,
        batches: Vec<RecordBatch>,
        watermark: Option<Watermark>,
    ) -> Result<(), StepError> {
        match &mut self.output {
            Output::Sink(sink) => {
                for batch in batches {
                    sink.send(SinkMessage::Batch(batch)).await.map_err(|_| StepError::Disconnected)?;
                }
            }
            Output::Exchange { exchange, me, targets, max_parallelism } => {
                for batch in batches {
                    route(exchange, *me, targets, *max_parallelism, batch).await?;
                }
                if let Some(w) = watermark {
                    for target in targets {
                        target.send((*me, StreamMessage::Watermark(w))).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The input ended: tell the coordinator, send EndOfStream downstream (a remote channel
    /// waits until its receiver has everything) and let the sinks finish.
    async fn end(&mut self) -> Result<(), RuntimeError> {
        if let Some(events) = &self.events {
            // A coordinator gone away has nothing left to count.
            let _ = events.send(TaskEvent::Finished {
                stage: self.stage,
                subtask: self.chain.subtask,
                positions: self.final_positions.take(),
            });
        }
        // Dropping the sink senders tells the sinks to flush and finish.
        self.late = None;
        let output = std::mem::replace(
            &mut self.output,
            Output::Exchange { exchange: Exchange::Forward, me: 0, targets: Vec::new(), max_parallelism: 1 },
        );
        if let Output::Exchange { me, targets, .. } = output {
            for mut target in targets {
                // A closed local target has already stopped; nothing to tell it.
                let sent = match target.send((me, StreamMessage::EndOfStream)).await {
                    Ok(()) => target.close().await,
                    Err(err) => Err(err),
                };
                if let Err(SendError::Failed(err)) = sent {
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

enum StepError {
    Disconnected,
    Failed(RuntimeError),
}

impl From<Disconnected> for StepError {
    fn from(_: Disconnected) -> Self {
        StepError::Disconnected
    }
}

impl From<SendError> for StepError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::Disconnected => StepError::Disconnected,
            SendError::Failed(err) => StepError::Failed(err),
        }
    }
}

impl From<RuntimeError> for StepError {
    fn from(err: RuntimeError) -> Self {
        StepError::Failed(err)
    }
}

fn exchange_error(source: OperatorError) -> StepError {
    StepError::Failed(RuntimeError::Operator { operator: "exchange", subtask: 0, source })
}

async fn route(
    exchange: &Exchange,
    me: usize,
    targets: &mut [Target],
    max_parallelism: u32,
    batch: RecordBatch,
) -> Result<(), StepError> {
    let keys = match exchange {
        Exchange::Hash(keys) if targets.len() > 1 => keys,
        _ => {
            let target = targets.first_mut().ok_or(Disconnected)?;
            return Ok(target.send((me, StreamMessage::Batch(batch))).await?);
        }
    };
    let rows = batch.num_rows();
    let columns = keys
        .iter()
        .map(|k| k.evaluate(&batch).and_then(|v| v.into_array(rows)))
        .collect::<Result<Vec<ArrayRef>, _>>()
        .map_err(|e| exchange_error(e.into()))?;
    let key_groups = key_groups_of(&columns, rows, max_parallelism).map_err(exchange_error)?;
    let mut per_target: Vec<Vec<u32>> = vec![Vec::new(); targets.len()];
    for (row, key_group) in key_groups.iter().enumerate() {
        let subtask = subtask_for_key_group(KeyGroup(*key_group), targets.len(), max_parallelism)
            .map_err(|e| exchange_error(OperatorError::Invalid(e.to_string())))?;
        per_target[subtask.0].push(row as u32);
    }
    for (target, indices) in targets.iter_mut().zip(per_target) {
        if indices.is_empty() {
            continue;
        }
        let part =
            take_record_batch(&batch, &UInt32Array::from(indices)).map_err(|e| exchange_error(e.into()))?;
        target.send((me, StreamMessage::Batch(part))).await?;
    }
    Ok(())
}

/// Appends the processing-time column (the table's last) to a batch from the connector.
fn stamp_processing_time(
    spec: &SourceSpec,
    batch: RecordBatch,
    column: usize,
    now: i64,
) -> Result<RecordBatch, RuntimeError> {
    let invalid = |source: OperatorError| RuntimeError::Operator { operator: "source", subtask: 0, source };
    let field = spec.schema.field(column);
    let stamp: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![now; batch.num_rows()]));
    let stamp = if field.data_type() == stamp.data_type() {
        stamp
    } else {
        cast(&stamp, field.data_type()).map_err(|e| invalid(e.into()))?
    };
    let mut columns = batch.columns().to_vec();
    columns.push(stamp);
    RecordBatch::try_new(Arc::clone(&spec.schema), columns).map_err(|e| invalid(e.into()))
}

/// The highest event time in a batch, if any row has one.
fn max_event_time(batch: &RecordBatch, column: usize) -> Result<Option<i64>, RuntimeError> {
    let invalid = |source: OperatorError| RuntimeError::Operator { operator: "source", subtask: 0, source };
    let array = batch.column(column);
    let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
    let array = if array.data_type() == &ms {
        Arc::clone(array)
    } else {
        cast(array, &ms).map_err(|e| invalid(e.into()))?
    };
    Ok(arrow::compute::max(array.as_primitive::<TimestampMillisecondType>()))
}

//! The streaming dataflow plan the SQL planner produces and the executor runs: a source,
//! then stages of chained operators joined by exchanges. One stage instance runs per
//! parallel subtask; a stage's operators run chained in one task (no channel between them).
//!
//! A join reads more than one source: the main chain (`source`, `stages`) is its first
//! input, and each [`Branch`] (a further source with its own stages) feeds a later input of
//! the join's stage. Stages are numbered main chain first, then each branch's in order.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion_physical_expr::PhysicalExpr;

use crate::error::OperatorError;
use crate::operator::Operator;
use crate::operators::{
    CountWindowOperator, CountWindowSpec, FilterOperator, OverFrame, OverWindowOperator, OverWindowSpec,
    ProjectionOperator, SessionWindowOperator, SessionWindowSpec, TopNOperator, TopNSpec, UnnestOperator,
    UnnestSpec, UpdatingAggregateOperator, UpdatingAggregateSpec, UpsertFilterOperator,
    WindowAggregateOperator, WindowAggregateSpec,
};
use crate::operators::{JoinKind, JoinOperator, JoinSpec, TemporalJoinOperator};

/// Which column carries time, and how watermarks follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeAttribute {
    /// No time attribute: windows are not allowed; watermarks only at end of input.
    None,
    /// Event time from a column (any timestamp type), with bounded out-of-orderness. A
    /// partition silent for `idle_timeout_ms` stops holding the watermark back.
    EventTime { column: usize, max_out_of_orderness_ms: i64, idle_timeout_ms: Option<i64> },
    /// Processing time: the runtime stamps this column (the table's last) with the wall
    /// clock when a batch enters the dataflow; watermarks follow the clock.
    ProcessingTime { column: usize },
}

/// The source table as the runtime sees it.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub table: String,
    /// The table's full schema, processing-time column (if any) last.
    pub schema: SchemaRef,
    pub time: TimeAttribute,
}

/// How rows travel from one stage to the next.
#[derive(Clone)]
pub enum Exchange {
    /// Subtask i feeds subtask i (same parallelism, no reshuffle).
    Forward,
    /// Rows go to the subtask owning the key group of these key expressions.
    Hash(Vec<Arc<dyn PhysicalExpr>>),
    /// Every row goes to the single instance of the next stage (global windows).
    Single,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exchange::Forward => write!(f, "forward"),
            Exchange::Hash(keys) => write!(f, "hash({} keys)", keys.len()),
            Exchange::Single => write!(f, "single"),
        }
    }
}

/// One operator of a stage, as planned.
#[derive(Clone)]
pub enum OperatorSpec {
    Filter(Arc<dyn PhysicalExpr>),
    Projection {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    WindowAggregate(WindowAggregateSpec),
    SessionWindow(SessionWindowSpec),
    /// A non-windowed GROUP BY or DISTINCT (see [`UpdatingAggregateSpec`]).
    UpdatingAggregate(UpdatingAggregateSpec),
    /// A filter on an upsert stream: failing updates become deletes of their key. `schema`
    /// is the logical input (without the row-kind column), `key` the upsert key's columns.
    UpsertFilter {
        predicate: Arc<dyn PhysicalExpr>,
        key: Vec<usize>,
        schema: SchemaRef,
        /// The type the hash exchange in front of the updating aggregate hashed each key
        /// column as (its group expression's type), for the key groups of checkpointed keys.
        exchange_key_types: Vec<arrow::datatypes::DataType>,
    },
    CountWindow(CountWindowSpec),
    OverWindow(OverWindowSpec),
    /// `ROW_NUMBER() … WHERE rn <= N` over an append-only input (see [`TopNSpec`]).
    TopN(TopNSpec),
    Unnest(UnnestSpec),
    /// A two-input join (interval, window or regular); always the first operator of its
    /// stage, which has a second input (a [`Branch`]).
    Join(JoinSpec),
}

impl OperatorSpec {
    /// A fresh operator instance for one subtask.
    pub fn instantiate(&self) -> Result<Box<dyn Operator>, OperatorError> {
        Ok(match self {
            OperatorSpec::Filter(predicate) => Box::new(FilterOperator::new(Arc::clone(predicate))),
            OperatorSpec::Projection { exprs, schema } => {
                Box::new(ProjectionOperator::new(exprs.clone(), Arc::clone(schema)))
            }
            OperatorSpec::WindowAggregate(spec) => Box::new(WindowAggregateOperator::try_new(spec.clone())?),
            OperatorSpec::SessionWindow(spec) => Box::new(SessionWindowOperator::try_new(spec.clone())?),
            OperatorSpec::UpdatingAggregate(spec) => {
                Box::new(UpdatingAggregateOperator::try_new(spec.clone())?)
            }
            OperatorSpec::UpsertFilter { predicate, key, schema, exchange_key_types } => {
                Box::new(UpsertFilterOperator::try_new(
                    Arc::clone(predicate),
                    key.clone(),
                    schema,
                    exchange_key_types.clone(),
                )?)
            }
            OperatorSpec::CountWindow(spec) => Box::new(CountWindowOperator::try_new(spec.clone())?),
            OperatorSpec::OverWindow(spec) => Box::new(OverWindowOperator::try_new(spec.clone())?),
            OperatorSpec::TopN(spec) => Box::new(TopNOperator::try_new(spec.clone())?),
            OperatorSpec::Unnest(spec) => Box::new(UnnestOperator::new(spec.clone())),
            OperatorSpec::Join(spec) => match spec.kind {
                JoinKind::Temporal { .. } => Box::new(TemporalJoinOperator::try_new(spec.clone())?),
                _ => Box::new(JoinOperator::try_new(spec.clone())?),
            },
        })
    }

    /// What identifies this operator's state: its description plus its key expressions
    /// (hashed into the operator's stable id, see [`crate::checkpointing::operator_ids`]).
    pub fn fingerprint(&self) -> String {
        let keys = match self {
            OperatorSpec::WindowAggregate(spec) => &spec.keys,
            OperatorSpec::SessionWindow(spec) => &spec.keys,
            OperatorSpec::UpdatingAggregate(spec) => &spec.keys,
            OperatorSpec::CountWindow(spec) => &spec.keys,
            OperatorSpec::OverWindow(spec) => &spec.partition_by,
            OperatorSpec::TopN(spec) => &spec.partition_by,
            OperatorSpec::Join(spec) => &spec.left_keys,
            _ => return self.describe(),
        };
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        format!("{} keys=[{}]", self.describe(), keys.join(", "))
    }

    /// A one-line description for `explain` output and logs.
    pub fn describe(&self) -> String {
        match self {
            OperatorSpec::Filter(p) => format!("filter {p}"),
            OperatorSpec::Projection { exprs, .. } => {
                format!("projection [{}]", exprs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))
            }
            OperatorSpec::WindowAggregate(spec) => format!(
                "window_aggregate {:?} keys={} aggregates=[{}] allowed_lateness={}ms",
                spec.assigner,
                spec.keys.len(),
                spec.aggregates.iter().map(|a| a.name().to_string()).collect::<Vec<_>>().join(", "),
                spec.allowed_lateness_ms
            ),
            OperatorSpec::SessionWindow(spec) => format!(
                "session_window gap={}ms keys={} aggregates=[{}] allowed_lateness={}ms",
                spec.gap_ms,
                spec.keys.len(),
                spec.aggregates.iter().map(|a| a.name().to_string()).collect::<Vec<_>>().join(", "),
                spec.allowed_lateness_ms
            ),
            OperatorSpec::CountWindow(spec) => format!(
                "count_window size={} slide={} keys={} aggregates=[{}]",
                spec.size,
                spec.slide,
                spec.keys.len(),
                spec.aggregates.iter().map(|a| a.name().to_string()).collect::<Vec<_>>().join(", ")
            ),
            OperatorSpec::OverWindow(spec) => format!(
                "over_window order_by={} time={:?} partition_by={} functions=[{}]",
                spec.order_by,
                spec.time,
                spec.partition_by.len(),
                spec.functions
                    .iter()
                    .map(|f| match f.frame {
                        OverFrame::Rows { preceding } =>
                            format!("{} rows preceding={preceding:?}", f.aggregate.name()),
                        OverFrame::Range { preceding_ms } => {
                            format!("{} range preceding_ms={preceding_ms:?}", f.aggregate.name())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OperatorSpec::UpdatingAggregate(spec) => format!(
                "{} keys={} aggregates=[{}]",
                if spec.is_insert_only() { "distinct" } else { "updating_aggregate" },
                spec.keys.len(),
                spec.aggregates.iter().map(|a| a.name().to_string()).collect::<Vec<_>>().join(", ")
            ),
            OperatorSpec::UpsertFilter { predicate, key, .. } => {
                format!("upsert_filter {predicate} key={key:?}")
            }
            OperatorSpec::Unnest(spec) => format!("unnest list_columns={:?}", spec.list_columns),
            OperatorSpec::TopN(spec) => format!(
                "top_n limit={} partition_by={} order_by=[{}] ties_to_latest={}",
                spec.limit,
                spec.partition_by.len(),
                spec.order_by
                    .iter()
                    .map(|(e, o)| format!("{e} {}", if o.descending { "DESC" } else { "ASC" }))
                    .collect::<Vec<_>>()
                    .join(", "),
                spec.ties_to_latest
            ),
            OperatorSpec::Join(spec) => spec.describe(),
        }
    }
}

/// Operators chained in one task, fed by `input`.
#[derive(Clone, Debug)]
pub struct Stage {
    /// How rows reach this stage from the previous one (ignored for the first stage, which
    /// reads the source).
    pub input: Exchange,
    pub operators: Vec<OperatorSpec>,
}

impl std::fmt::Debug for OperatorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A whole job's dataflow.
#[derive(Clone, Debug)]
pub struct Dataflow {
    pub source: SourceSpec,
    pub stages: Vec<Stage>,
    /// The schema of the rows the last stage emits (the sink table's schema).
    pub output_schema: SchemaRef,
    /// Where late rows go, if the job has a late side output.
    pub late_output: Option<LateOutput>,
    /// Set when the job's output is an upsert stream rather than append-only.
    pub changelog: Option<Changelog>,
    /// The further inputs of joins (empty for a job reading one source).
    pub branches: Vec<Branch>,
}

/// A further input of a join: a source and the stages that read it, whose last stage feeds
/// stage `into` of the main chain (input 1 for the first branch into that stage, 2 for the
/// next, …; input 0 is the main chain's previous stage).
#[derive(Clone, Debug)]
pub struct Branch {
    pub source: SourceSpec,
    /// At least one; the first reads `source`.
    pub stages: Vec<Stage>,
    /// The main-chain stage this branch feeds.
    pub into: usize,
    /// How rows travel from the branch's last stage into `into`.
    pub exchange: Exchange,
}

/// Where a stage's output goes: a later stage's input, or the sink.
#[derive(Clone, Debug)]
pub struct Downstream<'a> {
    pub stage: usize,
    pub exchange: &'a Exchange,
    /// Which input of `stage` (0 unless `stage` is a join fed by a branch).
    pub input: usize,
}

/// The output of a job whose query updates earlier results (an updating aggregate): an
/// upsert stream keyed by `key`. Every batch reaching the sink then carries one extra, last
/// column, [`millrace_types::changelog::ROW_KIND_COLUMN`], after the `output_schema` columns:
/// `+I`/`+U` upsert the row of its key, `-D` deletes the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changelog {
    /// The upsert key: column indices in `output_schema` (empty for a global aggregate,
    /// whose single row is its own key).
    pub key: Vec<usize>,
}

/// The late side output: the rows a window stage found too late, as that stage received them.
#[derive(Clone, Debug)]
pub struct LateOutput {
    /// The window stage whose late rows are collected.
    pub stage: usize,
    /// The rows' schema (the window stage's input).
    pub schema: SchemaRef,
}

impl Dataflow {
    /// The parallelism of stage `index` when the job runs with `parallelism`.
    pub fn stage_parallelism(&self, index: usize, parallelism: usize) -> usize {
        let reads_source = self.source_stages().iter().any(|(k, _)| *k == index);
        match self.stage(index).map(|s| &s.input) {
            Some(Exchange::Single) if !reads_source => 1,
            _ => parallelism,
        }
    }

    /// Every stage, main chain and branches.
    pub fn stage_count(&self) -> usize {
        self.stages.len() + self.branches.iter().map(|b| b.stages.len()).sum::<usize>()
    }

    /// Stage `index` in the numbering of [`Dataflow::stage_count`].
    pub fn stage(&self, index: usize) -> Option<&Stage> {
        self.locate(index).and_then(|(branch, i)| match branch {
            None => self.stages.get(i),
            Some(b) => self.branches[b].stages.get(i),
        })
    }

    /// `(branch, position in it)` of stage `index`; branch `None` is the main chain.
    fn locate(&self, index: usize) -> Option<(Option<usize>, usize)> {
        if index < self.stages.len() {
            return Some((None, index));
        }
        let mut first = self.stages.len();
        for (b, branch) in self.branches.iter().enumerate() {
            if index < first + branch.stages.len() {
                return Some((Some(b), index - first));
            }
            first += branch.stages.len();
        }
        None
    }

    /// The stages that read a source, with it: stage 0 reads `source`, each branch's first
    /// stage its own. The executor takes one source receiver per subtask of each, in this order.
    pub fn source_stages(&self) -> Vec<(usize, &SourceSpec)> {
        let mut out = vec![(0, &self.source)];
        let mut first = self.stages.len();
        for branch in &self.branches {
            out.push((first, &branch.source));
            first += branch.stages.len();
        }
        out
    }

    /// Where stage `index`'s rows go; `None` for the main chain's last stage (the sink).
    pub fn downstream(&self, index: usize) -> Option<Downstream<'_>> {
        let (branch, i) = self.locate(index)?;
        match branch {
            None => self.stages.get(i + 1).map(|s| Downstream { stage: i + 1, exchange: &s.input, input: 0 }),
            Some(b) => {
                let branch_stages = &self.branches[b].stages;
                match branch_stages.get(i + 1) {
                    Some(next) => Some(Downstream { stage: index + 1, exchange: &next.input, input: 0 }),
                    None => {
                        let into = self.branches[b].into;
                        let input = 1 + self.branches[..b].iter().filter(|o| o.into == into).count();
                        Some(Downstream { stage: into, exchange: &self.branches[b].exchange, input })
                    }
                }
            }
        }
    }

    /// The stages feeding stage `index`, in input order (empty for a stage reading a source).
    pub fn upstreams(&self, index: usize) -> Vec<usize> {
        let mut feeding: Vec<(usize, usize)> = (0..self.stage_count())
            .filter_map(|k| self.downstream(k).filter(|d| d.stage == index).map(|d| (d.input, k)))
            .collect();
        feeding.sort();
        feeding.into_iter().map(|(_, k)| k).collect()
    }

    /// The parallelism of the sink (that of the last stage).
    pub fn sink_parallelism(&self, parallelism: usize) -> usize {
        self.stage_parallelism(self.stages.len().saturating_sub(1), parallelism)
    }

    /// The number of late-output senders the executor expects (one per instance of the
    /// window stage), zero without a late output.
    pub fn late_output_parallelism(&self, parallelism: usize) -> usize {
        self.late_output.as_ref().map_or(0, |late| self.stage_parallelism(late.stage, parallelism))
    }

    /// A human-readable plan, one stage per line.
    pub fn explain(&self) -> String {
        let mut out = format!("source {} time={:?}\n", self.source.table, self.source.time);
        if let Some(changelog) = &self.changelog {
            out.push_str(&format!("output: upsert stream keyed by columns {:?}\n", changelog.key));
        }
        for (b, branch) in self.branches.iter().enumerate() {
            out.push_str(&format!(
                "branch {b}: source {} time={:?} into stage {} input={:?}\n",
                branch.source.table, branch.source.time, branch.into, branch.exchange
            ));
        }
        for i in 0..self.stage_count() {
            let Some(stage) = self.stage(i) else { continue };
            let branch = match self.locate(i) {
                Some((Some(b), _)) => format!(" (branch {b})"),
                _ => String::new(),
            };
            out.push_str(&format!("stage {i}{branch} input={:?}\n", stage.input));
            for op in &stage.operators {
                out.push_str(&format!("  {}\n", op.describe()));
            }
            if self.late_output.as_ref().is_some_and(|late| late.stage == i) {
                out.push_str("  late rows -> late side output\n");
            }
        }
        out
    }
}

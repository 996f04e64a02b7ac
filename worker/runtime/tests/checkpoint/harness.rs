//! The harness every checkpoint test runs: an operator chain (one stage) fed a sequence of
//! batches and watermarks, snapshotted at one point and run on to the end (operator A); fresh
//! chains restored from that snapshot at parallelism n — each subtask given the keyed rows of
//! its key groups and only the continuation rows the hash exchange would send it — must
//! together emit what A emitted after the snapshot point, with every key's rows in A's order.
//! A reference run without a snapshot proves the snapshot left A's state as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_expr::PhysicalExpr;
use millrace_runtime::state::{key_groups_of, retain_key_groups};
use millrace_runtime::{KeyGroupRange, Operator, OperatorContext, StateScope, TableSnapshot};
use millrace_types::{SubtaskIndex, Watermark};

pub const MAX_PARALLELISM: u32 = 128;

/// One input event of a chain.
#[derive(Clone)]
pub enum Step {
    Batch(RecordBatch),
    Watermark(i64),
}

/// The context of subtask `subtask` of `parallelism`, at `watermark`.
pub fn context(subtask: usize, parallelism: usize, watermark: Watermark) -> OperatorContext {
    OperatorContext {
        subtask: SubtaskIndex(subtask),
        parallelism,
        max_parallelism: MAX_PARALLELISM,
        key_groups: KeyGroupRange::of_subtask(subtask, parallelism, MAX_PARALLELISM),
        watermark,
        late_records: Default::default(),
    }
}

/// The operators of one stage subtask, run as the executor chains them.
pub struct Chain {
    operators: Vec<(Box<dyn Operator>, OperatorContext)>,
}

impl Chain {
    pub fn new(
        operators: Vec<Box<dyn Operator>>,
        subtask: usize,
        parallelism: usize,
        watermark: Watermark,
    ) -> Self {
        Self {
            operators: operators.into_iter().map(|o| (o, context(subtask, parallelism, watermark))).collect(),
        }
    }

    /// Runs one step; returns what the chain emitted.
    pub fn step(&mut self, step: &Step) -> Vec<RecordBatch> {
        let (mut current, watermark) = match step {
            Step::Batch(b) => (vec![b.clone()], None),
            Step::Watermark(w) => (Vec::new(), Some(Watermark(*w))),
        };
        for (operator, ctx) in &mut self.operators {
            let mut next = Vec::new();
            for batch in current {
                operator.process_batch(batch, ctx, &mut next).expect("process_batch");
            }
            if let Some(w) = watermark {
                ctx.watermark = w;
                operator.handle_watermark(w, ctx, &mut next).expect("handle_watermark");
            }
            operator.take_side_output();
            current = next;
        }
        current
    }

    /// Every operator's tables.
    pub fn snapshot(&mut self) -> Vec<TableSnapshot> {
        let mut tables = Vec::new();
        for (operator, ctx) in &mut self.operators {
            let snapshot = operator.snapshot_state(ctx).expect("snapshot_state");
            let declared: Vec<&str> = operator.state_tables().iter().map(|t| t.name).collect();
            for table in &snapshot {
                assert!(declared.contains(&table.name.as_str()), "{} is not declared", table.name);
            }
            tables.extend(snapshot);
        }
        tables
    }

    /// Restores every operator from `tables` as the runtime would: each operator gets its own
    /// tables, keyed ones cut to this subtask's key groups. Two operators of one chain may declare tables of the same name (the runtime tells them
    /// apart by operator id): [`Self::snapshot`] lists them in chain order, so each operator
    /// takes the first of each name that no operator before it took.
    pub fn restore(&mut self, tables: &[TableSnapshot]) {
        let mut taken = vec![false; tables.len()];
        for (operator, ctx) in &mut self.operators {
            let mut mine = Vec::new();
            for declared in operator.state_tables() {
                let Some(at) = (0..tables.len()).find(|&t| !taken[t] && tables[t].name == declared.name)
                else {
                    continue;
                };
                taken[at] = true;
                let table = &tables[at];
                let batches = match declared.scope {
                    StateScope::KeyGroups => table
                        .batches
                        .iter()
                        .map(|b| retain_key_groups(b, ctx.key_groups).expect("retain"))
                        .collect(),
                    StateScope::Instance => table.batches.clone(),
                };
                mine.push(TableSnapshot { name: table.name.clone(), batches });
            }
            operator.restore_state(mine, ctx).expect("restore_state");
        }
    }
}

/// Every row of `batches`, each column formatted.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for i in 0..b.num_rows() {
            out.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    out
}

/// The rows of `batch` the hash exchange on `keys` sends to `subtask` of `parallelism`.
pub fn routed(
    batch: &RecordBatch,
    keys: &[Arc<dyn PhysicalExpr>],
    subtask: usize,
    parallelism: usize,
) -> RecordBatch {
    if keys.is_empty() {
        return batch.clone();
    }
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> =
        keys.iter().map(|k| k.evaluate(batch).and_then(|v| v.into_array(rows)).expect("key")).collect();
    let groups = key_groups_of(&columns, rows, MAX_PARALLELISM).expect("key groups");
    let range = KeyGroupRange::of_subtask(subtask, parallelism, MAX_PARALLELISM);
    let keep: BooleanArray = groups.iter().map(|g| Some(range.contains(*g))).collect();
    filter_record_batch(batch, &keep).expect("filter")
}

/// One checkpoint scenario; see the module docs.
pub struct Scenario<'a> {
    /// A fresh chain's operators.
    pub make: &'a dyn Fn() -> Vec<Box<dyn Operator>>,
    /// The hash exchange's key expressions in front of the chain (empty: a global chain).
    pub exchange_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The output columns that name a key, whose rows must keep their order.
    pub output_key: Vec<usize>,
    pub steps: Vec<Step>,
}

impl Scenario<'_> {
    /// Snapshots after `at` steps and checks the restored runs at every parallelism in
    /// `parallelisms`. Returns A's rows after the snapshot point and the snapshot.
    pub fn check(&self, at: usize, parallelisms: &[usize]) -> (Vec<Vec<String>>, Vec<TableSnapshot>) {
        let (before, after) = self.steps.split_at(at);
        let mut reference = Chain::new((self.make)(), 0, 1, Watermark::MIN);
        let mut a = Chain::new((self.make)(), 0, 1, Watermark::MIN);
        for step in before {
            reference.step(step);
            a.step(step);
        }
        let tables = a.snapshot();
        let a_rows: Vec<Vec<String>> = after.iter().flat_map(|s| rows(&a.step(s))).collect();
        let reference_rows: Vec<Vec<String>> = after.iter().flat_map(|s| rows(&reference.step(s))).collect();
        assert_eq!(
            per_key(&a_rows, &self.output_key),
            per_key(&reference_rows, &self.output_key),
            "a snapshot changed the operator's state"
        );

        for &n in parallelisms {
            assert!(n == 1 || !self.exchange_keys.is_empty(), "a global chain runs at parallelism 1");
            let mut restored_rows = Vec::new();
            for i in 0..n {
                // As the runtime does, the restored subtask starts at no watermark: the
                // operators restore the one they had.
                let mut b = Chain::new((self.make)(), i, n, Watermark::MIN);
                b.restore(&tables);
                for step in after {
                    let step = match step {
                        Step::Batch(batch) => Step::Batch(routed(batch, &self.exchange_keys, i, n)),
                        other => other.clone(),
                    };
                    // The exchange sends no empty batches.
                    if matches!(&step, Step::Batch(b) if b.num_rows() == 0) {
                        continue;
                    }
                    restored_rows.extend(rows(&b.step(&step)));
                }
            }
            assert_eq!(
                per_key(&restored_rows, &self.output_key),
                per_key(&a_rows, &self.output_key),
                "restored at parallelism {n}"
            );
        }
        (a_rows, tables)
    }
}

/// Rows grouped by their key columns, in order within each key.
fn per_key(rows: &[Vec<String>], key: &[usize]) -> BTreeMap<Vec<String>, Vec<Vec<String>>> {
    let mut out: BTreeMap<Vec<String>, Vec<Vec<String>>> = BTreeMap::new();
    for row in rows {
        out.entry(key.iter().map(|&k| row[k].clone()).collect()).or_default().push(row.clone());
    }
    out
}

/// The table named `name` with one batch whose column `drop` is removed (a malformed
/// snapshot), for tests of restore errors.
pub fn without_column(tables: &[TableSnapshot], name: &str, drop: usize) -> Vec<TableSnapshot> {
    tables
        .iter()
        .filter(|t| t.name == name)
        .map(|t| TableSnapshot {
            name: t.name.clone(),
            batches: t
                .batches
                .iter()
                .map(|b| {
                    let keep: Vec<usize> = (0..b.num_columns()).filter(|c| *c != drop).collect();
                    b.project(&keep).expect("project")
                })
                .collect(),
        })
        .collect()
}

/// Restoring `tables` into `operator` fails with an error that names `table`.
pub fn assert_restore_fails(mut operator: Box<dyn Operator>, tables: Vec<TableSnapshot>, table: &str) {
    let ctx = context(0, 1, Watermark::MIN);
    let err = operator.restore_state(tables, &ctx).expect_err("a malformed table must not restore");
    assert!(err.to_string().contains(table), "{err} does not name {table}");
}

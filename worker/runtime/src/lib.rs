//! The Millrace dataflow runtime: operators on Arrow `RecordBatch`es behind one
//! [`Operator`] trait, chained per stage, connected by bounded channels (backpressure),
//! with event-time and processing-time watermarks and window operators.
//!
//! This crate evaluates DataFusion physical expressions and accumulators but never parses or
//! plans SQL (that is `millrace-sql`), and never talks to Kafka (that is
//! `millrace-connectors`).

mod alignment;
mod chain;
pub mod checkpointing;
pub mod dataflow;
mod error;
pub mod exchange;
pub mod executor;
pub mod metrics;
pub mod network;
mod operator;
pub mod operators;
pub mod state;
pub mod state_budget;
pub mod watermarks;

pub use checkpointing::{CheckpointIo, OperatorSnapshot, RestoredState, TaskAck, TaskEvent, operator_ids};
pub use dataflow::{
    Branch, Changelog, Dataflow, Exchange, LateOutput, OperatorSpec, SourceSpec, Stage, TimeAttribute,
};
pub use error::{OperatorError, RuntimeError};
pub use exchange::{ExchangePlacement, local_subtasks};
pub use executor::{DataflowIo, RunOptions, run_dataflow};
pub use metrics::RuntimeMetrics;
pub use operator::{Operator, OperatorContext, StateScope, StateTable};
pub use state::{KeyGroupRange, TableSnapshot};
pub use state_budget::StateBudget;

//! The job spread over processes: the `coordinator` role (one per job: registration,
//! slot assignment, deployment, health, the checkpoint coordinator, restarts) and the
//! `worker` role (N processes × S slots running the subtasks). They talk over the RPC of
//! [`rpc`]; subtasks in different workers exchange rows over the runtime's network exchange.
//! `run` stays the single-process form of the same machinery.

mod acks;
mod attempt;
mod coordinator_role;
mod deployed;
mod pool;
mod resolve;
pub mod rpc;
mod worker_role;

pub use attempt::JobSpec;
pub use coordinator_role::{RestartPolicy, run_coordinator};
pub use worker_role::{WorkerSettings, default_data_addr, run_worker};

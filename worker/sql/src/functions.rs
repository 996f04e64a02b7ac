//! Millrace's window group functions, registered with DataFusion so that its planner resolves
//! and type-checks them like any function:
//!
//! - `tumble(time_attr, size)`: the start of the tumbling window containing the row;
//! - `hop(time_attr, slide, size)`: the start of each hopping window containing the row;
//! - `session(time_attr, gap)`: the start of the row's session (sessions merge as rows
//!   bridge gaps);
//! - `cumulate(time_attr, step, max_size)`: the start of the row's cumulating windows;
//! - `count_window(size[, slide])`: row-count windows of `size` rows starting every `slide`
//!   rows (default `size`: tumbling), per key in arrival order; its column is the window's
//!   sequence number per key (BIGINT, from 0);
//! - `window_end(time_attr)` (an aggregate, so it may appear in SELECT next to the group
//!   function): the end of the window a result row belongs to.
//!
//! They are markers: only `GROUP BY` of a streaming job gives them meaning (one row can lie in
//! several hopping windows, which no scalar function can express), so the dataflow
//! translation replaces them and evaluating one anywhere else is an error.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};

/// Which window a group function declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowFunctionKind {
    Tumble,
    Hop,
    Session,
    Cumulate,
    /// Row-count windows: `count_window(size[, slide])`.
    Count,
}

impl WindowFunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            WindowFunctionKind::Tumble => "tumble",
            WindowFunctionKind::Hop => "hop",
            WindowFunctionKind::Session => "session",
            WindowFunctionKind::Cumulate => "cumulate",
            WindowFunctionKind::Count => "count_window",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tumble" => Some(WindowFunctionKind::Tumble),
            "hop" => Some(WindowFunctionKind::Hop),
            "session" => Some(WindowFunctionKind::Session),
            "cumulate" => Some(WindowFunctionKind::Cumulate),
            "count_window" => Some(WindowFunctionKind::Count),
            _ => None,
        }
    }

    fn signature(self) -> Signature {
        match self {
            WindowFunctionKind::Tumble | WindowFunctionKind::Session => {
                Signature::any(2, Volatility::Immutable)
            }
            WindowFunctionKind::Hop | WindowFunctionKind::Cumulate => {
                Signature::any(3, Volatility::Immutable)
            }
            WindowFunctionKind::Count => {
                Signature::one_of(vec![TypeSignature::Any(1), TypeSignature::Any(2)], Volatility::Immutable)
            }
        }
    }
}

/// The DataFusion function behind `tumble`/`hop`/`session`/`cumulate`/`count_window`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowGroupFunction {
    kind: WindowFunctionKind,
    signature: Signature,
}

impl WindowGroupFunction {
    pub fn udf(kind: WindowFunctionKind) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self { kind, signature: kind.signature() })
    }
}

impl ScalarUDFImpl for WindowGroupFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if self.kind == WindowFunctionKind::Count {
            return match arg_types.iter().find(|t| !t.is_integer()) {
                Some(t) => plan_err!("count_window() needs integer row counts, got {t}"),
                None => Ok(DataType::Int64),
            };
        }
        match arg_types.first() {
            Some(DataType::Timestamp(_, _)) => {}
            Some(other) => {
                return plan_err!("{}() needs a timestamp time attribute, got {other}", self.kind.name());
            }
            None => return plan_err!("{}() needs a time attribute", self.kind.name()),
        }
        if let Some(t) = arg_types.iter().skip(1).find(|t| !matches!(t, DataType::Interval(_))) {
            return plan_err!("{}() needs INTERVAL sizes, got {t}", self.kind.name());
        }
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{}() is only meaningful as a GROUP BY key of a streaming job", self.kind.name())
    }
}

/// The name of the window-end aggregate.
pub const WINDOW_END: &str = "window_end";

/// `window_end(time_attr)`: an aggregate only so that DataFusion accepts it next to a window
/// group function in SELECT; the window operators fill it with the window's end.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowEndFunction {
    signature: Signature,
}

impl WindowEndFunction {
    pub fn udaf() -> AggregateUDF {
        AggregateUDF::new_from_impl(Self { signature: Signature::any(1, Volatility::Immutable) })
    }
}

impl AggregateUDFImpl for WindowEndFunction {
    fn name(&self) -> &str {
        WINDOW_END
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(DataType::Timestamp(_, _)) => Ok(DataType::Timestamp(TimeUnit::Millisecond, None)),
            _ => plan_err!("{WINDOW_END}() needs the window's timestamp time attribute"),
        }
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        exec_err!(
            "{WINDOW_END}() is only meaningful next to a window function in GROUP BY of a streaming job"
        )
    }
}

//! Millrace's window group functions, registered with DataFusion so that its planner resolves
//! and type-checks them like any function:
//!
//! - `tumble(time_attr, size)`: the start of the tumbling window containing the row;
//! - `hop(time_attr, slide, size)`: the start of each hopping window containing the row.
//!
//! They are markers: only `GROUP BY` of a streaming job gives them meaning (one row can lie in
//! several hopping windows, which no scalar function can express), so the dataflow
//! translation replaces them and evaluating one anywhere else is an error.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Which window a group function declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowFunctionKind {
    Tumble,
    Hop,
}

impl WindowFunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            WindowFunctionKind::Tumble => "tumble",
            WindowFunctionKind::Hop => "hop",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tumble" => Some(WindowFunctionKind::Tumble),
            "hop" => Some(WindowFunctionKind::Hop),
            _ => None,
        }
    }

    fn arity(self) -> usize {
        match self {
            WindowFunctionKind::Tumble => 2,
            WindowFunctionKind::Hop => 3,
        }
    }
}

/// The DataFusion function behind `tumble`/`hop`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WindowGroupFunction {
    kind: WindowFunctionKind,
    signature: Signature,
}

impl WindowGroupFunction {
    pub fn udf(kind: WindowFunctionKind) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            kind,
            signature: Signature::any(kind.arity(), Volatility::Immutable),
        })
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

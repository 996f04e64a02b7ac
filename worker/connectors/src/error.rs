//! Connector errors, with the table or resource they concern.

use arrow::error::ArrowError;
use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("table '{table}': {message}")]
    Options { table: String, message: String },
    #[error("{context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: ArrowError,
    },
    #[error("{0}")]
    Delivery(String),
    /// A Kafka protocol exchange of the transaction recovery failed.
    #[error("{context}: {message}")]
    Protocol { context: String, message: String },
    /// A transaction of the exactly-once Kafka sink could not be ended as required.
    #[error("transaction '{transactional_id}': {message}")]
    Transaction { transactional_id: String, message: String },
    #[error("connector thread {0} panicked")]
    Panicked(String),
}

impl ConnectorError {
    pub(crate) fn arrow(context: impl Into<String>) -> impl FnOnce(ArrowError) -> Self {
        let context = context.into();
        move |source| ConnectorError::Arrow { context, source }
    }

    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let context = context.into();
        move |source| ConnectorError::Kafka { context, source }
    }
}

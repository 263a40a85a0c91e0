/// Errors of the op layer: a shape that does not fit an op, a missing parameter, a candle failure.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("shape error in {op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("parameter `{name}`: {msg}")]
    Param { name: String, msg: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, GraphError>;

pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(GraphError::Shape {
        op,
        msg: msg.into(),
    })
}

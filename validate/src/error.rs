#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The runtime could not be loaded at all (library missing, provider not registered).
    #[error("runtime {runtime} unavailable: {reason}")]
    Unavailable { runtime: String, reason: String },
    /// The runtime loaded but refused or failed on this graph.
    #[error("runtime {runtime} failed: {reason}")]
    Failed { runtime: String, reason: String },
    #[error("bad input: {0}")]
    BadInput(String),
}

pub type Result<T> = std::result::Result<T, ValidateError>;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("malformed ONNX: {0}")]
    Malformed(String),
    #[error("structural check failed: {0}")]
    Structure(String),
    #[error("io error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, ExportError>;

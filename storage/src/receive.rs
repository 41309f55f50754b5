//! Receiving a value body of a declared length as it arrives: into a new value file (see
//! [`crate::value_files`]) or straight into a record's stored form. Used for the bodies of
//! record writes and for the values a node pulls from a peer (see `crate::repair`).
//!
//! Guarantees: memory stays within one frame of the body plus the value file writer's buffer
//! (or, for a stored form, the value itself); a body longer or shorter than declared is an
//! error, and a value file not completed is removed.

use crate::store::{Store, StoreError, StoredValue};
use crate::value_files::FinishedValue;
use hyper::body::Incoming;

/// Why a body could not be received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("value could not be read: {0}")]
    Body(String),
    #[error("value is longer than its content-length")]
    Longer,
    #[error("value is shorter than its content-length")]
    Shorter,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Streams a body of the declared `length` into a new value file as it arrives and makes the
/// file durable. On any failure the file is removed.
pub async fn into_value_file(
    store: &Store,
    body: Incoming,
    length: usize,
) -> Result<FinishedValue, ReceiveError> {
    let file_error = |e: std::io::Error| ReceiveError::Store(StoreError::ValueFile(e));
    let mut writer = store.new_value_file().map_err(file_error)?;
    read_exactly(body, length, |_, chunk| {
        // Most pieces are only copied into the writer's buffer; a full buffer goes to disk,
        // which may block, so that write leaves the worker thread to the runtime.
        if writer.fills_chunk(chunk.len()) {
            tokio::task::block_in_place(|| writer.write(chunk))
        } else {
            writer.write(chunk)
        }
        .map_err(file_error)
    })
    .await?;
    tokio::task::block_in_place(|| writer.finish()).map_err(file_error)
}

/// Reads a body of the declared `length` straight into a record's stored form.
pub async fn into_stored_value(
    body: Incoming,
    timestamp: u64,
    length: usize,
) -> Result<StoredValue, ReceiveError> {
    let mut stored = StoredValue::with_length(timestamp, length);
    read_exactly(body, length, |offset, chunk| {
        stored.write_at(offset, chunk);
        Ok(())
    })
    .await?;
    Ok(stored)
}

/// Hands each piece of a body to `put` with its offset, failing unless the body is exactly
/// its declared `length` bytes long.
async fn read_exactly(
    mut body: Incoming,
    length: usize,
    mut put: impl FnMut(usize, &[u8]) -> Result<(), ReceiveError>,
) -> Result<(), ReceiveError> {
    use http_body_util::BodyExt;
    let mut filled = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReceiveError::Body(common::http::error_chain(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        if filled + chunk.len() > length {
            return Err(ReceiveError::Longer);
        }
        put(filled, &chunk)?;
        filled += chunk.len();
    }
    if filled != length {
        return Err(ReceiveError::Shorter);
    }
    Ok(())
}

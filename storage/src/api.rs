//! The storage node's HTTP API (see `common::proto` for the protocol): record reads and writes
//! for frontends, and a health check. Every bad request gets a 4xx naming what was wrong.

use crate::store::Applied;
use crate::Node;
use common::http::{self as h, Body, ReadBodyError};
use common::proto;
use common::query::{Query, QueryError};
use common::version::Record;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

/// Everything a storage request can fail with, and the status each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no record for this key")]
    NotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("method {method} is not supported on {path}")]
    MethodNotAllowed { method: Method, path: String },
    #[error("no such endpoint: {0}")]
    UnknownPath(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    NotDurable(#[from] crate::durability::SyncFailed),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(_) | ApiError::NotDurable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Answers one request.
pub async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, proto::RECORD_PATH) => get(&node, &req),
        (&Method::PUT, proto::RECORD_PATH) => put(&node, req).await,
        (&Method::GET, "/health") => match node.durability.failure() {
            None => Ok(h::text(StatusCode::OK, node.describe())),
            Some(failure) => Ok(h::text(StatusCode::SERVICE_UNAVAILABLE, failure)),
        },
        (method, path @ (proto::RECORD_PATH | "/health")) => {
            Err(ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned() })
        }
        (_, path) => Err(ApiError::UnknownPath(path.to_owned())),
    };
    result.unwrap_or_else(|e| {
        if e.status().is_server_error() {
            log::error!("request failed: {e}");
        }
        h::text(e.status(), e)
    })
}

fn key_of<'a>(query: &'a Query<'_>, max_key_bytes: usize) -> Result<&'a [u8], ApiError> {
    let key = query.get("key").ok_or_else(|| ApiError::BadRequest("missing parameter `key`".into()))?;
    if key.len() > max_key_bytes {
        return Err(ApiError::TooLarge(format!("key is {} bytes; the limit is {max_key_bytes}", key.len())));
    }
    Ok(key)
}

fn get(node: &Node, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let key = key_of(&query, node.limits.max_key_bytes)?;
    let record = tokio::task::block_in_place(|| node.store.get(key))?.ok_or(ApiError::NotFound)?;
    let mut response = Response::builder().status(StatusCode::OK).header(proto::TIMESTAMP, record.timestamp);
    if record.is_tombstone() {
        response = response.header(proto::TOMBSTONE, "1");
    }
    let body = record.value.map(h::full).unwrap_or_else(h::empty);
    Ok(response.body(body).expect("valid response parts"))
}

async fn put(node: &Node, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or(""))?;
    let key = key_of(&query, node.limits.max_key_bytes)?;
    let timestamp = parts
        .headers
        .get(proto::TIMESTAMP)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("header `{}` must be a decimal timestamp", proto::TIMESTAMP))
        })?;
    let tombstone = match parts.headers.get(proto::TOMBSTONE).map(|v| v.as_bytes()) {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(_) => return Err(ApiError::BadRequest(format!("header `{}` must be 0 or 1", proto::TOMBSTONE))),
    };
    let value = h::read_body(body, node.limits.max_value_bytes).await.map_err(|e| match e {
        ReadBodyError::TooLarge { limit } => {
            ApiError::TooLarge(format!("value is larger than the {limit}-byte limit"))
        }
        ReadBodyError::Transport(e) => ApiError::BadRequest(format!("value could not be read: {e}")),
    })?;
    let record = if tombstone {
        if !value.is_empty() {
            return Err(ApiError::BadRequest("a tombstone carries no value".into()));
        }
        Record::tombstone(timestamp)
    } else {
        Record::value(timestamp, value)
    };
    let applied = tokio::task::block_in_place(|| node.store.apply(key, &record))?;
    // Even a superseded write waits: the newer record that beat it may not be durable yet.
    node.durability.wait_durable().await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(proto::APPLIED, if applied == Applied::Stored { "1" } else { "0" })
        .body(h::empty())
        .expect("valid response parts"))
}

//! The public API: `/get/`, `/set/`, `/delete/` and `/health`. Nothing internal is served here.
//!
//! Keys and values are byte strings, percent-decoded strictly (see `common::query`). Every
//! misuse is a 4xx with a one-line message; 503 means the cluster could not do what was asked.

use crate::replica::Found;
use crate::Frontend;
use bytes::Bytes;
use common::http::{self as h, Body, ReadBodyError};
use common::query::{self, Query, QueryError};
use common::version::Record;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

const USAGE: &str = "use GET /get/?key=K, GET or POST /set/?key=K&value=V (or the value as POST body), \
GET, POST or DELETE /delete/?key=K";

/// Everything a public request can fail with, and the status each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("key not found")]
    KeyNotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("method {method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed { method: Method, path: String, allowed: &'static str },
    #[error("no such endpoint: {0}; {USAGE}")]
    UnknownPath(String),
    #[error("cluster not ready: this frontend has no partition map yet (the controller forms the cluster once every storage node has registered)")]
    NoMap,
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyNotFound | ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoMap | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut response = h::text(self.status(), &self);
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        }
        response
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Answers one public request.
pub async fn handle(frontend: Arc<Frontend>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let not_allowed =
        |allowed| Err(ApiError::MethodNotAllowed { method: method.clone(), path: path.clone(), allowed });
    let result = match path.as_str() {
        "/get/" | "/get" => match method {
            Method::GET => get(&frontend, &req).await,
            _ => not_allowed("GET"),
        },
        "/set/" | "/set" => match method {
            Method::GET | Method::POST => set(&frontend, req).await,
            _ => not_allowed("GET, POST"),
        },
        "/delete/" | "/delete" => match method {
            Method::GET | Method::POST | Method::DELETE => delete(&frontend, &req).await,
            _ => not_allowed("GET, POST, DELETE"),
        },
        "/health" => match method {
            Method::GET => Ok(health(&frontend)),
            _ => not_allowed("GET"),
        },
        _ => Err(ApiError::UnknownPath(path.clone())),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Parses the query, refusing parameters the endpoint does not take (a typo such as `kye=`
/// should not silently become "missing key").
fn parse_query<'a>(raw: Option<&'a str>, allowed: &[&str]) -> Result<Query<'a>, ApiError> {
    let query = Query::parse(raw.unwrap_or(""))?;
    if let Some(unknown) = query.names().find(|n| !allowed.contains(&n.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter `{unknown}` (this endpoint takes: {})",
            allowed.join(", ")
        )));
    }
    Ok(query)
}

fn key_of<'a>(query: &'a Query<'_>, frontend: &Frontend) -> Result<&'a [u8], ApiError> {
    let key =
        query.get("key").ok_or_else(|| ApiError::BadRequest(format!("missing parameter `key`; {USAGE}")))?;
    let limit = frontend.limits.max_key_bytes;
    if key.len() > limit {
        return Err(ApiError::TooLarge(format!("key is {} bytes; the limit is {limit}", key.len())));
    }
    Ok(key)
}

fn too_large_value(length: Option<usize>, limit: usize) -> ApiError {
    ApiError::TooLarge(match length {
        Some(length) => format!("value is {length} bytes; the limit is {limit}"),
        None => format!("value is larger than the {limit}-byte limit"),
    })
}

async fn get(frontend: &Frontend, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = parse_query(req.uri().query(), &["key"])?;
    let key = key_of(&query, frontend)?;
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let (partition, replicas) = routes.map.locate(key);
    // One random replica, then the others in map order.
    let start = rand::random_range(0..replicas.len());
    let order: Vec<_> = replicas[start..].iter().chain(&replicas[..start]).copied().collect();
    match frontend.replicas.read_first(&routes, &order, &query::encode(key)).await {
        Ok(Found::Value { length, body, .. }) => {
            let mut response = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/octet-stream");
            if let Some(length) = length {
                response = response.header(header::CONTENT_LENGTH, length);
            }
            Ok(response.body(body).expect("valid response parts"))
        }
        Ok(Found::Tombstone | Found::Missing) => Err(ApiError::KeyNotFound),
        Err(failures) => Err(ApiError::Unavailable(format!(
            "no replica of partition {partition} answered: {}",
            join(&failures)
        ))),
    }
}

async fn set(frontend: &Frontend, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let query = parse_query(parts.uri.query(), &["key", "value"])?;
    let key = key_of(&query, frontend)?;
    let limit = frontend.limits.max_value_bytes;
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let value = match (query.get("value"), parts.method) {
        (Some(value), method) => {
            if method == Method::POST {
                // The value must come from one place only.
                h::read_body(body, 0).await.map_err(|_| {
                    ApiError::BadRequest(
                        "the value is given both as `value=` and as the POST body; send one".into(),
                    )
                })?;
            }
            if value.len() > limit {
                return Err(too_large_value(Some(value.len()), limit));
            }
            Bytes::copy_from_slice(value)
        }
        (None, Method::POST) => h::read_body(body, limit).await.map_err(|e| match e {
            ReadBodyError::TooLarge { limit } => too_large_value(None, limit),
            ReadBodyError::Transport(e) => {
                ApiError::BadRequest(format!("the request body could not be read: {e}"))
            }
        })?,
        (None, _) => {
            return Err(ApiError::BadRequest(
                "missing parameter `value` (or POST the value as the request body)".into(),
            ))
        }
    };
    let record = Record::value(frontend.clock.next(), value);
    write(frontend, &routes, key, record).await
}

async fn delete(frontend: &Frontend, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = parse_query(req.uri().query(), &["key"])?;
    let key = key_of(&query, frontend)?;
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let record = Record::tombstone(frontend.clock.next());
    write(frontend, &routes, key, record).await
}

/// Writes `record` to every replica of `key`; 200 only once all of them acknowledged.
async fn write(
    frontend: &Frontend,
    routes: &crate::routing::Routes,
    key: &[u8],
    record: Record,
) -> Result<Response<Body>, ApiError> {
    let (partition, replicas) = routes.map.locate(key);
    let (acked, failures) = frontend.replicas.write_all(routes, replicas, &query::encode(key), &record).await;
    if failures.is_empty() {
        return Ok(h::text(StatusCode::OK, "ok"));
    }
    Err(ApiError::Unavailable(format!(
        "write not acknowledged: {acked} of {} replicas of partition {partition} stored it ({}); \
         the write may be visible on some replicas",
        replicas.len(),
        join(&failures)
    )))
}

fn health(frontend: &Frontend) -> Response<Body> {
    match frontend.router.current() {
        Some(routes) => h::text(
            StatusCode::OK,
            format!("ok: map epoch {}, {} storage nodes", routes.map.epoch, routes.map.members.len()),
        ),
        None => ApiError::NoMap.into_response(),
    }
}

fn join(failures: &[crate::replica::ReplicaFailure]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

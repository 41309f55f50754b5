//! The REST paths, beside the original API: `GET`, `HEAD`, `PUT` and `DELETE` on `/kv/<key>`,
//! where `<key>` is the rest of the path, percent-decoded exactly (`+` is itself, `%2F` a
//! slash, any byte string works), with the original API's `r=`/`w=` levels, limits, errors and
//! streaming of large values.
//!
//! Versions: a read answers the record's version in `ETag` (its timestamp, quoted) and
//! `vf-version` (the timestamp); `If-None-Match` naming it answers 304; a write answers the
//! version it stored. `GET /kv/<key>?wait=30s&newer_than=V` watches the key (see
//! [`crate::watch`]). Nothing here keeps state beyond the request.

use crate::api::{self, ApiError, Conditions, RequestBody};
use crate::Frontend;
use common::http::Body;
use http::{Method, Response, StatusCode};

/// Answers `method` on `/kv/<escaped_key>`.
pub async fn answer(
    frontend: &Frontend,
    method: &Method,
    escaped_key: &str,
    query: Option<&str>,
    conditions: Conditions<'_>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let key = common::query::decode_path(escaped_key.as_bytes()).map_err(|bad| {
        ApiError::BadRequest(format!(
            "malformed percent-escape {bad:?} in the key (expected % followed by two hex digits)"
        ))
    })?;
    let limit = frontend.limits.max_key_bytes;
    if key.len() > limit {
        return Err(ApiError::TooLarge(format!("key is {} bytes; the limit is {limit}", key.len())));
    }
    match *method {
        Method::GET | Method::HEAD => get(frontend, &key, query, conditions, *method == Method::HEAD).await,
        Method::PUT => {
            let query = api::parse_query(query, &["w"])?;
            let level = api::level_of(&query, "w", frontend.write_level)?;
            api::put_value(frontend, &key, level, body).await.map(api::written)
        }
        Method::DELETE => {
            let query = api::parse_query(query, &["w"])?;
            let level = api::level_of(&query, "w", frontend.write_level)?;
            api::remove(frontend, &key, level).await.map(api::written)
        }
        _ => Err(ApiError::MethodNotAllowed {
            method: method.clone(),
            path: format!("{}{escaped_key}", api::KV_PREFIX),
            allowed: "GET, HEAD, PUT, DELETE",
        }),
    }
}

async fn get(
    frontend: &Frontend,
    key: &[u8],
    query: Option<&str>,
    conditions: Conditions<'_>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let query = api::parse_query(query, &["r", "wait", "newer_than"])?;
    let level = api::level_of(&query, "r", frontend.read_level)?;
    let Some(wait) = query.get("wait") else {
        if query.get("newer_than").is_some() {
            return Err(ApiError::BadRequest("`newer_than` is for watches: give `wait` too".into()));
        }
        return Ok(api::found_response(api::read(frontend, key, level).await?, conditions, head));
    };
    let wait = crate::watch::parse_wait(wait)?;
    let newer_than = match query.get("newer_than") {
        None => 0,
        Some(raw) => std::str::from_utf8(raw).ok().and_then(|v| v.parse().ok()).ok_or_else(|| {
            ApiError::BadRequest(
                "`newer_than` must be a version (the vf-version of an earlier read), or 0".into(),
            )
        })?,
    };
    match crate::watch::watch(frontend, key, newer_than, wait).await? {
        Some(found) => Ok(api::found_response(found, Conditions::default(), head)),
        None => Ok(Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(api::VERSION, newer_than)
            .body(common::http::empty())
            .expect("valid response parts")),
    }
}

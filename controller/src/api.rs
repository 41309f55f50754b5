//! The controller's HTTP API (see `common::proto`): registration, the map long poll, status.

use crate::cluster::RegisterError;
use crate::Controller;
use common::http::{self as h, Body, ReadBodyError};
use common::proto::{self, FrontendRegistration, StorageRegistration};
use common::query::Query;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a map long poll may be held open.
pub const MAX_WATCH_WAIT: Duration = Duration::from_secs(60);
/// Largest registration body accepted.
const MAX_REGISTRATION_BYTES: usize = 64 * 1024;

/// Everything a controller request can fail with, and the status each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Refused(#[from] RegisterError),
    #[error("method {method} is not supported on {path}")]
    MethodNotAllowed { method: Method, path: String },
    #[error("no such endpoint: {0}")]
    UnknownPath(String),
    #[error("cannot save the cluster state: {0}")]
    Persist(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Refused(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Answers one request.
pub async fn handle(controller: Arc<Controller>, req: Request<Incoming>) -> Response<Body> {
    let result = match (req.method(), req.uri().path()) {
        (&Method::POST, proto::STORAGE_REGISTER_PATH) => register_storage(&controller, req).await,
        (&Method::POST, proto::FRONTEND_REGISTER_PATH) => register_frontend(&controller, req).await,
        (&Method::GET, proto::MAP_PATH) => watch_map(&controller, req).await,
        (&Method::GET, proto::STATUS_PATH) => {
            Ok(h::json(StatusCode::OK, &controller.cluster().status(Instant::now())))
        }
        (&Method::GET, "/health") => Ok(h::text(StatusCode::OK, "ok")),
        (
            method,
            path @ (proto::STORAGE_REGISTER_PATH
            | proto::FRONTEND_REGISTER_PATH
            | proto::MAP_PATH
            | proto::STATUS_PATH
            | "/health"),
        ) => Err(ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned() }),
        (_, path) => Err(ApiError::UnknownPath(path.to_owned())),
    };
    result.unwrap_or_else(|e| {
        match e {
            ApiError::Refused(_) => log::warn!("registration refused: {e}"),
            ApiError::Persist(_) => log::error!("{e}"),
            _ => {}
        }
        h::text(e.status(), e)
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = h::read_body(req.into_body(), MAX_REGISTRATION_BYTES).await.map_err(|e| match e {
        ReadBodyError::TooLarge { .. } | ReadBodyError::Transport(_) => ApiError::BadRequest(e.to_string()),
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

async fn register_storage(
    controller: &Controller,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let registration: StorageRegistration = read_json(req).await?;
    common::addr::split(&registration.addr).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let admission = {
        let mut cluster = controller.cluster();
        let admission = cluster.register_storage(&registration, Instant::now())?;
        if admission.changed {
            // Saved before anyone hears of the change; on failure the node simply retries.
            tokio::task::block_in_place(|| controller.save(&cluster))
                .map_err(|e| ApiError::Persist(e.to_string()))?;
        }
        admission
    };
    if let Some(map) = admission.new_map {
        controller.publish(map);
    }
    Ok(h::json(StatusCode::OK, &admission.answer))
}

async fn register_frontend(
    controller: &Controller,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let registration: FrontendRegistration = read_json(req).await?;
    common::addr::split(&registration.addr).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let answer = controller.cluster().register_frontend(&registration.addr, Instant::now());
    Ok(h::json(StatusCode::OK, &answer))
}

/// The map long poll: answers with the map as soon as its epoch exceeds `newer_than`.
async fn watch_map(controller: &Controller, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query =
        Query::parse(req.uri().query().unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(raw) => std::str::from_utf8(raw)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::BadRequest(format!("parameter `{name}` must be a whole number"))),
        }
    };
    let newer_than = number("newer_than", 0)?;
    let wait = Duration::from_millis(number("wait_ms", 0)?).min(MAX_WATCH_WAIT);
    if let Some(frontend_id) =
        query.get("frontend_id").and_then(|f| std::str::from_utf8(f).ok()?.parse().ok())
    {
        controller.cluster().touch_frontend(frontend_id, Instant::now());
    }
    let mut updates = controller.subscribe();
    let mut shutdown = controller.shutdown.clone();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(published) = updates.borrow_and_update().as_ref() {
            if published.epoch > newer_than {
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(h::full(published.json.clone()))
                    .expect("valid response parts"));
            }
        }
        let changed = tokio::select! {
            changed = tokio::time::timeout_at(deadline, updates.changed()) => matches!(changed, Ok(Ok(()))),
            _ = shutdown.wait() => false,
        };
        if !changed {
            return Ok(Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .body(h::empty())
                .expect("valid response parts"));
        }
    }
}

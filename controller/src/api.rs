//! The controller's HTTP API (see `common::proto`): registration, the map long poll, status.

use crate::cluster::RegisterError;
use crate::Controller;
use common::http::{self as h, Body, ReadBodyError};
use common::proto::{self, CaughtUp, FenceRequest, FrontendRegistration, StorageRegistration};
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
    #[error("unknown storage node {0}")]
    UnknownNode(u32),
    #[error("the cluster has not formed yet")]
    NotFormed,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Refused(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::UnknownNode(_) => StatusCode::NOT_FOUND,
            ApiError::NotFormed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Answers one request.
pub async fn handle(controller: Arc<Controller>, req: Request<Incoming>) -> Response<Body> {
    let result = match (req.method(), req.uri().path()) {
        (&Method::POST, proto::STORAGE_REGISTER_PATH) => register_storage(&controller, req).await,
        (&Method::POST, proto::FRONTEND_REGISTER_PATH) => register_frontend(&controller, req).await,
        (&Method::GET, proto::MAP_PATH) => watch_map(&controller, req).await,
        (&Method::POST, proto::FENCE_PATH) => fence(&controller, req).await,
        (&Method::POST, proto::CAUGHT_UP_PATH) => caught_up(&controller, req).await,
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
            | proto::FENCE_PATH
            | proto::CAUGHT_UP_PATH
            | "/health"),
        ) => Err(ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned() }),
        (_, path) => Err(ApiError::UnknownPath(path.to_owned())),
    };
    result.unwrap_or_else(|e| {
        if matches!(e, ApiError::Refused(_)) {
            log::warn!("registration refused: {e}");
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
            // Saved before anyone hears of the change.
            controller.save(&cluster);
        }
        admission
    };
    if let Some(map) = admission.new_map {
        controller.publish(map);
    }
    Ok(h::json(StatusCode::OK, &admission.answer))
}

/// Fences a node out of reads and answers, with the new map, once its last lease has expired.
async fn fence(controller: &Controller, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let request: FenceRequest = read_json(req).await?;
    let fenced = {
        let mut cluster = controller.cluster();
        let fenced =
            cluster.fence(request.node_id, &request.reason).ok_or(ApiError::UnknownNode(request.node_id))?;
        if fenced.new_map.is_some() {
            controller.save(&cluster);
        }
        fenced
    };
    if let Some(map) = fenced.new_map {
        controller.publish(map);
    }
    tokio::time::sleep_until(fenced.ready_at.into()).await;
    let map = controller.cluster().map().cloned().ok_or(ApiError::NotFormed)?;
    Ok(h::json(StatusCode::OK, &*map))
}

/// A catching-up node reports it has pulled everything: it is marked up.
async fn caught_up(controller: &Controller, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let report: CaughtUp = read_json(req).await?;
    let new_map = {
        let mut cluster = controller.cluster();
        let new_map = cluster.caught_up(report.node_id, report.joined);
        if new_map.is_some() {
            controller.save(&cluster);
        }
        new_map
    };
    match new_map {
        Some(map) => {
            controller.publish(map.clone());
            Ok(h::json(StatusCode::OK, &*map))
        }
        None => Ok(h::text(StatusCode::CONFLICT, "not catching up since that epoch; nothing changed")),
    }
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
    let bad = |e: common::query::QueryError| ApiError::BadRequest(e.to_string());
    let newer_than = query.parsed("newer_than").map_err(bad)?.unwrap_or(0);
    let wait = Duration::from_millis(query.parsed("wait_ms").map_err(bad)?.unwrap_or(0)).min(MAX_WATCH_WAIT);
    if let Some(frontend_id) = query.parsed("frontend_id").ok().flatten() {
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

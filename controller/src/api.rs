//! The controller's HTTP API (see `common::proto`): registration, the map long poll, fencing,
//! status, and the admin endpoints the `velourfog` CLI calls. `ROUTES` is the one list of
//! endpoints: dispatch, who may call each (see `common::auth`), 404 and 405 (with `Allow`) all
//! come from it. Open to all: `/health`, `/metrics`, `/v1/status` and the dashboard (`/`,
//! `/dashboard`, `/v1/dashboard`), all read-only and without records; everything else needs the
//! cluster secret when one is configured.

use crate::cluster::{AdminError, RegisterError};
use crate::Controller;
use common::auth::{Access, Unauthorized};
use common::http::{self as h, Body, ReadBodyError};
use common::proto::{
    self, AdminOutcome, CaughtUp, FenceRequest, FrontendRegistration, NodeRequest, ReplicationRequest,
    StorageRegistration,
};
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
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("method {method} is not supported on {path}")]
    MethodNotAllowed { method: Method, path: String, allow: &'static str },
    #[error("no such endpoint: {0}")]
    UnknownPath(String),
    #[error("unknown storage node {0}")]
    UnknownNode(u32),
    #[error("the cluster has not formed yet")]
    NotFormed,
    #[error(transparent)]
    Unauthorized(#[from] Unauthorized),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Refused(RegisterError::Removed { .. }) => StatusCode::GONE,
            ApiError::Refused(RegisterError::Adopting) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Refused(RegisterError::Impostor { .. }) => StatusCode::FORBIDDEN,
            ApiError::Refused(_) => StatusCode::CONFLICT,
            ApiError::Admin(AdminError::NotFormed) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Admin(AdminError::UnknownNode(_) | AdminError::NotPending(_)) => StatusCode::NOT_FOUND,
            ApiError::Admin(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::UnknownNode(_) => StatusCode::NOT_FOUND,
            ApiError::NotFormed => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

/// What an endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    RegisterStorage,
    RegisterFrontend,
    Map,
    Fence,
    CaughtUp,
    Status,
    Health,
    Metrics,
    DashboardPage,
    DashboardData,
    NodeAdd,
    NodeRemove,
    Replication,
}

/// Every endpoint of the controller: method, path, who may call it, what it does.
const ROUTES: &[(Method, &str, Access, Route)] = &[
    (Method::POST, proto::STORAGE_REGISTER_PATH, Access::Cluster, Route::RegisterStorage),
    (Method::POST, proto::FRONTEND_REGISTER_PATH, Access::Cluster, Route::RegisterFrontend),
    (Method::GET, proto::MAP_PATH, Access::Cluster, Route::Map),
    (Method::POST, proto::FENCE_PATH, Access::Cluster, Route::Fence),
    (Method::POST, proto::CAUGHT_UP_PATH, Access::Cluster, Route::CaughtUp),
    (Method::GET, proto::STATUS_PATH, Access::Open, Route::Status),
    (Method::GET, "/health", Access::Open, Route::Health),
    (Method::GET, "/metrics", Access::Open, Route::Metrics),
    (Method::GET, "/", Access::Open, Route::DashboardPage),
    (Method::GET, "/dashboard", Access::Open, Route::DashboardPage),
    (Method::GET, proto::DASHBOARD_PATH, Access::Open, Route::DashboardData),
    (Method::POST, proto::ADMIN_NODE_ADD_PATH, Access::Cluster, Route::NodeAdd),
    (Method::POST, proto::ADMIN_NODE_REMOVE_PATH, Access::Cluster, Route::NodeRemove),
    (Method::POST, proto::ADMIN_REPLICATION_PATH, Access::Cluster, Route::Replication),
];

/// The endpoint a request names, if the caller may call it.
fn route(controller: &Controller, req: &Request<Incoming>) -> Result<Route, ApiError> {
    let (method, path) = (req.method(), req.uri().path());
    let mut allowed = ROUTES.iter().filter(|(_, p, _, _)| *p == path).peekable();
    let (allow, _, _, _) = allowed.peek().ok_or_else(|| ApiError::UnknownPath(path.to_owned()))?;
    let allow = if *allow == Method::GET { "GET" } else { "POST" };
    let (_, _, access, route) = allowed
        .find(|(m, _, _, _)| m == method)
        .ok_or_else(|| ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned(), allow })?;
    controller.gate.check(*access, req.headers())?;
    Ok(*route)
}

/// Answers one request.
pub async fn handle(controller: Arc<Controller>, req: Request<Incoming>) -> Response<Body> {
    let result = match route(&controller, &req) {
        Ok(Route::RegisterStorage) => register_storage(&controller, req).await,
        Ok(Route::RegisterFrontend) => register_frontend(&controller, req).await,
        Ok(Route::Map) => watch_map(&controller, req).await,
        Ok(Route::Fence) => fence(&controller, req).await,
        Ok(Route::CaughtUp) => caught_up(&controller, req).await,
        Ok(Route::Status) => Ok(h::json(StatusCode::OK, &controller.cluster().status(Instant::now()))),
        Ok(Route::Health) => Ok(h::text(StatusCode::OK, "ok")),
        Ok(Route::DashboardPage) => Ok(Response::builder()
            .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(h::full(crate::dashboard::PAGE))
            .expect("static response parts are valid")),
        Ok(Route::DashboardData) => {
            let status = controller.cluster().status(Instant::now());
            Ok(Response::builder()
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(h::full(controller.collector.answer(status)))
                .expect("static response parts are valid"))
        }
        Ok(Route::Metrics) => {
            crate::metrics::refresh(&controller.cluster().status(Instant::now()));
            Ok(common::telemetry::render())
        }
        Ok(Route::NodeAdd) => node_add(&controller, req).await,
        Ok(Route::NodeRemove) => node_remove(&controller, req).await,
        Ok(Route::Replication) => replication(&controller, req).await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| {
        if matches!(e, ApiError::Refused(_)) {
            log::debug!("registration refused: {e}");
        }
        if let ApiError::Unauthorized(refusal) = e {
            return common::auth::unauthorized(refusal);
        }
        let mut response = h::text(e.status(), &e);
        if let ApiError::MethodNotAllowed { allow, .. } = e {
            response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        response
    })
}

/// Applies an admin change under the lock: saved, then published, then answered.
fn admin<T>(
    controller: &Controller,
    change: impl FnOnce(
        &mut crate::cluster::Cluster,
    ) -> Result<(T, Option<Arc<common::placement::PartitionMap>>), AdminError>,
) -> Result<(T, usize, Option<u64>), ApiError> {
    let (value, new_map, moves, epoch) = {
        let mut cluster = controller.cluster();
        let (value, new_map) = change(&mut cluster)?;
        if new_map.is_some() {
            controller.save(&cluster);
        }
        (value, new_map, cluster.moves_left(), cluster.epoch())
    };
    if let Some(map) = new_map {
        controller.publish(map);
    }
    Ok((value, moves, epoch))
}

async fn node_add(controller: &Controller, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let request: NodeRequest = read_json(req).await?;
    let ((), moves, epoch) = admin(controller, |c| c.approve(&request.node).map(|()| ((), None)))?;
    let message = format!("{} approved: it joins the cluster at its next heartbeat", request.node);
    Ok(h::json(StatusCode::OK, &AdminOutcome { message, node_id: None, moves, epoch }))
}

async fn node_remove(controller: &Controller, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let request: NodeRequest = read_json(req).await?;
    let (id, moves, epoch) = admin(controller, |c| c.remove(&request.node))?;
    let message = format!("node {id} is leaving: {moves} partition moves planned");
    Ok(h::json(StatusCode::OK, &AdminOutcome { message, node_id: Some(id), moves, epoch }))
}

async fn replication(controller: &Controller, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let request: ReplicationRequest = read_json(req).await?;
    let ((), moves, epoch) =
        admin(controller, |c| c.set_replication(request.replication).map(|map| ((), map)))?;
    let message = format!("replication is {}: {moves} partition moves planned", request.replication);
    Ok(h::json(StatusCode::OK, &AdminOutcome { message, node_id: None, moves, epoch }))
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
        if cluster.adopting(Instant::now()) {
            return Err(RegisterError::Adopting.into());
        }
        let fenced = cluster
            .fence(request.node_id, &request.reason, Instant::now())
            .ok_or(ApiError::UnknownNode(request.node_id))?;
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
        let new_map = cluster.caught_up(report.node_id, report.token.as_deref(), report.joined)?;
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
    let answer =
        controller.cluster().register_frontend(&registration.addr, registration.map_epoch, Instant::now());
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
                    .header(proto::NOW, common::version::now_micros())
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
                .header(proto::NOW, common::version::now_micros())
                .body(h::empty())
                .expect("valid response parts"));
        }
    }
}

//! The HTTP/1.1 + JSON API on a Unix socket. Every handler runs the controller on a blocking
//! thread (provisioning makes syscalls and enters namespaces) and answers errors as JSON.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::api_types::{ConnectReq, CreateNetworkReq, DisconnectReq};
use crate::controller::Controller;
use crate::error::ApiError;

pub type Shared = Arc<Mutex<Controller>>;

async fn run<T: Send + 'static>(
    ctl: Shared,
    f: impl FnOnce(&mut Controller) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut c = ctl.lock();
        f(&mut c)
    })
    .await
    .map_err(|e| ApiError::internal(format!("request failed: {e}")))?
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| ApiError::bad_request(format!("malformed request body: {}", e.body_text())))
}

async fn ping() -> &'static str {
    "OK"
}

async fn list(State(c): State<Shared>) -> Result<Json<Value>, ApiError> {
    run(c, |c| Ok(Json(Value::Array(c.networks().iter().map(|n| c.inspect(n)).collect())))).await
}

async fn create(State(c): State<Shared>, b: Result<Json<CreateNetworkReq>, JsonRejection>) -> Result<Response, ApiError> {
    let req = body(b)?;
    run(c, move |c| {
        let n = c.create_network(req)?;
        Ok((StatusCode::CREATED, Json(json!({ "Id": n.id, "Warning": "" }))).into_response())
    })
    .await
}

async fn inspect(State(c): State<Shared>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    run(c, move |c| {
        let n = c.find_network(&id)?.clone();
        Ok(Json(c.inspect(&n)))
    })
    .await
}

async fn remove(State(c): State<Shared>, UrlPath(id): UrlPath<String>) -> Result<StatusCode, ApiError> {
    run(c, move |c| c.remove_network(&id).map(|()| StatusCode::NO_CONTENT)).await
}

async fn connect(
    State(c): State<Shared>,
    UrlPath(id): UrlPath<String>,
    b: Result<Json<ConnectReq>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let req = body(b)?;
    run(c, move |c| {
        let ep = c.connect(&id, req)?;
        Ok(Json(json!({
            "EndpointID": ep.id,
            "Name": ep.name,
            "Interface": ep.ifname,
            "MacAddress": ep.mac.to_string(),
            "IPv4Address": ep.ipv4.map(|a| format!("{a}/{}", ep.prefix)).unwrap_or_default(),
            "IPv6Address": ep.ipv6.map(|a| format!("{a}/{}", ep.prefix6)).unwrap_or_default(),
        })))
    })
    .await
}

async fn disconnect(
    State(c): State<Shared>,
    UrlPath(id): UrlPath<String>,
    b: Result<Json<DisconnectReq>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let req = body(b)?;
    run(c, move |c| c.disconnect(&id, req).map(|()| StatusCode::OK)).await
}

async fn prune(State(c): State<Shared>) -> Result<Json<Value>, ApiError> {
    run(c, |c| Ok(Json(json!({ "NetworksDeleted": c.prune()? })))).await
}

#[derive(serde::Deserialize)]
struct FdbQuery {
    network: Option<String>,
}

async fn fdb(State(c): State<Shared>, Query(q): Query<FdbQuery>) -> Result<Json<Value>, ApiError> {
    run(c, move |c| c.fdb(q.network.as_deref()).map(Json)).await
}

async fn stats(State(c): State<Shared>) -> Result<Json<Value>, ApiError> {
    let mut v = run(c, |c| Ok(c.stats())).await?;
    tokio::task::spawn_blocking(move || {
        crate::controller::fill_kernel_drops(&mut v);
        Json(v)
    })
    .await
    .map_err(|e| ApiError::internal(format!("request failed: {e}")))
}

async fn routes(State(c): State<Shared>) -> Result<Json<Value>, ApiError> {
    run(c, |c| Ok(Json(c.routes()))).await
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RouteReq {
    destination: String,
    via: String,
}

async fn add_route(State(c): State<Shared>, b: Result<Json<RouteReq>, JsonRejection>) -> Result<StatusCode, ApiError> {
    let r = body(b)?;
    run(c, move |c| c.add_route(&r.destination, &r.via).map(|()| StatusCode::CREATED)).await
}

#[derive(serde::Deserialize)]
struct RouteQuery {
    destination: String,
}

async fn remove_route(State(c): State<Shared>, Query(q): Query<RouteQuery>) -> Result<StatusCode, ApiError> {
    run(c, move |c| c.remove_route(&q.destination).map(|()| StatusCode::NO_CONTENT)).await
}

async fn neigh(State(c): State<Shared>, Query(q): Query<FdbQuery>) -> Result<Json<Value>, ApiError> {
    run(c, move |c| c.neigh(q.network.as_deref()).map(Json)).await
}

#[derive(serde::Deserialize)]
struct PortsQuery {
    container: String,
}

async fn ports(State(c): State<Shared>, Query(q): Query<PortsQuery>) -> Result<Json<Value>, ApiError> {
    run(c, move |c| c.ports(&q.container).map(Json)).await
}

async fn conntrack(State(c): State<Shared>) -> Result<Json<Value>, ApiError> {
    run(c, |c| Ok(Json(c.conntrack()))).await
}

async fn conntrack_flush(State(c): State<Shared>) -> Result<StatusCode, ApiError> {
    run(c, |c| {
        c.conntrack_flush();
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint: see `vswitchctl --help` for what the daemon serves")
}

/// Docker's clients prefix a version (`/v1.47/networks/...`); the same calls answer there.
fn strip_version<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/v")
        .and_then(|r| r.split_once('/'))
        .filter(|(v, _)| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') && v.contains('.'));
    if let Some((_, rest)) = rest {
        let pq = match req.uri().query() {
            Some(q) => format!("/{rest}?{q}"),
            None => format!("/{rest}"),
        };
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
    }
    req
}

pub fn router(ctl: Shared) -> Router {
    Router::new()
        .route("/_ping", get(ping))
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route("/fdb", get(fdb))
        .route("/stats", get(stats))
        .route("/routes", get(routes).post(add_route).delete(remove_route))
        .route("/neigh", get(neigh))
        .route("/conntrack", get(conntrack))
        .route("/ports", get(ports))
        .route("/conntrack/flush", post(conntrack_flush))
        .fallback(not_found)
        .with_state(ctl)
}

/// Fails when a live daemon answers on `path`.
pub fn check_socket_free(path: &Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("another vswitchd is already serving {}: stop it first, or give --socket another path", path.display());
    }
    Ok(())
}

/// Binds the socket (replacing a stale one), mode 0660, and serves until `shutdown` resolves.
pub async fn serve(path: &Path, ctl: Shared, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    check_socket_free(path)?;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let app = tower::ServiceBuilder::new().map_request(strip_version).service(router(ctl));
    axum::serve(listener, axum::ServiceExt::<axum::extract::Request>::into_make_service(app)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

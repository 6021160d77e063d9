//! A small HTTP/1.1 client over the daemon's Unix socket (hyper), used by `vswitchctl`.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// What went wrong talking to the daemon, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach vswitchd at {path}: {why}\n  is the daemon running? start it with: vswitchd --socket {path}\n  (or point vswitchctl at it with --socket PATH or VSWITCH_SOCKET)")]
    Unreachable { path: String, why: String },
    #[error("permission denied on {0}: the socket is mode 0660; run as root or as a member of its group")]
    Permission(String),
    #[error("{0}")]
    Daemon(String),
    #[error("talking to vswitchd: {0}")]
    Protocol(String),
}

/// One request; returns the status and the JSON body (null when empty).
pub async fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), ClientError> {
    let sock = socket.display().to_string();
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Permission(sock.clone()),
        _ => ClientError::Unreachable { path: sock.clone(), why: e.to_string() },
    })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    tokio::spawn(conn);
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "vswitchd")
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    let status = resp.status().as_u16();
    let raw = resp.into_body().collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?.to_bytes();
    let v = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()))
    };
    if status >= 400 {
        let msg = v.get("message").and_then(Value::as_str).map_or_else(|| v.to_string(), str::to_string);
        return Err(ClientError::Daemon(msg));
    }
    Ok((status, v))
}

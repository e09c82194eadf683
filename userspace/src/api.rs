//! The agent's HTTP/JSON API, served on a Unix socket that only root can open. The same
//! types are what `eipctl` reads.

use std::{net::Ipv4Addr, path::Path, sync::Arc};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Path as UrlPath, State as AxState},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{
    agent::Agent,
    model::{AssociationMode, Eip, EipStatus, ErrorCode, Refusal, Request},
};

/// An EIP as the API shows it (R30).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EipView {
    pub address: Ipv4Addr,
    pub region: String,
    pub status: EipStatus,
    pub private_ip: Option<Ipv4Addr>,
    pub mode: Option<AssociationMode>,
    /// Present when the data plane could be read.
    pub counters: Option<Counters>,
}

impl EipView {
    pub fn new(eip: &Eip, counters: Option<Counters>) -> Self {
        Self {
            address: eip.address,
            region: eip.region.clone(),
            status: eip.status(),
            private_ip: eip.association.as_ref().map(|a| a.private_ip),
            mode: eip.association.as_ref().map(|a| a.mode),
            counters,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub inbound_packets: u64,
    pub inbound_bytes: u64,
    pub outbound_packets: u64,
    pub outbound_bytes: u64,
}

/// Frames per verdict, as names (`eipgw_common::Verdict::name`) to counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub verdicts: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AllocateBody {
    pub address: Ipv4Addr,
    pub region: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssociateBody {
    pub private_ip: Ipv4Addr,
    #[serde(default)]
    pub allow_reassociation: bool,
}

/// The body of every non-2xx answer. `kind` tells a refusal (the request breaks a rule or
/// names something that does not exist: nothing changed) from a failure (the agent could
/// not do what was valid).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub code: String,
    pub rule: Option<String>,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Refused,
    Failed,
}

pub enum ApiError {
    Refused(Refusal),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Refused(r) => {
                let status = match r.code {
                    ErrorCode::EipNotFound => StatusCode::NOT_FOUND,
                    ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
                    _ => StatusCode::CONFLICT,
                };
                let body = ErrorBody {
                    kind: ErrorKind::Refused,
                    code: r.code.to_string(),
                    rule: r.rule,
                    message: r.message,
                };
                (status, body)
            }
            ApiError::Failed(e) => {
                log::error!("request failed: {e:#}");
                let body = ErrorBody {
                    kind: ErrorKind::Failed,
                    code: "INTERNAL".into(),
                    rule: None,
                    message: format!("{e:#}"),
                };
                (StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        };
        (status, Json(body)).into_response()
    }
}

type Shared = Arc<Mutex<Agent>>;

pub fn router(agent: Shared) -> Router {
    Router::new()
        .route("/v1/eips", get(list_eips).post(allocate_eip))
        .route("/v1/eips/{address}", get(show_eip).delete(release_eip))
        .route("/v1/eips/{address}/associate", post(associate_eip))
        .route("/v1/eips/{address}/unassociate", post(unassociate_eip))
        .route("/v1/stats", get(stats))
        .with_state(agent)
}

/// Binds the socket with owner-only permissions and serves until `shutdown` resolves.
pub async fn serve(
    agent: Shared,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            anyhow::bail!("another eipgwd is serving {}", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale socket {}", socket.display()))?;
    }
    // Created with no permissions for group and others from the start (no window where
    // another user could connect), then confirmed 0600.
    let old_umask = unsafe { libc::umask(0o177) };
    let listener = tokio::net::UnixListener::bind(socket);
    // SAFETY: restoring the previous process umask.
    unsafe { libc::umask(old_umask) };
    let listener = listener.with_context(|| format!("binding {}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    log::info!("serving the API on {}", socket.display());
    axum::serve(listener, router(agent)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn list_eips(AxState(agent): AxState<Shared>) -> Result<Json<Vec<EipView>>, ApiError> {
    let agent = agent.lock().await;
    Ok(Json(agent.list_eips()?))
}

async fn show_eip(
    AxState(agent): AxState<Shared>,
    UrlPath(address): UrlPath<String>,
) -> Result<Json<EipView>, ApiError> {
    let address = parse_address(&address)?;
    let agent = agent.lock().await;
    Ok(Json(agent.show_eip(address)?))
}

async fn allocate_eip(
    AxState(agent): AxState<Shared>,
    Json(body): Json<AllocateBody>,
) -> Result<(StatusCode, Json<EipView>), ApiError> {
    let request = Request::AllocateEip { address: body.address, region: body.region };
    let view = agent.lock().await.execute(&request, body.address)?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn associate_eip(
    AxState(agent): AxState<Shared>,
    UrlPath(address): UrlPath<String>,
    Json(body): Json<AssociateBody>,
) -> Result<Json<EipView>, ApiError> {
    let eip = parse_address(&address)?;
    let request = Request::AssociateEip {
        eip,
        private_ip: body.private_ip,
        allow_reassociation: body.allow_reassociation,
    };
    Ok(Json(agent.lock().await.execute(&request, eip)?))
}

async fn unassociate_eip(
    AxState(agent): AxState<Shared>,
    UrlPath(address): UrlPath<String>,
) -> Result<Json<EipView>, ApiError> {
    let eip = parse_address(&address)?;
    Ok(Json(agent.lock().await.execute(&Request::UnassociateEip { eip }, eip)?))
}

async fn release_eip(
    AxState(agent): AxState<Shared>,
    UrlPath(address): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    let eip = parse_address(&address)?;
    agent.lock().await.release(eip)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(AxState(agent): AxState<Shared>) -> Result<Json<StatsView>, ApiError> {
    Ok(Json(agent.lock().await.stats()?))
}

fn parse_address(text: &str) -> Result<Ipv4Addr, ApiError> {
    text.parse().map_err(|_| {
        ApiError::Refused(Refusal {
            code: ErrorCode::InvalidArgument,
            rule: None,
            message: format!("{text:?} is not an IPv4 address"),
        })
    })
}

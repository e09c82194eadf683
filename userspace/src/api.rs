//! The agent's HTTP/JSON API, served on a Unix socket that only root can open. The same
//! types are what `eipctl` reads.
//!
//! - `POST /v1/requests`: one [`Request`] (`{"op": ..., ...}`) → [`ExecuteAnswer`]
//! - `POST /v1/apply`: [`ApplyBody`] (many requests, one transaction) → [`ApplyAnswer`]
//! - `GET /v1/resources/{kind}` and `GET /v1/resources/{kind}/{id}`: described resources
//! - `GET /v1/egress/{ip}`: how a private address reaches the Internet (R27)
//! - `GET /v1/stats`: data-plane verdict counters
//! - `GET /v1/nat/sessions[?eip=E][&private_ip=P]`: live SNAT sessions ([`SnatSessionView`])
//! - `GET /v1/nat/gateways/{id}`: a NAT gateway's EIPs and their port use ([`NatGatewayView`])

use std::{
    borrow::Cow,
    net::Ipv4Addr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use axum::{
    Json, Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, Path as UrlPath, RawQuery, Request as HttpRequest, State as AxState,
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::{
    agent::Agent,
    dataplane::{ProtocolCounts, SnatSessionView},
    document,
    model::{Egress, Key, Kind, Refusal, Request, Resource},
};

/// A declarative document can be large (a million associations).
const MAX_BODY: usize = 1 << 30;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecuteAnswer {
    /// The resource the request was about, described, if it still exists.
    pub subject: Option<Value>,
    pub warnings: Vec<String>,
}

/// The document of `POST /v1/apply`. The agent reads its requests while it runs them
/// ([`crate::document`]); the options before them are known sooner, so they come first.
#[derive(Clone, Debug, Serialize)]
pub struct ApplyBody {
    #[serde(flatten)]
    pub options: ApplyOptions,
    pub requests: Vec<Request>,
}

/// What an `apply` document asks besides its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApplyOptions {
    pub dry_run: bool,
    /// Stream the answer as NDJSON: [`ApplyEvent::Progress`] lines while the transaction
    /// runs, then one [`ApplyEvent::Answer`] or [`ApplyEvent::Error`].
    pub progress: bool,
    /// List the changes only if there are at most this many; otherwise the answer counts
    /// them by action and kind (`counts`), which is all a person reads of a million. No
    /// limit: every change is listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list_at_most: Option<usize>,
}

/// How far an `apply` has got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: String,
    pub done: usize,
    /// The requests read so far: the document's count once it is read to its end (it is
    /// read while its requests run).
    pub total: usize,
}

impl Progress {
    pub fn validating(done: usize, total: usize) -> Self {
        Self { phase: "validating".into(), done, total }
    }
}

/// One line of a streamed `apply` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyEvent {
    Progress(Progress),
    Answer(ApplyAnswer),
    Error(ErrorBody),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApplyAnswer {
    /// False for a dry run: nothing was kept.
    pub applied: bool,
    pub requests: usize,
    /// How many resources changed.
    #[serde(default)]
    pub changed: usize,
    /// Each change, unless there were more than the request's `list_at_most`.
    pub changes: Vec<ChangeView>,
    /// The changes counted by action and kind, when they were too many to list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts: Vec<ChangeCount>,
    pub warnings: Vec<String>,
    /// Where the agent's time went; logged, not sent.
    #[serde(skip)]
    pub timings: ApplyTimings,
}

/// The phases of an `apply` in the agent, for its log: a big document's time is easier to
/// read, and to improve, with them (BENCHMARKS.md, section 4).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyTimings {
    /// Parsing the document, on a thread of its own beside the rules.
    pub parse: Duration,
    /// Running the requests through the rules, as one transaction, from the first request
    /// read until the last has run.
    pub rules: Duration,
    /// Listing what changed, for the answer.
    pub listing: Duration,
    /// Writing the changes to the state file.
    pub store: Duration,
    /// Working out what the maps must change, while the store writes (on another thread:
    /// the two overlap).
    pub plan: Duration,
    /// Writing the maps, once the store has the change.
    pub maps: Duration,
    /// Encoding the answer.
    pub answer: Duration,
}

impl std::fmt::Display for ApplyTimings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phases = [
            ("parse", self.parse),
            ("rules", self.rules),
            ("listing", self.listing),
            ("store", self.store),
            ("plan", self.plan),
            ("maps", self.maps),
            ("answer", self.answer),
        ];
        for (i, (name, time)) in phases.iter().enumerate() {
            write!(f, "{}{name}={:.3}s", if i == 0 { "" } else { " " }, time.as_secs_f64())?;
        }
        Ok(())
    }
}

/// One resource a transaction created, updated or deleted. A dry run shows it before and
/// after; an applied document only names it (a million of them would be a lot to send).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChangeView {
    /// Borrowed when the agent makes it: no allocation per change for a name it has.
    pub kind: Cow<'static, str>,
    pub id: String,
    pub action: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Resource>,
}

/// How many resources one kind of change touched, in an answer too big to list them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCount {
    pub action: Cow<'static, str>,
    pub kind: Cow<'static, str>,
    pub count: usize,
}

/// Frames per verdict, as names (`eipgw_common::Verdict::name`) to counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub verdicts: std::collections::BTreeMap<String, u64>,
}

/// A NAT gateway's EIPs and how they are used (`eipctl nat show`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NatGatewayView {
    pub nat_gateway: String,
    pub vpc: String,
    /// The SNAT port range the agent runs with, the same for every EIP.
    pub port_min: u16,
    pub port_max: u16,
    pub eips: Vec<NatEipView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NatEipView {
    pub eip: std::net::Ipv4Addr,
    /// "ip-mapping", "dnat" and/or "snat"; none for an EIP no entry uses yet.
    pub roles: Vec<String>,
    /// Live SNAT sessions on the EIP.
    pub sessions: u64,
    /// SNAT ports held, per protocol (each protocol has the whole range).
    pub ports_in_use: ProtocolCounts,
    pub port_range_size: u32,
    /// The fullest protocol's share of the range, 0 to 100.
    pub utilisation_percent: f64,
    /// New SNAT flows refused: no free port, or the session table full.
    pub snat_refused_packets: u64,
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

#[derive(Debug)]
pub enum ApiError {
    Refused(Refusal),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

impl ApiError {
    /// The HTTP status and the body this error is answered with.
    fn status_and_body(self) -> (StatusCode, ErrorBody) {
        match self {
            ApiError::Refused(r) => {
                let status = if r.code.ends_with("_NOT_FOUND") {
                    StatusCode::NOT_FOUND
                } else if r.code == crate::model::codes::INVALID_ARGUMENT {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::CONFLICT
                };
                (
                    status,
                    ErrorBody {
                        kind: ErrorKind::Refused,
                        code: r.code,
                        rule: r.rule,
                        message: r.message,
                    },
                )
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
        }
    }

    pub fn body(self) -> ErrorBody {
        self.status_and_body().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        (status, Json(body)).into_response()
    }
}

type Shared = Arc<Mutex<Agent>>;

pub fn router(agent: Shared) -> Router {
    Router::new()
        .route("/v1/requests", post(execute))
        .route("/v1/apply", post(apply))
        .route("/v1/resources/{kind}", get(list))
        .route("/v1/resources/{kind}/{id}", get(show))
        .route("/v1/egress/{ip}", get(egress))
        .route("/v1/stats", get(stats))
        .route("/v1/nat/sessions", get(nat_sessions))
        .route("/v1/nat/gateways/{id}", get(nat_gateway))
        .layer(DefaultBodyLimit::max(MAX_BODY))
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
    // SAFETY: umask only changes this process's file creation mask.
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

/// The whole body of a document of up to `most` bytes, read into one buffer of the size
/// its `Content-Length` gives, each piece as it arrives. Collecting the pieces first and
/// joining them after (axum's `Bytes`) held a 158 MB document twice, in a couple of
/// thousand fresh pieces: 0.12 s to receive it this way against 0.30 s, measured in the
/// agent after a dry run.
async fn read_document(request: HttpRequest, most: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::Refused(Refusal::invalid(format!("the document is over {most} bytes")));
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    if announced > most {
        return Err(too_large());
    }
    let mut document = Vec::with_capacity(announced);
    let mut pieces = request.into_body().into_data_stream();
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|e| ApiError::Failed(anyhow!("receiving the document: {e}")))?;
        if document.len() + piece.len() > most {
            return Err(too_large());
        }
        document.extend_from_slice(&piece);
    }
    Ok(Bytes::from(document))
}

/// Parses a JSON body, answering a malformed one with a refusal that says what is wrong.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Refused(Refusal::invalid(format!("malformed request: {e}"))))
}

async fn execute(
    AxState(agent): AxState<Shared>,
    body: Bytes,
) -> Result<Json<ExecuteAnswer>, ApiError> {
    let request: Request = parse(&body)?;
    Ok(Json(agent.lock().await.execute(&request)?))
}

async fn apply(
    AxState(agent): AxState<Shared>,
    request: HttpRequest,
) -> Result<Response, ApiError> {
    let body = read_document(request, MAX_BODY).await?;
    // The transaction runs on a blocking thread, and the document is read beside it there
    // ([`document`]): a big one takes seconds, which a runtime worker should not spend (nor
    // dropping the document after it). Progress goes out as it happens if the document
    // asks for it, which is known once its requests begin.
    let (events, lines) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let (announce, streamed) = tokio::sync::oneshot::channel::<bool>();
    let applying = tokio::task::spawn_blocking(move || {
        let announce = move |streamed| {
            let _ = announce.send(streamed);
        };
        document::read_while(&body, announce, |document| {
            let mut report = |p: Progress| {
                let _ = events.send(p);
            };
            agent.blocking_lock().apply(document, &mut report)
        })
    });
    if !streamed.await.unwrap_or(false) {
        let mut answer = applied(applying.await)?;
        let encoding = Instant::now();
        let response = Json(&answer).into_response();
        answer.timings.answer = encoding.elapsed();
        log_applied(&answer);
        return Ok(response);
    }
    // Each event becomes one NDJSON line of a chunked answer as soon as it happens: the
    // progress lines until the transaction ends, then its answer or error.
    let stream = futures_util::stream::unfold(Some((lines, applying)), |state| async move {
        let (mut lines, applying) = state?;
        let (event, rest) = match lines.recv().await {
            Some(progress) => (ApplyEvent::Progress(progress), Some((lines, applying))),
            None => match applied(applying.await) {
                Ok(answer) => {
                    // The answer is encoded as the stream sends it: not timed here.
                    log_applied(&answer);
                    (ApplyEvent::Answer(answer), None)
                }
                Err(e) => (ApplyEvent::Error(e.body()), None),
            },
        };
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rest))
    });
    let headers = [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

/// What the thread applying a document ended with.
fn applied(
    result: Result<Result<ApplyAnswer, ApiError>, tokio::task::JoinError>,
) -> Result<ApplyAnswer, ApiError> {
    result.context("the thread applying the document")?
}

/// Logs where an applied document's time went.
fn log_applied(answer: &ApplyAnswer) {
    let kind = if answer.applied { "apply" } else { "dry run" };
    log::info!("{kind} of {} requests took {}", answer.requests, answer.timings);
}

fn kind(name: &str) -> Result<Kind, ApiError> {
    Kind::from_name(name)
        .ok_or_else(|| ApiError::Refused(Refusal::invalid(format!("no resource kind {name:?}"))))
}

async fn list(
    AxState(agent): AxState<Shared>,
    UrlPath(kind_name): UrlPath<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let kind = kind(&kind_name)?;
    Ok(Json(agent.lock().await.list(kind)?))
}

async fn show(
    AxState(agent): AxState<Shared>,
    UrlPath((kind_name, id)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = kind(&kind_name)?;
    Ok(Json(agent.lock().await.describe(&Key::new(kind, id))?))
}

async fn egress(
    AxState(agent): AxState<Shared>,
    UrlPath(ip): UrlPath<String>,
) -> Result<Json<Egress>, ApiError> {
    let ip: Ipv4Addr = ip.parse().map_err(|_| {
        ApiError::Refused(Refusal::invalid(format!("{ip:?} is not an IPv4 address")))
    })?;
    Ok(Json(agent.lock().await.egress(ip)))
}

async fn stats(AxState(agent): AxState<Shared>) -> Result<Json<StatsView>, ApiError> {
    Ok(Json(agent.lock().await.stats()?))
}

/// `eip=E&private_ip=P`, both optional: what `nat sessions` is narrowed to.
fn session_filter(query: Option<&str>) -> Result<(Option<Ipv4Addr>, Option<Ipv4Addr>), Refusal> {
    let (mut eip, mut private_ip) = (None, None);
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "eip" => &mut eip,
            "private_ip" => &mut private_ip,
            _ => {
                return Err(Refusal::invalid(format!(
                    "unknown parameter {name:?}: sessions are filtered by eip and private_ip"
                )));
            }
        };
        let address = value
            .parse()
            .map_err(|_| Refusal::invalid(format!("{name}={value:?} is not an IPv4 address")))?;
        *slot = Some(address);
    }
    Ok((eip, private_ip))
}

async fn nat_sessions(
    AxState(agent): AxState<Shared>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<SnatSessionView>>, ApiError> {
    let (eip, private_ip) = session_filter(query.as_deref()).map_err(ApiError::Refused)?;
    Ok(Json(agent.lock().await.nat_sessions(eip, private_ip)?))
}

async fn nat_gateway(
    AxState(agent): AxState<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<NatGatewayView>, ApiError> {
    Ok(Json(agent.lock().await.nat_gateway_view(&id)?))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    /// A request whose body comes in `pieces`, announcing `length` if given.
    fn document_request(pieces: &[&'static str], length: Option<usize>) -> HttpRequest {
        let mut request = HttpRequest::builder().method("POST").uri("/v1/apply");
        if let Some(length) = length {
            request = request.header(axum::http::header::CONTENT_LENGTH, length);
        }
        let pieces: Vec<_> =
            pieces.iter().map(|piece| Ok::<_, std::io::Error>(Bytes::from(*piece))).collect();
        request.body(Body::from_stream(futures_util::stream::iter(pieces))).unwrap()
    }

    fn read(request: HttpRequest, most: usize) -> Result<Bytes, ApiError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(read_document(request, most))
    }

    #[test]
    fn a_document_is_read_whole_and_only_up_to_its_limit() {
        let pieces = ["{\"requests\"", ":[]", "}"];
        // Announced or not, the pieces come out joined.
        for length in [Some(15), None] {
            let read = read(document_request(&pieces, length), 15).expect("within the limit");
            assert_eq!(&read[..], b"{\"requests\":[]}");
        }
        // Over the limit: refused when announced, and when the pieces pass it.
        for (length, most) in [(Some(15), 14), (None, 14), (Some(3), 14)] {
            match read(document_request(&pieces, length), most) {
                Err(ApiError::Refused(refusal)) => {
                    assert_eq!(refusal.code, crate::model::codes::INVALID_ARGUMENT);
                    assert!(refusal.message.contains("over 14 bytes"), "{refusal}");
                }
                other => panic!("{length:?} of at most {most}: {other:?}"),
            }
        }
    }

    #[test]
    fn sessions_are_filtered_by_eip_and_private_ip() {
        let eip: Ipv4Addr = "203.0.113.14".parse().unwrap();
        let private: Ipv4Addr = "10.0.1.10".parse().unwrap();
        assert_eq!(session_filter(None), Ok((None, None)));
        assert_eq!(session_filter(Some("eip=203.0.113.14")), Ok((Some(eip), None)));
        assert_eq!(
            session_filter(Some("private_ip=10.0.1.10&eip=203.0.113.14")),
            Ok((Some(eip), Some(private)))
        );
        let bad = session_filter(Some("eip=nope")).unwrap_err();
        assert!(bad.message.contains("not an IPv4"), "{bad}");
        let unknown = session_filter(Some("port=80")).unwrap_err();
        assert_eq!(unknown.code, crate::model::codes::INVALID_ARGUMENT);
    }
}

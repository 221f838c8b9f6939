//! The HTTP request path: route, answer locally or forward upstream, log.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::Shared;
use super::upstream::{UpstreamBody, random, request_id};
use crate::config::{Action, HashPolicy, HeaderEdits, Redirect};
use crate::lb::breaker::RequestPermit;
use crate::lb::maglev;
use crate::lb::outlier::Outcome;
use crate::lb::retry::{
    Attempt, MAX_OVERRIDE_RETRIES, RetryOn, budget_allows, parse_override, retriable,
};
use crate::metrics::RequestLabels;
use crate::route::{self, Decision, RequestHead};

/// The response body type of every answer.
pub type ResBody = BoxBody<Bytes, BoxError>;

/// Errors of response bodies: the upstream's, or the route timeout passing mid-body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An upstream response body that fails once the route's deadline passes, so the route timeout
/// bounds the whole exchange as in Envoy: the head before it gets a 504, a body still streaming
/// after it is cut off (HTTP/1 closes the connection, HTTP/2 resets the stream).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(
                "upstream response body not finished within the route timeout".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is known about the downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Name of the listener that accepted it.
    pub listener: Arc<str>,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The client's address.
    pub peer: SocketAddr,
    /// SNI of a TLS connection.
    pub sni: Option<Arc<str>>,
    /// The listener's request-duration histogram, looked up once per connection.
    pub duration: prometheus_client::metrics::histogram::Histogram,
    /// Whether the client is in the listener's `trustedSources` (its `x-envoy-*` override
    /// headers are honoured).
    pub trusted: bool,
}

/// The fields of one access log line, filled in as the request progresses.
#[derive(Debug)]
struct AccessLog {
    /// Whether the access log is on; when off, fields only it needs are not filled.
    enabled: bool,
    start: Instant,
    start_time: SystemTime,
    method: String,
    path: String,
    protocol: &'static str,
    authority: String,
    response_code: u16,
    response_flags: &'static str,
    bytes_received: u64,
    bytes_sent: u64,
    upstream_host: String,
    upstream_cluster: String,
    route: String,
    request_id: String,
    x_forwarded_for: String,
    user_agent: String,
}

/// A response body that counts bytes and writes the access log line and metrics when it is done
/// (or dropped because the client went away).
pub struct LoggedBody {
    inner: ResBody,
    log: Option<Box<AccessLog>>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
            && let Some(log) = self.log.as_mut()
        {
            log.bytes_sent += data.len() as u64;
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            finish(&self.shared, &self.conn, *log);
        }
    }
}

fn finish(shared: &Shared, conn: &ConnInfo, log: AccessLog) {
    let elapsed = log.start.elapsed();
    conn.duration.observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "causeway::access",
        start_time = %rfc3339(log.start_time),
        method = %log.method,
        path = %log.path,
        protocol = log.protocol,
        authority = %log.authority,
        response_code = log.response_code,
        response_flags = log.response_flags,
        bytes_received = log.bytes_received,
        bytes_sent = log.bytes_sent,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        upstream_host = %log.upstream_host,
        upstream_cluster = %log.upstream_cluster,
        route_name = %log.route,
        listener = %conn.listener,
        requested_server_name = conn.sni.as_deref().unwrap_or(""),
        downstream_remote_address = %conn.peer,
        x_forwarded_for = %log.x_forwarded_for,
        request_id = %log.request_id,
        user_agent = %log.user_agent,
    );
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            listener: conn.listener.to_string(),
            route: log.route,
            cluster: log.upstream_cluster,
            code: log.response_code,
        })
        .inc();
}

/// Formats a time as RFC 3339 UTC with milliseconds, without a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<ResBody> {
    let mut res = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    res
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Serves one request; never fails (errors become 4xx/5xx answers).
pub async fn serve(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<LoggedBody>, Infallible> {
    let enabled = tracing::enabled!(target: "causeway::access", tracing::Level::INFO);
    let text = |f: &dyn Fn() -> String| if enabled { f() } else { String::new() };
    let mut log = Box::new(AccessLog {
        enabled,
        start: Instant::now(),
        start_time: SystemTime::now(),
        method: text(&|| req.method().as_str().to_owned()),
        path: text(&|| {
            req.uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
        }),
        protocol: protocol_name(req.version()),
        authority: String::new(),
        response_code: 0,
        response_flags: "-",
        bytes_received: req.body().size_hint().exact().unwrap_or(0),
        bytes_sent: 0,
        upstream_host: String::new(),
        upstream_cluster: String::new(),
        route: String::new(),
        request_id: String::new(),
        x_forwarded_for: String::new(),
        user_agent: text(&|| {
            req.headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        }),
    });
    let res = handle(&shared, &conn, req, &mut log).await;
    log.response_code = res.status().as_u16();
    let (parts, body) = res.into_parts();
    Ok(Response::from_parts(
        parts,
        LoggedBody {
            inner: body,
            log: Some(log),
            conn,
            shared,
        },
    ))
}

async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
    log: &mut AccessLog,
) -> Response<ResBody> {
    let state = shared.state.load_full();
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
        .to_owned();
    if log.enabled {
        log.authority.clone_from(&host);
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);

    let Some(router) = state.routers.get(conn.listener.as_ref()) else {
        log.response_flags = "NR";
        return full(StatusCode::NOT_FOUND, "");
    };
    if router.https_redirect {
        let to = Redirect {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: None,
            response_code: 301,
        };
        let mut res = full(StatusCode::MOVED_PERMANENTLY, "");
        if let Ok(v) = HeaderValue::from_str(&route::redirect_location(
            &to,
            conn.scheme,
            &host,
            &path,
            query.as_deref(),
        )) {
            res.headers_mut().insert(LOCATION, v);
        }
        return res;
    }
    let head = RequestHead {
        method: req.method().as_str(),
        host: &host,
        path: &path,
        query: query.as_deref(),
        headers: req.headers(),
    };
    let Decision::Matched { route, .. } = router.router.route(&head) else {
        log.response_flags = "NR";
        return full(StatusCode::NOT_FOUND, "");
    };
    log.route.clone_from(&route.name);
    let mut res = match &route.action {
        Action::DirectResponse(d) => full(
            StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK),
            d.body.clone(),
        ),
        Action::Redirect(r) => {
            let mut res = full(
                StatusCode::from_u16(r.response_code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                "",
            );
            let loc = route::redirect_location(r, conn.scheme, &host, &path, query.as_deref());
            if let Ok(v) = HeaderValue::from_str(&loc) {
                res.headers_mut().insert(LOCATION, v);
            }
            res
        }
        Action::Forward(fwd) => {
            let Some(choice) = route::pick_weighted(&fwd.clusters, random()) else {
                log.response_flags = "UH";
                return full(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
            };
            log.upstream_cluster.clone_from(&choice.name);
            let Some(cluster) = state.clusters.get(&choice.name) else {
                log.response_flags = "UH";
                return full(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
            };
            let new_path =
                route::rewrite_path(&route.matcher, fwd.prefix_rewrite.as_deref(), &path);
            forward(
                shared,
                conn,
                req,
                cluster,
                &new_path,
                query.as_deref(),
                &host,
                fwd,
                &route.request_headers,
                log,
            )
            .await
        }
    };
    edit_headers(res.headers_mut(), &route.response_headers);
    res
}

/// Request bodies up to this size (declared up front) are kept in memory so that a retry or a
/// mirror copy can send them again; larger or chunked bodies stream once, without retries or
/// mirroring.
const REPLAY_BODY_LIMIT: u64 = 1024 * 1024;

/// `x-envoy-*` request headers that steer this hop: honoured from trusted sources only, and
/// never forwarded.
const OVERRIDE_RETRIES: &str = "x-envoy-max-retries";
const OVERRIDE_TIMEOUT: &str = "x-envoy-upstream-rq-timeout-ms";

/// Whether a share of `ppm` parts per million is hit.
fn hit(ppm: u32) -> bool {
    ppm >= 1_000_000 || (random() % 1_000_000) < u64::from(ppm)
}

/// Holds a circuit-breaker permit until the response body is done.
struct PermitBody {
    inner: ResBody,
    _permit: RequestPermit,
}

impl Body for PermitBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The Host of a mirrored request: `-shadow` appended to the host name (before any port).
pub fn shadow_host(host: &str) -> String {
    let (name, port) = route::split_host_port(host);
    match port {
        Some(p) if !name.is_empty() => format!("{name}-shadow:{p}"),
        _ => format!("{host}-shadow"),
    }
}

/// What one upstream attempt produced.
enum Tried {
    Answer(Response<Incoming>),
    Failed(Attempt),
    TooLarge,
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
    cluster: &Arc<super::upstream::UpstreamCluster>,
    path: &str,
    query: Option<&str>,
    host: &str,
    fwd: &crate::config::Forward,
    edits: &HeaderEdits,
    log: &mut AccessLog,
) -> Response<ResBody> {
    let limit = shared.limits.max_request_body;
    let declared = req.body().size_hint().exact().or_else(|| {
        req.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    });
    if let Some(len) = declared
        && len > limit
    {
        return full(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    if let Some(f) = &fwd.fault {
        if let Some((delay, ppm)) = f.delay
            && hit(ppm)
        {
            log.response_flags = "DI";
            tokio::time::sleep(delay).await;
        }
        if let Some((status, ppm)) = f.abort
            && hit(ppm)
        {
            log.response_flags = "FI";
            return full(
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "fault filter abort",
            );
        }
    }
    let (mut parts, body) = req.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);

    // Per-request overrides: trusted callers only (see docs/gateway.md, "Retries").
    // Borrowed from the route unless a trusted override replaces it (no copy per request).
    let mut retries = fwd.retries.as_ref().map(std::borrow::Cow::Borrowed);
    let mut timeout = fwd.timeout;
    if headers.contains_key(OVERRIDE_RETRIES) || headers.contains_key(OVERRIDE_TIMEOUT) {
        if conn.trusted {
            if let Some(n) = headers
                .get(OVERRIDE_RETRIES)
                .and_then(|v| parse_override(v.as_bytes()))
            {
                let n = n.min(u64::from(MAX_OVERRIDE_RETRIES)) as u32;
                let mut p = retries
                    .map(|r| r.into_owned())
                    .unwrap_or(crate::config::RetryPolicy {
                        attempts: 0,
                        per_try_timeout: None,
                        retry_on: RetryOn::FIVE_XX,
                        retriable_status_codes: Vec::new(),
                    });
                p.attempts = n;
                retries = Some(std::borrow::Cow::Owned(p));
            }
            if let Some(ms) = headers
                .get(OVERRIDE_TIMEOUT)
                .and_then(|v| parse_override(v.as_bytes()))
            {
                timeout = (ms > 0).then(|| std::time::Duration::from_millis(ms));
            }
        }
        headers.remove(OVERRIDE_RETRIES);
        headers.remove(OVERRIDE_TIMEOUT);
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);

    strip_hop_by_hop(&mut headers);
    // Host: the rewrite, else what the client addressed (HTTP/2 clients send only :authority).
    let host_value = fwd.host_rewrite.as_deref().unwrap_or(host);
    if let Ok(v) = HeaderValue::from_str(host_value) {
        headers.insert(HOST, v);
    }
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {}", conn.peer.ip()),
        None => conn.peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    log.x_forwarded_for = xff;
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if conn.scheme == "https" {
            "https"
        } else {
            "http"
        }),
    );
    let rid = match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => {
            if log.enabled {
                id.to_owned()
            } else {
                String::new()
            }
        }
        _ => {
            let id = request_id();
            if let Ok(v) = HeaderValue::from_str(&id) {
                headers.insert("x-request-id", v);
            }
            id
        }
    };
    log.request_id = rid;
    edit_headers(&mut headers, edits);

    // Consistent hashing: the key, and a cookie to issue when the request has none.
    let mut issue_cookie = None;
    let key = match &cluster.config.hash {
        None => None,
        Some(HashPolicy::Header(name)) => headers
            .get(name.as_str())
            .map(|v| maglev::hash(v.as_bytes())),
        Some(HashPolicy::SourceIp) => Some(maglev::hash(conn.peer.ip().to_string().as_bytes())),
        Some(HashPolicy::Cookie { name, ttl, path }) => match cookie(&headers, name) {
            Some(v) => Some(maglev::hash(v.as_bytes())),
            None => {
                let value = format!("{:016x}", random());
                let key = maglev::hash(value.as_bytes());
                issue_cookie = Some(format!(
                    "{name}={value}; Max-Age={}; Path={path}; HttpOnly",
                    ttl.as_secs()
                ));
                Some(key)
            }
        },
    };
    let picked = match key {
        Some(k) => cluster.pick_hash(k),
        None => cluster.pick(random()),
    };
    let Some((mut index, mut endpoint)) = picked else {
        log.response_flags = "UH";
        return full(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };

    // Circuit breaking: a request slot, or overflow.
    let permit = if cluster.config.limits.limits_requests() {
        let may_wait = cluster.config.protocol == crate::config::UpstreamProtocol::Http1;
        let wait = cluster.breaker.request(may_wait);
        let got = match deadline {
            Some(at) => match tokio::time::timeout_at(at, wait).await {
                Ok(p) => p,
                Err(_) => {
                    log.response_flags = "UT";
                    return full(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout");
                }
            },
            None => wait.await,
        };
        match got {
            Some(p) => Some(p),
            None => {
                cluster.metrics().overflow.inc();
                log.response_flags = "UO";
                let mut res = full(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                );
                res.headers_mut()
                    .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
                return res;
            }
        }
    } else {
        None
    };

    // A body that may be sent more than once is read into memory first.
    let replay = (retries.is_some() || fwd.mirror.is_some())
        && declared.is_some_and(|n| n <= REPLAY_BODY_LIMIT);
    let mut stream_body = None;
    let mut buffered = Bytes::new();
    if replay {
        match Limited::new(body, REPLAY_BODY_LIMIT as usize)
            .collect()
            .await
        {
            Ok(b) => buffered = b.to_bytes(),
            Err(_) => return full(StatusCode::BAD_REQUEST, "request body could not be read"),
        }
    } else {
        let b: UpstreamBody = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .map_err(|e| e as Box<dyn std::error::Error + Send + Sync>)
            .boxed();
        stream_body = Some(b);
    }

    if let Some(m) = &fwd.mirror
        && replay
        && hit(m.ppm)
    {
        mirror(
            shared, m, &parts, &headers, &buffered, path, query, host_value,
        );
    }

    let max_attempts = if replay {
        1 + retries.as_ref().map_or(0, |r| r.attempts)
    } else {
        1
    };
    let mut tried: Vec<usize> = Vec::new();
    let mut retry_permit = None;
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        if log.enabled {
            log.upstream_host = endpoint.to_string();
        }
        let uri = match query {
            Some(q) => format!("http://{endpoint}{path}?{q}"),
            None => format!("http://{endpoint}{path}"),
        };
        let Ok(uri) = uri.parse::<Uri>() else {
            return full(StatusCode::BAD_REQUEST, "request path cannot be forwarded");
        };
        let last = attempt >= max_attempts;
        let body = match stream_body.take() {
            Some(b) => b,
            None => Full::new(buffered.clone())
                .map_err(|never: Infallible| match never {})
                .boxed(),
        };
        let mut up = Request::new(body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = if last && !replay {
            std::mem::take(&mut headers)
        } else {
            headers.clone()
        };
        *up.version_mut() = Version::HTTP_11;

        let guard = cluster.track(index);
        let active = &cluster.metrics().in_flight;
        active.inc();
        let sent = cluster.client().request(up);
        let per_try = retries.as_ref().and_then(|r| r.per_try_timeout);
        let try_deadline = match (per_try, deadline) {
            (Some(t), Some(at)) => Some((tokio::time::Instant::now() + t).min(at)),
            (Some(t), None) => Some(tokio::time::Instant::now() + t),
            (None, at) => at,
        };
        let outcome = match try_deadline {
            Some(at) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r.map_err(Some),
                Err(_) => Err(None),
            },
            None => sent.await.map_err(Some),
        };
        active.dec();
        drop(guard);
        let tried_now = match outcome {
            Ok(res) => Tried::Answer(res),
            Err(None) => Tried::Failed(Attempt::Timeout),
            Err(Some(e)) if body_too_large(&e) => Tried::TooLarge,
            Err(Some(e)) => {
                cluster.metrics().failures.inc();
                let chain = error_chain(&e);
                tracing::warn!(
                    cluster = %cluster.config.name,
                    upstream_host = %endpoint,
                    error = %chain,
                    "upstream request failed"
                );
                let kind = if e.is_connect() {
                    Attempt::ConnectFailure
                } else {
                    Attempt::Reset
                };
                Tried::Failed(kind)
            }
        };
        let what = match &tried_now {
            Tried::Answer(res) => Attempt::Status(res.status().as_u16()),
            Tried::Failed(kind) => *kind,
            Tried::TooLarge => break tried_now,
        };
        cluster.record(
            index,
            match what {
                Attempt::Status(s) => Outcome::Status(s),
                _ => Outcome::LocalFailure,
            },
        );
        let Some(policy) = retries.as_ref() else {
            break tried_now;
        };
        if last || !retriable(policy.retry_on, &policy.retriable_status_codes, what) {
            break tried_now;
        }
        if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
            break tried_now;
        }
        // The retry budget: retries in flight against requests in flight.
        let limits = &cluster.config.limits;
        let requests = cluster.metrics().in_flight.get().max(0) as u64 + 1;
        if retry_permit.is_none() {
            retry_permit = cluster.breaker.try_retry(|active| {
                budget_allows(
                    requests,
                    active,
                    limits.retry_budget_percent,
                    limits.min_retry_concurrency,
                    limits.max_retries,
                )
            });
            if retry_permit.is_none() {
                cluster.metrics().retries_overflow.inc();
                break tried_now;
            }
        }
        cluster.metrics().retries.inc();
        tried.push(index);
        let Some((i, e)) = cluster.pick_other(&tried) else {
            break tried_now;
        };
        (index, endpoint) = (i, e);
    };
    drop(retry_permit);
    let mut res = match result {
        Tried::Answer(res) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_11;
            if attempt > 1 && parts.status.is_server_error() {
                log.response_flags = "URX";
            }
            let body = match deadline {
                Some(at) => DeadlineBody {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep_until(at)),
                }
                .boxed(),
                None => body.map_err(BoxError::from).boxed(),
            };
            Response::from_parts(parts, body)
        }
        Tried::TooLarge => full(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        Tried::Failed(Attempt::Timeout) => {
            log.response_flags = "UT";
            full(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
        }
        Tried::Failed(kind) => {
            log.response_flags = if kind == Attempt::ConnectFailure {
                "UF"
            } else {
                "UC"
            };
            full(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
            )
        }
    };
    if let Some(c) = issue_cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        res.headers_mut().append(http::header::SET_COOKIE, v);
    }
    match permit {
        Some(p) => {
            let (parts, body) = res.into_parts();
            Response::from_parts(
                parts,
                PermitBody {
                    inner: body,
                    _permit: p,
                }
                .boxed(),
            )
        }
        None => res,
    }
}

/// Sends a copy of the request to the mirror cluster, fire and forget: its answer (or
/// failure) is discarded and never delays the original.
#[allow(clippy::too_many_arguments)]
fn mirror(
    shared: &Shared,
    m: &crate::config::Mirror,
    parts: &http::request::Parts,
    headers: &HeaderMap,
    body: &Bytes,
    path: &str,
    query: Option<&str>,
    host: &str,
) {
    let state = shared.state.load();
    let Some(cluster) = state.clusters.get(&m.cluster).cloned() else {
        return;
    };
    let Some((_, endpoint)) = cluster.pick(random()) else {
        return;
    };
    let uri = match query {
        Some(q) => format!("http://{endpoint}{path}?{q}"),
        None => format!("http://{endpoint}{path}"),
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return;
    };
    let mut headers = headers.clone();
    if let Ok(v) = HeaderValue::from_str(&shadow_host(host)) {
        headers.insert(HOST, v);
    }
    let mut up = Request::new(
        Full::new(body.clone())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    *up.version_mut() = Version::HTTP_11;
    tokio::spawn(async move {
        let sent = cluster.client().request(up);
        match tokio::time::timeout(std::time::Duration::from_secs(30), sent).await {
            Ok(Ok(res)) => {
                // Read the answer so the connection can be reused.
                let _ = res.into_body().collect().await;
            }
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.config.name, error = %e, "mirror request failed");
            }
            Err(_) => {}
        }
    });
}

/// Whether forwarding failed because a streamed (chunked) request body passed the limit.
fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The full `a: b: c` chain of an error and its sources.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Removes hop-by-hop headers and those the Connection header names, in place.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    // gRPC needs `te: trailers` end to end; any other TE is hop-by-hop.
    if headers
        .get_all(http::header::TE)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(http::header::TE);
    }
}

fn edit_headers(headers: &mut HeaderMap, edits: &HeaderEdits) {
    if edits.is_empty() {
        return;
    }
    for name in &edits.remove {
        headers.remove(name.as_str());
    }
    for (k, v) in &edits.set {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    for (k, v) in &edits.add {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_392_000_123);
        assert_eq!(rfc3339(t), "2026-11-23T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        let mut out = h.clone();
        strip_hop_by_hop(&mut out);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["te", "x-keep"]);
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn header_edits_apply_remove_set_add() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-gone", HeaderValue::from_static("1"));
        let edits = HeaderEdits {
            set: vec![("x-a".into(), "new".into())],
            add: vec![("x-a".into(), "more".into())],
            remove: vec!["x-gone".into()],
        };
        edit_headers(&mut h, &edits);
        let a: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(a, ["new", "more"]);
        assert!(!h.contains_key("x-gone"));
    }
}

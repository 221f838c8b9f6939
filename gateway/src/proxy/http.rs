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
use crate::config::{Action, HeaderEdits, Redirect};
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
    if let Some(len) = req.body().size_hint().exact().or_else(|| {
        req.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    }) && len > limit
    {
        return full(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let Some((index, endpoint)) = cluster.pick(random()) else {
        log.response_flags = "UH";
        return full(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
    };
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
    let (mut parts, body) = req.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
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

    let body: UpstreamBody = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .map_err(|e| e as Box<dyn std::error::Error + Send + Sync>)
        .boxed();
    let mut up = Request::new(body);
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = headers;
    *up.version_mut() = Version::HTTP_11;

    let guard = cluster.track(index);
    let active = &cluster.metrics().in_flight;
    active.inc();
    let sent = cluster.client().request(up);
    let deadline = fwd.timeout.map(|t| tokio::time::Instant::now() + t);
    let result = match fwd.timeout {
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(r) => r,
            Err(_) => {
                active.dec();
                drop(guard);
                log.response_flags = "UT";
                return full(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout");
            }
        },
        None => sent.await,
    };
    active.dec();
    drop(guard);
    match result {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_11;
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
        Err(e) if body_too_large(&e) => {
            full(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Err(e) => {
            cluster.metrics().failures.inc();
            let chain = error_chain(&e);
            tracing::warn!(
                cluster = %cluster.config.name,
                upstream_host = %endpoint,
                error = %chain,
                "upstream request failed"
            );
            log.response_flags = if e.is_connect() { "UF" } else { "UC" };
            full(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers",
            )
        }
    }
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

//! The controller's HTTP API: Kubernetes-shaped paths over the [`Store`].
//!
//! - `/apis/GROUP/VERSION/[namespaces/NS/]PLURAL[/NAME][/status]` for the causeway.io and
//!   networking.istio.io kinds, `/api/v1/namespaces/NS/secrets[/NAME]` for Secrets;
//! - GET (one object, or a list with `?labelSelector=`; `?watch=true` streams
//!   newline-delimited `{"type": "ADDED", "object": {...}}` events), PUT as apply (create or
//!   replace; a `metadata.resourceVersion` in the body is a precondition → 409 on conflict),
//!   POST to a collection to create, DELETE, PUT `.../status`;
//! - every write is decoded and validated first: an invalid object is never stored, the answer
//!   is 422 with a Kubernetes `Status` whose `details.causes` list every field error;
//! - bearer-token authentication on every request (the token file is described in
//!   `docs/controller.md`).
//!
//! Errors are Kubernetes `Status` objects, so kubectl-style clients understand them.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{Expect, ObjectKey, ResourceType, Selector, Store, StoreError};

pub mod resources;

use resources::Served;

/// The largest request body accepted (Kubernetes' own limit is about 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Header telling an apply's client what happened: `created`, `configured` or `unchanged`.
pub const OUTCOME_HEADER: &str = "x-causeway-outcome";

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Where objects live.
    pub store: Arc<dyn Store>,
    /// The bearer token every request must carry; `None` turns authentication off (tests and
    /// explicitly insecure setups only).
    pub token: Option<Arc<str>>,
    /// The controller's latest desired state (`causeway get rendered`); `None` when the API
    /// runs without a reconcile loop (tests of the API alone).
    pub desired: Option<tokio::sync::watch::Receiver<Arc<crate::reconcile::Desired>>>,
    /// The xDS server's sync status (`GET /apis/causeway.io/v1alpha1/proxies`); `None` when
    /// the controller serves no xDS.
    pub proxies: Option<causeway_xds::StatusRegistry>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let ns_collection = get(list).post(create);
    let object = get(get_object).put(apply).delete(delete_object);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // A static path wins over the `{plural}` routes below.
        .route(crate::proxies::PATH, get(proxies))
        .route("/apis/{group}/{version}/{plural}", get(list_all))
        .route("/apis/{group}/{version}/{plural}/{name}", object.clone())
        .route(
            "/apis/{group}/{version}/{plural}/{name}/status",
            put(apply_status),
        )
        .route(
            "/apis/{group}/{version}/{plural}/{name}/rendered",
            get(rendered),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
            ns_collection.clone(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            object.clone(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}/status",
            put(apply_status),
        )
        .route("/api/{version}/{plural}", get(list_all_core))
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}",
            ns_collection,
        )
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}/{name}",
            object,
        )
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `GET /apis/causeway.io/v1alpha1/clusters/NAME/rendered`: what member cluster NAME gets from
/// the latest translation (`causeway get rendered --cluster NAME`).
async fn rendered(
    State(state): State<ApiState>,
    Path(p): Path<PathParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let name = p.name.clone().unwrap_or_default();
    if p.group.as_deref() != Some("causeway.io") || p.plural != "clusters" {
        return Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "only clusters have a rendered view: /apis/causeway.io/v1alpha1/clusters/NAME/rendered",
            None,
        ));
    }
    let Some(desired) = &state.desired else {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this API runs without a reconcile loop; nothing is rendered",
            None,
        ));
    };
    let d = desired.borrow().clone();
    match d.rendered(&name) {
        Some(v) => Ok(axum::Json(v)),
        None => Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "cluster {name:?} is not registered (or not translated yet); list clusters with `causeway get clusters`"
            ),
            None,
        )),
    }
}

/// `GET /apis/causeway.io/v1alpha1/proxies`: every connected proxy's sync status per xDS type
/// (`causeway status --proxies`).
async fn proxies(State(state): State<ApiState>) -> Result<axum::Json<Value>, ApiError> {
    let Some(registry) = &state.proxies else {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this controller serves no xDS (--xds-listen off): no proxy can connect to it",
            None,
        ));
    };
    Ok(axum::Json(crate::proxies::list_view(&registry.proxies())))
}

/// A failed request, answered as a Kubernetes `Status`.
#[derive(Debug)]
pub struct ApiError {
    code: StatusCode,
    body: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, axum::Json(self.body)).into_response()
    }
}

/// A Kubernetes `Status` answer.
fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> ApiError {
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    ApiError { code, body }
}

fn store_error(e: &StoreError) -> ApiError {
    let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = match e {
        StoreError::NotFound { .. } => "NotFound",
        StoreError::AlreadyExists { .. } => "AlreadyExists",
        StoreError::Conflict { .. } => "Conflict",
        StoreError::Gone { .. } => "Expired",
        StoreError::Invalid { .. } => "Invalid",
        StoreError::Selector(_) => "BadRequest",
        StoreError::Unavailable { .. } => "ServiceUnavailable",
        _ => "InternalError",
    };
    if code.is_server_error() {
        tracing::error!(error = %e, "store error");
    }
    status(code, reason, &e.to_string(), None)
}

/// Compares tokens in time independent of where they differ.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn authenticate(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(want) = &state.token else {
        return next.run(req).await;
    };
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if token_matches(t.trim().as_bytes(), want.as_bytes()) => next.run(req).await,
        _ => status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the token \
             from the controller's data directory (file `token`)",
            None,
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PathParams {
    group: Option<String>,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    label_selector: Option<String>,
    watch: Option<bool>,
    resource_version: Option<String>,
}

/// Resolves the served kind of a path, or answers 404.
fn served(p: &PathParams) -> Result<&'static Served, ApiError> {
    let group = p.group.as_deref().unwrap_or("");
    let s = resources::by_path(group, &p.version, &p.plural).ok_or_else(|| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "the server does not serve {}/{} {:?}; served: {}",
                group,
                p.version,
                p.plural,
                resources::cli_names()
            ),
            None,
        )
    })?;
    match (s.namespaced, &p.namespace) {
        (false, Some(_)) => Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "{} is cluster-scoped: drop namespaces/NS from the path",
                s.kind
            ),
            None,
        )),
        (true, None) if p.name.is_some() => Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!(
                "{} is namespaced: use .../namespaces/NS/{}/NAME",
                s.kind, s.plural
            ),
            None,
        )),
        _ => Ok(s),
    }
}

fn resource_type(s: &Served) -> ResourceType {
    ResourceType::new(s.group, s.kind)
}

fn key(s: &Served, namespace: Option<&str>, name: &str) -> ObjectKey {
    match namespace {
        Some(ns) if s.namespaced => ObjectKey::namespaced(resource_type(s), ns, name),
        _ => ObjectKey::cluster_scoped(resource_type(s), name),
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, axum::Json(v.clone())).into_response()
}

async fn list_all(
    State(st): State<ApiState>,
    Path((group, version, plural)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let p = PathParams {
        group: Some(group),
        version,
        namespace: None,
        plural,
        name: None,
    };
    list_inner(st, p, q).await
}

async fn list_all_core(
    State(st): State<ApiState>,
    Path((version, plural)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let p = PathParams {
        group: None,
        version,
        namespace: None,
        plural,
        name: None,
    };
    list_inner(st, p, q).await
}

async fn list(
    State(st): State<ApiState>,
    Path(p): Path<PathParams>,
    Query(q): Query<ListQuery>,
) -> Response {
    list_inner(st, p, q).await
}

async fn list_inner(st: ApiState, p: PathParams, q: ListQuery) -> Response {
    let s = match served(&p) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let selector = match q.label_selector.as_deref().filter(|t| !t.is_empty()) {
        None => Selector::everything(),
        Some(text) => match Selector::parse(text) {
            Ok(sel) => sel,
            Err(e) => return store_error(&StoreError::Selector(e)).into_response(),
        },
    };
    let rt = resource_type(s);
    let namespace = p.namespace.as_deref();
    if q.watch == Some(true) {
        let from = match q.resource_version.as_deref().map(str::parse::<u64>) {
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "resourceVersion must be a number from a previous list or event",
                    None,
                )
                .into_response();
            }
            None => match st.store.revision().await {
                Ok(v) => v,
                Err(e) => return store_error(&e).into_response(),
            },
        };
        let stream = match st.store.watch(&rt, namespace, from).await {
            Ok(s) => s,
            Err(e) => return store_error(&e).into_response(),
        };
        // Kubernetes' selector semantics: an object that starts matching is ADDED, one that
        // stops matching is DELETED.
        let body = stream
            .filter_map(move |ev| {
                let kept = match ev {
                    Ok(ev) => ev.select(&selector).map(Ok),
                    Err(e) => Some(Err(e)),
                };
                async move { kept }
            })
            .map(|ev| {
                let line = match ev {
                    Ok(ev) => json!({"type": ev.event_type.to_string(), "object": ev.object}),
                    Err(e) => json!({"type": "ERROR", "object": {
                        "apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "message": e.to_string(), "code": e.http_status()}}),
                };
                let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
                bytes.push(b'\n');
                Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
            });
        let mut resp = Response::new(Body::from_stream(body));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;stream=watch"),
        );
        return resp;
    }
    match st.store.list(&rt, namespace, &selector).await {
        Ok(l) => json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": s.api_version(),
                "kind": format!("{}List", s.kind),
                "metadata": {"resourceVersion": l.resource_version.to_string()},
                "items": l.items,
            }),
        ),
        Err(e) => store_error(&e).into_response(),
    }
}

async fn get_object(State(st): State<ApiState>, Path(p): Path<PathParams>) -> Response {
    let s = match served(&p) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let name = p.name.as_deref().unwrap_or_default();
    let k = key(s, p.namespace.as_deref(), name);
    match st.store.get(&k).await {
        Ok(Some(v)) => json_response(StatusCode::OK, &v),
        Ok(None) => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} {name:?} not found", s.qualified()),
            None,
        )
        .into_response(),
        Err(e) => store_error(&e).into_response(),
    }
}

/// Parses a request body as JSON, or YAML when the content type says so.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("yaml"));
    let parsed = if yaml {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the body is not a valid object: {e}"),
            None,
        )
    })
}

/// Fills `apiVersion`, `kind`, `metadata.name` and `metadata.namespace` from the path when the
/// body leaves them out, and refuses a body that names another object.
fn reconcile_identity(
    s: &Served,
    namespace: Option<&str>,
    name: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body must be an object with apiVersion, kind, metadata and spec",
            None,
        ));
    };
    let mismatch = |field: &str, body: &str, path: &str| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("{field} in the body is {body:?} but the URL says {path:?}"),
            None,
        )
    };
    for (field, want) in [("apiVersion", s.api_version()), ("kind", s.kind.to_owned())] {
        match map.get(field).and_then(Value::as_str) {
            None => {
                map.insert(field.to_owned(), Value::String(want));
            }
            Some(have) if have != want => return Err(mismatch(field, have, &want)),
            Some(_) => {}
        }
    }
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "metadata must be an object",
            None,
        ));
    };
    let pairs = [
        ("metadata.name", "name", name),
        ("metadata.namespace", "namespace", namespace),
    ];
    for (field, k, want) in pairs {
        let Some(want) = want else { continue };
        match meta.get(k).and_then(Value::as_str) {
            None => {
                meta.insert(k.to_owned(), Value::String(want.to_owned()));
            }
            Some(have) if have != want => return Err(mismatch(field, have, want)),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Decodes and validates an object; 422 with every field error when it is invalid. Warnings
/// travel back as `Warning` headers, as Kubernetes sends them.
fn validate(obj: &Value) -> Result<Vec<String>, ApiError> {
    let loaded = causeway_crds::document::load_value(0, obj.clone());
    let who = loaded.display_name();
    let mut causes = Vec::new();
    match &loaded.resource {
        Err(causeway_crds::document::LoadError::Decode(e)) => causes.push(json!({
            "field": e.path.to_string(), "message": e.message, "reason": "FieldValueInvalid"})),
        Err(e) => causes
            .push(json!({"field": "", "message": e.to_string(), "reason": "FieldValueInvalid"})),
        Ok(_) => {}
    }
    for f in loaded.report.errors() {
        causes.push(json!({"field": f.path.to_string(), "message": f.message, "reason": "FieldValueInvalid"}));
    }
    if !causes.is_empty() {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["field"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                )
            })
            .collect();
        return Err(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!("{who} is invalid: {}", summary.join("; ")),
            Some(json!({"name": loaded.name, "kind": loaded.kind, "causes": causes})),
        ));
    }
    Ok(loaded
        .report
        .findings()
        .iter()
        .filter(|f| f.severity == causeway_crds::Severity::Warning)
        .map(|f| format!("{}: {}", f.path, f.message))
        .collect())
}

fn expect_from(obj: &Value) -> Expect {
    match crate::store::resource_version(obj) {
        Some(v) => Expect::ResourceVersion(v),
        None => Expect::Any,
    }
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        // RFC 7234 warn-code 299 as Kubernetes uses; quotes and control characters stripped.
        let text: String = w.chars().filter(|c| *c != '"' && !c.is_control()).collect();
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

async fn write(
    st: ApiState,
    p: PathParams,
    headers: HeaderMap,
    body: Bytes,
    create_only: bool,
) -> Response {
    let s = match served(&p) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let mut obj = match parse_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = reconcile_identity(s, p.namespace.as_deref(), p.name.as_deref(), &mut obj) {
        return r.into_response();
    }
    if s.namespaced && obj.pointer("/metadata/namespace").is_none() {
        obj["metadata"]["namespace"] = Value::String("default".to_owned());
    }
    let warnings = match validate(&obj) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    let expect = if create_only {
        Expect::Absent
    } else {
        expect_from(&obj)
    };
    match st.store.put(obj, expect).await {
        Ok(applied) => {
            let code = match applied.outcome {
                crate::store::Outcome::Created => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            let mut resp = json_response(code, &applied.object);
            if let Ok(v) = HeaderValue::from_str(&applied.outcome.to_string()) {
                resp.headers_mut().insert(OUTCOME_HEADER, v);
            }
            with_warnings(resp, &warnings)
        }
        Err(e) => store_error(&e).into_response(),
    }
}

async fn apply(
    State(st): State<ApiState>,
    Path(p): Path<PathParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(st, p, headers, body, false).await
}

async fn create(
    State(st): State<ApiState>,
    Path(p): Path<PathParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write(st, p, headers, body, true).await
}

async fn apply_status(
    State(st): State<ApiState>,
    Path(p): Path<PathParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = match served(&p) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let obj = match parse_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(st_value) = obj.get("status").cloned() else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body must carry the object's status",
            None,
        )
        .into_response();
    };
    let name = p.name.as_deref().unwrap_or_default();
    let k = key(s, p.namespace.as_deref(), name);
    match st.store.put_status(&k, st_value, expect_from(&obj)).await {
        Ok(applied) => json_response(StatusCode::OK, &applied.object),
        Err(e) => store_error(&e).into_response(),
    }
}

async fn delete_object(State(st): State<ApiState>, Path(p): Path<PathParams>) -> Response {
    let s = match served(&p) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let name = p.name.as_deref().unwrap_or_default();
    let k = key(s, p.namespace.as_deref(), name);
    match st.store.delete(&k, Expect::Any).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => store_error(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
    }
}

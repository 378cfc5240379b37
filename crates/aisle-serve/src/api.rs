//! Routes, request checking and JSON bodies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use aisle_core::{normalize_query, Dataset, Kind, NodeId, ProductId, User, UserId};
use aisle_search::{HistoryInput, Mode, Request as SearchRequest, Results, SearchError, Searcher};

use crate::{App, ServeOptions};

/// The search page (one file, inline CSS and JS).
const PAGE: &str = include_str!("../assets/index.html");

/// Recent interactions `GET /users/{id}` lists.
const USER_RECENT: usize = 20;

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> ApiError {
        match e {
            SearchError::InvalidArgument(m) => ApiError::bad(m),
            other => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: other.to_string(),
            },
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let message = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
            _ => r.body_text(),
        };
        ApiError {
            status: r.status(),
            message,
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError {
            status: r.status(),
            message: r.body_text(),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Every route of the API and the page, with request metrics and the body limit.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.options.max_body_bytes;
    Router::new()
        .route("/", get(page))
        .route("/search", get(search_get).post(search_post))
        .route("/products/{id}", get(product))
        .route("/users", get(users))
        .route("/users/{id}", get(user))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(reload))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            bounded_body,
        ))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), track))
        .with_state(app)
}

/// Counts each answer under its route pattern (not the raw path, which would let clients mint
/// unbounded label values) and its status, with its latency.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(req).await;
    app.metrics.observe(
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// Reads a request's body before any handler runs, within bounds: a body declared larger than
/// `max_body_bytes` is a 413 before a byte of it is read (it was held open while the client
/// sent), and a body that does not arrive whole within the body timeout is a 408, so a client
/// trickling a body cannot hold a connection busy for ever.
async fn bounded_body(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let limit = app.options.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body of {n} bytes: at most {limit} are allowed"),
        }
        .into_response();
    }
    if declared == Some(0)
        || (declared.is_none() && !req.headers().contains_key(header::TRANSFER_ENCODING))
    {
        return next.run(req).await;
    }
    let wait = app.options.limits.body_timeout;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.to_string().contains("length limit exceeded"));
            if too_large {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    message: format!("request body over {limit} bytes"),
                }
            } else {
                ApiError::bad(format!("reading the request body: {e}"))
            }
            .into_response()
        }
        Err(_) => ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive whole within {:.1} s",
                wait.as_secs_f64()
            ),
        }
        .into_response(),
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see GET /healthz; the API is /search, /products/{id}, /users, /users/{id}, /metrics)")
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "method not allowed on this route".into(),
    }
}

/// `GET /search` parameters, all as text so that each is checked with a message that names it.
#[derive(Debug, Default, Deserialize)]
struct SearchParams {
    q: Option<String>,
    k: Option<String>,
    user: Option<String>,
    category: Option<String>,
    mode: Option<String>,
    explain: Option<String>,
}

/// One item of an inline history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryItem {
    product: String,
    /// view, click, add_to_cart or purchase [default: purchase].
    kind: Option<String>,
}

/// `POST /search` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    q: Option<String>,
    k: Option<usize>,
    user: Option<String>,
    history: Option<Vec<HistoryItem>>,
    category: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    explain: bool,
    /// Customer features (`segment` and the dataset's other `users` columns), for a visitor
    /// the store has no record of or with an inline history.
    customer: Option<BTreeMap<String, Value>>,
}

/// Fields of a request's `customer`, at most.
const MAX_CUSTOMER_FIELDS: usize = 32;

/// Bytes of a `customer` field's name or value, at most.
const MAX_CUSTOMER_BYTES: usize = 256;

/// A request's `customer` as the personalized tower reads a customer: `segment` as the segment,
/// every other field (a string, number or boolean) as a `users` column.
fn customer_of(fields: BTreeMap<String, Value>) -> ApiResult<User> {
    if fields.len() > MAX_CUSTOMER_FIELDS {
        return Err(ApiError::bad(format!(
            "customer: {} fields; at most {MAX_CUSTOMER_FIELDS} are allowed",
            fields.len()
        )));
    }
    let mut user = User {
        id: String::new(),
        segment: None,
        demographics: Vec::new(),
    };
    for (name, value) in fields {
        let value = match value {
            Value::String(v) => v,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::bad(format!(
                    "customer.{name}: expected a string, number or boolean, got {other}"
                )))
            }
        };
        if name.is_empty() || name.len() > MAX_CUSTOMER_BYTES || value.len() > MAX_CUSTOMER_BYTES {
            return Err(ApiError::bad(format!(
                "customer: field names and values must be 1 to {MAX_CUSTOMER_BYTES} bytes"
            )));
        }
        if name == "segment" {
            user.segment = Some(value);
        } else {
            user.demographics.push((name, value));
        }
    }
    Ok(user)
}

async fn search_get(
    State(app): State<Arc<App>>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(p) = params?;
    search_off_the_runtime(app, p.into_body()?).await
}

/// Runs a search on a blocking thread: a slow one (a large k, hybrid, explanations) must not
/// hold a runtime worker that `/healthz` and `/metrics` need. Measured at 10k products (`aisle
/// bench search --sizes 10000`, two runs each): running the search on the worker itself gave a
/// one-client p50 of 0.69 ms, this 0.85-0.88 ms, `block_in_place` 0.79-0.82 ms but a wrk p99 of
/// 131-134 ms against this one's 38-49 ms.
async fn search_off_the_runtime(app: Arc<App>, input: SearchBody) -> ApiResult<Json<Value>> {
    tokio::task::spawn_blocking(move || run_search(&app, input).map(Json))
        .await
        .map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("search failed: {e}"),
        })?
}

async fn search_post(
    State(app): State<Arc<App>>,
    body: Result<Json<SearchBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    search_off_the_runtime(app, body).await
}

/// A search from end to end, in named phases: [`SearchBody::parse`] checks what needs no
/// catalog, [`Resolved::new`] looks the names up in the Searcher in service, the Searcher
/// searches, and [`render`] writes the answer.
fn run_search(app: &App, input: SearchBody) -> ApiResult<Value> {
    let parsed = input.parse(&app.options)?;
    let s = app.searcher();
    let resolved = Resolved::new(&s, &parsed, &app.options)?;
    let request = resolved.request(&parsed);
    let start = Instant::now();
    let results = s.search(&request)?;
    let took_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(render(s.dataset(), &parsed, resolved, &results, took_ms))
}

impl SearchParams {
    /// Parse, for `GET /search`: the query string as the `POST` body it stands for (`k` a whole
    /// number, `explain` true/false/1/0, empty values as absent).
    fn into_body(self) -> ApiResult<SearchBody> {
        let k = match self.k.as_deref() {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<usize>()
                    .map_err(|_| ApiError::bad(format!("k: `{s}` is not a whole number")))?,
            ),
        };
        let explain = match self.explain.as_deref() {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(s) => {
                return Err(ApiError::bad(format!(
                    "explain: `{s}`: expected true or false"
                )))
            }
        };
        Ok(SearchBody {
            q: self.q,
            k,
            user: self.user.filter(|u| !u.is_empty()),
            history: None,
            category: self.category.filter(|c| !c.is_empty()),
            mode: self.mode.filter(|m| !m.is_empty()),
            explain,
            customer: None,
        })
    }
}

/// A search as checked before the catalog is read: the query text normalised and not empty,
/// `k` within the server's bounds, the mode parsed. The names in it (user, category, history
/// products) are looked up by [`Resolved::new`].
#[derive(Debug)]
struct Parsed {
    text: String,
    k: usize,
    mode: Mode,
    explain: bool,
    user: Option<String>,
    category: Option<String>,
    history: Option<Vec<HistoryItem>>,
    customer: Option<User>,
}

impl SearchBody {
    /// Parse: the checks that need no catalog, in the order their errors are reported.
    fn parse(self, opts: &ServeOptions) -> ApiResult<Parsed> {
        let raw = self
            .q
            .ok_or_else(|| ApiError::bad("q is required: the query text"))?;
        if raw.len() > opts.max_query_bytes {
            return Err(ApiError::bad(format!(
                "q is {} bytes long; at most {} are allowed",
                raw.len(),
                opts.max_query_bytes
            )));
        }
        let text = normalize_query(&raw);
        if !text.chars().any(char::is_alphanumeric) {
            return Err(ApiError::bad(
                "q has no letters or digits: nothing to search for",
            ));
        }
        let k = self.k.unwrap_or(opts.default_k);
        if k == 0 || k > opts.max_k {
            return Err(ApiError::bad(format!(
                "k must be between 1 and {}, got {k}",
                opts.max_k
            )));
        }
        let mode = match self.mode.as_deref() {
            None => Mode::Dense,
            Some(m) => Mode::parse(m).map_err(|e| ApiError::bad(format!("mode: {e}")))?,
        };
        let customer = self.customer.map(customer_of).transpose()?;
        Ok(Parsed {
            text,
            k,
            mode,
            explain: self.explain,
            user: self.user,
            category: self.category,
            history: self.history,
            customer,
        })
    }
}

/// Where a resolved search's history comes from, owned so that the request can borrow it.
#[derive(Debug)]
enum History {
    None,
    /// Given with the request.
    Inline(Vec<(ProductId, Kind)>),
    /// The stored history of a known customer.
    User(UserId),
}

/// A parsed search resolved against the Searcher in service: its category node, its history,
/// the user it names (with the customer found, if any) and the warnings its answer carries.
#[derive(Debug)]
struct Resolved {
    category: Option<NodeId>,
    history: History,
    user: Option<(String, Option<UserId>)>,
    warnings: Vec<String>,
}

impl Resolved {
    /// Resolve: the category and the history's products looked up in the catalog, the user in
    /// the customer store; which history the search reads, and the warnings that go with it.
    fn new(s: &Searcher, p: &Parsed, opts: &ServeOptions) -> ApiResult<Resolved> {
        let ds = s.dataset();
        let category = match p.category.as_deref() {
            None => None,
            Some(c) => Some(ds.taxonomy.node(c).ok_or_else(|| {
                ApiError::bad(format!(
                    "category: unknown category `{c}` (use a taxonomy node id)"
                ))
            })?),
        };
        let mut warnings: Vec<String> = s.notes().to_vec();
        let inline = p
            .history
            .as_deref()
            .map(|items| inline_history(ds, items, opts))
            .transpose()?;
        let user: Option<(String, Option<UserId>)> = p.user.clone().map(|id| {
            let found = ds.users.find(&id);
            (id, found)
        });
        let history = match (inline, &user) {
            (Some(items), u) => {
                if let Some((id, _)) = u {
                    warnings.push(format!(
                        "an inline history was given: the stored history of `{id}` was not read"
                    ));
                }
                History::Inline(items)
            }
            (None, Some((id, None))) => {
                warnings.push(format!("unknown user `{id}`: plain search"));
                History::None
            }
            (None, Some((id, Some(u)))) => {
                if s.histories().count(*u) == 0 {
                    warnings.push(format!("user `{id}` has no history yet: plain search"));
                }
                History::User(*u)
            }
            (None, None) => History::None,
        };
        let reads_features = s
            .encoder()
            .personal()
            .is_some_and(|t| t.demographics.is_some());
        if p.customer.is_some() && !reads_features {
            warnings.push(
                "the model in service reads no customer features: `customer` was not read".into(),
            );
        }
        let wants_history = !matches!(history, History::None);
        if wants_history
            && s.encoder().personal().is_none()
            && s.history_boost() == 0.0
            && s.reranker().is_none()
        {
            warnings.push(
                "the model in service has no personalized tower: the history is not read".into(),
            );
        }
        Ok(Resolved {
            category,
            history,
            user,
            warnings,
        })
    }

    /// The Searcher's request for this search.
    fn request<'a>(&'a self, p: &'a Parsed) -> SearchRequest<'a> {
        let history = match &self.history {
            History::None => HistoryInput::None,
            History::Inline(items) => HistoryInput::Inline(items),
            History::User(user) => HistoryInput::User {
                user: *user,
                before: i64::MAX,
            },
        };
        SearchRequest {
            text: &p.text,
            k: p.k,
            history,
            category: self.category,
            mode: p.mode,
            explain: p.explain,
            customer: p.customer.as_ref(),
        }
    }
}

/// An inline history's items looked up in the catalog, at most `max_history` of them.
fn inline_history(
    ds: &Dataset,
    items: &[HistoryItem],
    opts: &ServeOptions,
) -> ApiResult<Vec<(ProductId, Kind)>> {
    if items.len() > opts.max_history {
        return Err(ApiError::bad(format!(
            "history has {} items; at most {} are allowed",
            items.len(),
            opts.max_history
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = ds.catalog.find(&item.product).ok_or_else(|| {
            ApiError::bad(format!(
                "history[{i}].product: unknown product `{}`",
                item.product
            ))
        })?;
        let kind = match item.kind.as_deref() {
            None => Kind::Purchase,
            Some(k) => Kind::parse(k).ok_or_else(|| {
                ApiError::bad(format!(
                    "history[{i}].kind: `{k}`: expected view, click, add_to_cart or purchase"
                ))
            })?,
        };
        out.push((p, kind));
    }
    Ok(out)
}

/// Render: the JSON answer to a search, its hits (with their explanations when asked), the user
/// and the warnings.
fn render(ds: &Dataset, p: &Parsed, resolved: Resolved, results: &Results, took_ms: f64) -> Value {
    let hits: Vec<Value> = results
        .hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut v = product_json(ds, h.product);
            v["rank"] = json!(i + 1);
            v["score"] = json!(h.score);
            v["dense_score"] = json!(h.dense);
            v["lexical_score"] = json!(h.lexical);
            if let Some(e) = &h.explanation {
                v["explanation"] = json!({
                    "history": e.history.iter().map(|(p, w)| json!({
                        "id": ds.catalog.get(*p).id,
                        "title": ds.catalog.get(*p).title,
                        "weight": w,
                    })).collect::<Vec<_>>(),
                    "customer": e.customer.iter().map(|(name, w)| json!({
                        "feature": name,
                        "weight": w,
                    })).collect::<Vec<_>>(),
                    "lexical_matches": e.lexical_matches,
                });
            }
            v
        })
        .collect();
    let inline = matches!(resolved.history, History::Inline(_));
    let user_json = resolved.user.map(|(id, found)| {
        json!({
            "id": id,
            "known": found.is_some(),
            "history_used": if inline { 0 } else { results.history_used },
            "features_used": results.features_used,
        })
    });
    let t = &ds.taxonomy;
    let category = resolved
        .category
        .map(|c| json!({"id": t.id(c), "name": t.name(c)}));
    json!({
        "query": p.text,
        "k": p.k,
        "mode": p.mode.to_string(),
        "category": category,
        "personalized": results.personalized(),
        "history_used": results.history_used,
        "features_used": results.features_used,
        "user": user_json,
        "took_ms": took_ms,
        "warnings": resolved.warnings,
        "results": hits,
    })
}

/// A product as the API shows it.
fn product_json(ds: &Dataset, p: ProductId) -> Value {
    let product = ds.catalog.get(p);
    let t = &ds.taxonomy;
    json!({
        "id": product.id,
        "title": product.title,
        "brand": product.brand,
        "price": product.price,
        "category": {"id": t.id(product.category), "name": t.name(product.category)},
        "path": t.path(product.category).into_iter().map(|n| t.name(n)).collect::<Vec<_>>(),
    })
}

async fn product(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = id?;
    let s = app.searcher();
    let ds = s.dataset();
    let p = ds
        .catalog
        .find(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown product `{id}`")))?;
    let mut v = product_json(ds, p);
    let product = ds.catalog.get(p);
    v["description"] = json!(product.description);
    v["attributes"] = json!(product.attributes);
    Ok(Json(v))
}

#[derive(Debug, Default, Deserialize)]
struct UsersParams {
    limit: Option<String>,
}

async fn users(
    State(app): State<Arc<App>>,
    params: Result<Query<UsersParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(p) = params?;
    let limit = match p.limit.as_deref() {
        None | Some("") => 20,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(format!(
                    "limit: `{s}`: expected a whole number between 1 and 1000"
                )))
            }
        },
    };
    let s = app.searcher();
    let ds = s.dataset();
    let h = s.histories();
    let mut all: Vec<(UserId, usize)> = ds
        .users
        .iter()
        .map(|(u, _)| (u, h.count(u)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let order = |a: &(UserId, usize), b: &(UserId, usize)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
    if all.len() > limit {
        all.select_nth_unstable_by(limit - 1, order);
        all.truncate(limit);
    }
    all.sort_by(order);
    let users: Vec<Value> = all
        .into_iter()
        .take(limit)
        .map(|(u, n)| json!({"id": ds.users.get(u).id, "interactions": n}))
        .collect();
    Ok(Json(json!({ "users": users })))
}

async fn user(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(id) = id?;
    let s = app.searcher();
    let ds = s.dataset();
    let u = ds
        .users
        .find(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown user `{id}`")))?;
    let h = s.histories();
    let events: Vec<&aisle_core::Interaction> = h.events(ds, u, i64::MAX, USER_RECENT).collect();
    let recent: Vec<Value> = events
        .iter()
        .rev()
        .map(|e| {
            let p = ds.catalog.get(e.product);
            json!({"product": p.id, "title": p.title, "kind": e.kind.as_str(), "time": e.time})
        })
        .collect();
    Ok(Json(json!({
        "id": id,
        "interactions": h.count(u),
        "recent": recent,
    })))
}

async fn healthz(State(app): State<Arc<App>>) -> Json<Value> {
    let s = app.searcher();
    Json(health(&app, &s))
}

fn health(app: &App, s: &Searcher) -> Value {
    let ds = s.dataset();
    json!({
        "status": "ok",
        "dataset": ds.name,
        "products": ds.catalog.len(),
        "users": ds.users.len(),
        "model": app.options.model_label,
        "encoder": s.encoder().kind(),
        "dim": s.encoder().dim(),
        "personalized": s.encoder().personal().is_some(),
        "reranked": s.reranker().is_some(),
        "index": s.index_kind(),
        "index_source": s.index_source(),
        "lexical": s.has_lexical(),
        "lexical_in_engine": s.lexical_in_engine(),
        "warnings": s.notes(),
        "reloads": app.reloads(),
        "uptime_s": app.uptime_s(),
        "connections": app.connections(),
    })
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let s = app.searcher();
    let mut gauges = vec![
        (
            "aisle_products",
            "Products in the served catalog.",
            s.dataset().catalog.len() as f64,
        ),
        (
            "aisle_reloads_total",
            "Searcher swaps since start.",
            app.reloads() as f64,
        ),
        (
            "aisle_uptime_seconds",
            "Seconds since the server started.",
            app.uptime_s(),
        ),
    ];
    if let Some(c) = app.connections() {
        gauges.extend([
            (
                "aisle_connections_open",
                "Open client connections.",
                c.open as f64,
            ),
            (
                "aisle_connections_cap",
                "The most open connections at once.",
                c.cap as f64,
            ),
            (
                "aisle_connections_evicted_total",
                "Idle connections closed to make room for new ones.",
                c.evicted as f64,
            ),
            (
                "aisle_connections_shed_total",
                "Connections answered 503 because every open one was busy.",
                c.shed as f64,
            ),
        ]);
    }
    let body = app.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// `POST /admin/reload`: with a token configured, `Authorization: Bearer <token>`; without one,
/// only loopback clients.
async fn reload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Json<Value>> {
    match &app.options.admin_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
                return Err(ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    message: "reload needs `Authorization: Bearer <admin token>`".into(),
                });
            }
        }
        None => {
            let loopback = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|c| c.0.ip().is_loopback());
            if !loopback {
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: "reload is allowed from loopback only (or start the server with an admin token)".into(),
                });
            }
        }
    }
    match app.reload().await {
        Ok(seconds) => {
            let s = app.searcher();
            Ok(Json(
                json!({"reloaded": true, "seconds": seconds, "serving": health(&app, &s)}),
            ))
        }
        Err(e @ (crate::ServeError::Busy | crate::ServeError::NoLoader)) => Err(ApiError {
            status: StatusCode::CONFLICT,
            message: e.to_string(),
        }),
        Err(e) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        }),
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110, 11.1): `bearer x` is as good as `Bearer x`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Compares two secrets in time that depends on their lengths only, not on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

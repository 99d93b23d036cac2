//! The routes: the page, `/api/health`, `/api/search` (GET text, POST image), `/api/zeroshot`,
//! `/api/neighbors/{id}`, `/api/image/{id}`, `/api/thumb/{id}`; anything else is a JSON 404.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use candle_core::{Device, Tensor};
use clip::{Clip, TextTokenizer};
use clip_search::exact::Hit;
use clip_search::{Index, Searcher};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::errors::ApiError;

/// What the server allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (an uploaded image), bytes.
    pub max_upload_bytes: usize,
    /// Most results a request may ask for.
    pub max_k: usize,
    /// Requests handled at once (others wait).
    pub max_in_flight: usize,
    /// Requests running the model at once.
    pub model_slots: usize,
    /// Most labels a zero-shot request may give.
    pub max_labels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 10 << 20,
            max_k: 200,
            max_in_flight: 32,
            model_slots: 2,
            max_labels: 64,
        }
    }
}

/// Everything a request reads; shared, read-only but for the model slots.
pub struct AppState {
    pub index: Index,
    pub searcher: Searcher,
    pub model: Clip,
    pub tokenizer: TextTokenizer,
    pub device: Device,
    pub limits: Limits,
    slots: Semaphore,
    /// The model's block weights, prepared once for the server's life (it never trains).
    frozen: clip::ops::FrozenWeights,
}

impl AppState {
    pub fn new(index: Index, model: Clip, device: Device, limits: Limits) -> clip::Result<Self> {
        let tokenizer = TextTokenizer::for_config(&model.config.text_cfg)?;
        let slots = Semaphore::new(limits.model_slots.max(1));
        let searcher = Searcher::building(&index, Default::default());
        Ok(Self {
            searcher,
            index,
            model,
            tokenizer,
            device,
            limits,
            slots,
            frozen: clip::ops::FrozenWeights::new(),
        })
    }
}

type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

/// The router with its limits applied.
pub fn router(state: Shared) -> Router {
    let limit = state.limits.max_upload_bytes;
    let in_flight = state.limits.max_in_flight.max(1);
    Router::new()
        .route("/", get(page))
        .route("/api/health", get(health))
        .route("/api/search", get(search_text).post(search_image))
        .route("/api/zeroshot", post(zero_shot))
        .route("/api/neighbors/{id}", get(neighbors))
        .route("/api/image/{id}", get(image_file))
        .route("/api/thumb/{id}", get(thumb_file))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower::limit::ConcurrencyLimitLayer::new(in_flight))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "images": s.index.len(),
        "model": s.index.manifest.model.source,
        "embed_dim": s.index.dim(),
        "search": s.searcher.name(),
    }))
}

/// Run `f` (model work) on a blocking thread, holding one of the model slots.
async fn with_model<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&AppState) -> Result<T, String> + Send + 'static,
) -> ApiResult<T> {
    let _permit = s
        .slots
        .acquire()
        .await
        .map_err(|_| ApiError::internal("the server is shutting down"))?;
    let state = s.clone();
    tokio::task::spawn_blocking(move || state.frozen.run(|| f(&state)))
        .await
        .map_err(|e| ApiError::internal(format!("model task failed: {e}")))?
        .map_err(ApiError::internal)
}

fn text_vectors(s: &AppState, texts: &[String]) -> Result<Tensor, String> {
    clip_train::encode::text_embeddings(&s.model, &s.tokenizer, texts, &s.device)
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .map_err(|e| e.to_string())
}

fn hits_json(s: &AppState, hits: &[Hit]) -> Vec<Value> {
    hits.iter()
        .map(|h| {
            let e = &s.index.entries[h.row];
            json!({
                "id": e.id,
                "score": h.score,
                "name": e.name(),
                "thumb": format!("/api/thumb/{}", e.id),
                "image": format!("/api/image/{}", e.id),
            })
        })
        .collect()
}

fn check_k(s: &AppState, k: Option<usize>) -> ApiResult<usize> {
    let k = k.unwrap_or(20);
    if k == 0 || k > s.limits.max_k {
        return Err(ApiError::bad_request(format!(
            "k must be 1 to {}, got {k}",
            s.limits.max_k
        )));
    }
    Ok(k)
}

#[derive(Deserialize)]
struct TextQuery {
    q: Option<String>,
    k: Option<usize>,
}

async fn search_text(
    State(s): State<Shared>,
    query: Result<Query<TextQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let k = check_k(&s, query.k)?;
    let q = query.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(ApiError::bad_request("q: give words to search for"));
    }
    if q.len() > 1000 {
        return Err(ApiError::bad_request("q: at most 1000 bytes"));
    }
    let text = q.clone();
    let hits = with_model(&s, move |st| {
        let v = text_vectors(st, &[text])?;
        let v: Vec<f32> = v
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(|e| e.to_string())?;
        Ok(st.searcher.search(&st.index, &v, k, |_| true))
    })
    .await?;
    Ok(Json(json!({"query": q, "results": hits_json(&s, &hits)})))
}

/// The uploaded image's bytes: the multipart field `image`, an image content type.
async fn upload(mut form: Multipart) -> ApiResult<Vec<u8>> {
    let too_big =
        |e: axum::extract::multipart::MultipartError| ApiError::new(e.status(), e.body_text());
    while let Some(field) = form.next_field().await.map_err(too_big)? {
        if field.name() != Some("image") {
            continue;
        }
        let ct = field.content_type().unwrap_or("").to_string();
        if !ct.starts_with("image/") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the image field must be an image (image/jpeg, image/png, …), not {ct:?}"),
            ));
        }
        return Ok(field.bytes().await.map_err(too_big)?.to_vec());
    }
    Err(ApiError::bad_request(
        "expected a multipart form with an `image` field",
    ))
}

async fn search_image(
    State(s): State<Shared>,
    query: Result<Query<TextQuery>, QueryRejection>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let k = check_k(&s, query.k)?;
    let form = form.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let bytes = upload(form).await?;
    let img = image::load_from_memory(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("cannot read the upload as an image: {e}"),
        )
    })?;
    let hits = with_model(&s, move |st| {
        let size = st.model.config.vision_cfg.image_size;
        let px = Tensor::from_vec(
            clip::transform::preprocess(&img, size),
            (1, 3, size, size),
            &st.device,
        )
        .map_err(|e| e.to_string())?;
        let v = clip::ops::inference(|| st.model.encode_image(&px))
            .and_then(|t| t.to_dtype(candle_core::DType::F32))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        Ok(st.searcher.search(&st.index, &v, k, |_| true))
    })
    .await?;
    Ok(Json(json!({"results": hits_json(&s, &hits)})))
}

/// An id from the path: digits only, and one the index holds.
fn known_id(s: &AppState, raw: &str) -> ApiResult<(u64, usize)> {
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::bad_request(format!("not an image id: {raw:?}")))?;
    let row = s
        .index
        .row_of(id)
        .ok_or_else(|| ApiError::not_found(format!("no image {id} in the index")))?;
    Ok((id, row))
}

#[derive(Deserialize)]
struct KQuery {
    k: Option<usize>,
}

async fn neighbors(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    query: Result<Query<KQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let (id, row) = known_id(&s, &raw)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let k = check_k(&s, query.k)?;
    let v = s.index.vector(row).to_vec();
    let hits = s.searcher.search(&s.index, &v, k, |r| r != row);
    Ok(Json(json!({"id": id, "results": hits_json(&s, &hits)})))
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    }
}

async fn send_file(path: std::path::PathBuf, ct: &'static str) -> ApiResult<Response> {
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|_| ApiError::not_found("the file is no longer there (index again)"))?;
    Ok(image_response(bytes, ct))
}

fn image_response(bytes: Vec<u8>, ct: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "private, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response()
}

async fn image_file(State(s): State<Shared>, Path(raw): Path<String>) -> ApiResult<Response> {
    let (_, row) = known_id(&s, &raw)?;
    let entry = s.index.entries[row].clone();
    let ct = content_type(std::path::Path::new(&entry.name()));
    let bytes = tokio::task::spawn_blocking(move || entry.read_bytes())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|_| ApiError::not_found("the file is no longer there (index again)"))?;
    Ok(image_response(bytes, ct))
}

async fn thumb_file(State(s): State<Shared>, Path(raw): Path<String>) -> ApiResult<Response> {
    let (id, _) = known_id(&s, &raw)?;
    send_file(clip_search::thumbs::path(&s.index.dir, id), "image/jpeg").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZeroShotRequest {
    labels: Vec<String>,
    ids: Vec<u64>,
}

/// Each image's probabilities over the labels: softmax of 100 × cosine to "a photo of a {label}.".
async fn zero_shot(
    State(s): State<Shared>,
    body: Result<Json<ZeroShotRequest>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(req) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let labels: Vec<String> = req
        .labels
        .iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if labels.is_empty() || labels.len() > s.limits.max_labels {
        return Err(ApiError::bad_request(format!(
            "labels: give 1 to {} non-empty labels",
            s.limits.max_labels
        )));
    }
    if req.ids.len() > s.limits.max_k {
        return Err(ApiError::bad_request(format!(
            "ids: at most {}",
            s.limits.max_k
        )));
    }
    let rows: Vec<usize> = req
        .ids
        .iter()
        .map(|id| known_id(&s, &id.to_string()).map(|(_, r)| r))
        .collect::<ApiResult<_>>()?;
    let prompts: Vec<String> = labels
        .iter()
        .map(|l| format!("a photo of a {l}."))
        .collect();
    let text = with_model(&s, move |st| {
        let t = text_vectors(st, &prompts)?;
        t.to_vec2::<f32>().map_err(|e| e.to_string())
    })
    .await?;
    let images: Vec<Value> = req
        .ids
        .iter()
        .zip(rows)
        .map(|(id, row)| {
            let v = s.index.vector(row);
            let logits: Vec<f32> = text
                .iter()
                .map(|t| 100.0 * clip_search::exact::dot(v, t))
                .collect();
            let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = logits.iter().map(|l| (l - m).exp()).sum();
            let scores: Vec<Value> = labels
                .iter()
                .zip(&logits)
                .map(|(label, l)| json!({"label": label, "p": (l - m).exp() / z}))
                .collect();
            json!({"id": id, "scores": scores})
        })
        .collect();
    Ok(Json(json!({"labels": labels, "images": images})))
}

//! JSON errors with stable codes: `{"error": {"code": "not_found", "message": "..."}}`.
//!
//! Codes (stable, scripts rely on them): `unauthorized` (401: no, unknown or
//! revoked token), `token_expired` (401: the token's expiry has passed; issue
//! a new one), `forbidden` (403: the token's role does not allow it, or
//! acting as another user), `unlicensed` (403: the token's user has no
//! licence and cannot reply, note or update tickets), `not_found` (404),
//! `bad_request` (400, including malformed JSON and a path segment that is
//! not UTF-8), `method_not_allowed` (405, with `Allow`), `request_timeout`
//! (408: the body did not arrive within `[http] body_timeout_secs`),
//! `conflict` (409), `payload_too_large` (413), `unsupported_media_type`
//! (415, including a JSON body without `Content-Type: application/json`),
//! `rate_limited` (429, retry later; with `Retry-After` in seconds when
//! known), `unavailable` (503, retry; also the connection caps), `internal`
//! (500). Messages are for humans and may change.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::outbound::OutboundError;
use crate::store::StoreError;

/// An API error: HTTP status, stable code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503), if known.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    pub fn token_expired(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "token_expired", m)
    }
    pub fn unlicensed(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "unlicensed", m)
    }
    pub fn request_timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", m)
    }
    /// 429 `rate_limited`, telling the client when to retry (`Retry-After`,
    /// whole seconds rounded up, at least 1).
    pub fn rate_limited(m: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m)
        }
    }
}

/// The API's answer to a known path with a method it does not serve (the
/// router's `method_not_allowed_fallback`; axum adds the `Allow` header).
pub async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} not allowed on this endpoint"),
    )
}

/// The message alone (the command line prints it; the code and status are
/// the HTTP answer's).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED
            && let Ok(v) = "Bearer".parse()
        {
            resp.headers_mut().insert("www-authenticate", v);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Invalid(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            e if e.is_temporary() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<OutboundError> for ApiError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::TicketNotFound(n) => {
                ApiError::not_found(format!("ticket {n} not found"))
            }
            OutboundError::Compose(c) => ApiError::bad_request(c.to_string()),
            OutboundError::UnknownUser(u) => ApiError::bad_request(format!("unknown user {u:?}")),
            OutboundError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
            }
            OutboundError::Channel(..) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            OutboundError::Dkim(m) => ApiError::internal(format!("dkim: {m}")),
            OutboundError::Invalid(m) => ApiError::bad_request(m),
            OutboundError::Store(s) => s.into(),
        }
    }
}

/// `Json<T>` whose rejections are our JSON errors (`bad_request`,
/// `unsupported_media_type` or `payload_too_large`).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    e.body_text(),
                ))
            }
            Err(e @ JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// `Path<T>` whose rejections are our JSON errors: `bad_request` (a segment
/// that is not UTF-8 or does not deserialize), `internal` (a route/extractor
/// mismatch, a bug).
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(e) if e.status().is_server_error() => Err(ApiError::internal(e.body_text())),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

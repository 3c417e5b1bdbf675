//! `POST /api/v1/forms/{id}/submissions`: web form submissions, posted by
//! websites (no bearer token).
//!
//! `{id}` is a channel of kind `form`. The body is JSON (an object of strings;
//! numbers and booleans are taken as text, arrays as repeated fields),
//! `application/x-www-form-urlencoded` or `multipart/form-data` (text fields;
//! a file is refused), as an HTML form posts it. The
//! submission is checked against the channel's `[channels.form]`
//! ([`crate::ingest::submit`]) and committed with
//! [`crate::store::SpoolStore::submit`]: contact by the email field, a new ticket
//! with the channel's ticket properties, routed as mail is. The answer (201
//! `{"received": true}`, or 303 to the form's `redirect_url` for a plain HTML
//! form post) comes after the durable commit and does not reveal the ticket
//! number. Pages of the form's `allowed_origins` may post with JavaScript
//! (CORS: `OPTIONS` preflight, `Access-Control-Allow-Origin`).
//!
//! Answers: 404 `not_found` (no such form), 503 `unavailable` (channel
//! disabled), 429 `rate_limited` (per client IP and form), 415
//! `unsupported_media_type`, 413 `payload_too_large` (body over
//! [`MAX_FORM_BODY`] or a field over `max_field_size`), 400 `bad_request`
//! (missing or invalid field). A filled honeypot field answers 201 like a
//! success and stores nothing (metric `postdesk_form_submissions_total
//! {result="honeypot"}`).
//!
//! Untrusted input: everything; the client IP is the TCP peer, or from
//! `X-Forwarded-For` only when the peer is one of `[http] trusted_proxies`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CONTENT_TYPE, ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AppState;
use super::error::{ApiError, ApiPath};
use crate::config::{ChannelKind, Config};
use crate::ingest::submit::{self, Checked, Origin, SubmitError};
use crate::store::{ContactRef, NewSpool, SpoolSource};

/// Largest form body accepted.
pub const MAX_FORM_BODY: usize = 1024 * 1024;

/// One form's limiter and the quota (per minute) it was built with.
type Limiter = (u32, Arc<DefaultKeyedRateLimiter<IpAddr>>);

/// Per-IP rate limiters, one per form channel and quota (a reload that
/// changes the quota starts a fresh limiter).
#[derive(Default)]
pub struct FormLimits {
    /// std `Mutex`: never held across an `.await`.
    limiters: Mutex<HashMap<String, Limiter>>,
    checks: AtomicU64,
}

impl FormLimits {
    /// Whether `ip` may submit to `channel` now (always, when `per_minute` is 0).
    pub fn allow(&self, channel: &str, per_minute: u32, ip: IpAddr) -> bool {
        let Some(n) = NonZeroU32::new(per_minute) else {
            return true;
        };
        let limiter = {
            let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(channel) {
                Some((q, l)) if *q == per_minute => l.clone(),
                _ => {
                    let l = Arc::new(RateLimiter::keyed(Quota::per_minute(n)));
                    map.insert(channel.to_string(), (per_minute, l.clone()));
                    l
                }
            }
        };
        // Drop state of clients back at full quota now and then, so the map
        // does not grow with every address ever seen.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).is_ok()
    }
}

fn count(result: &'static str) {
    metrics::counter!("postdesk_form_submissions_total", "result" => result).increment(1);
}

fn too_large(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m)
}

/// Whether the request body is a plain HTML form post (URL-encoded or
/// multipart, as a browser sends a `<form>`).
fn is_html_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/x-www-form-urlencoded")
                || v.eq_ignore_ascii_case("multipart/form-data")
        })
}

/// The request's `Origin` when the form lets its pages post with JavaScript.
fn cors_origin(config: &Config, id: &str, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    let form = &config
        .channel(id)
        .filter(|c| c.kind == ChannelKind::Form)?
        .form;
    form.allows_origin(origin.to_str().ok()?)
        .then(|| origin.clone())
}

/// `POST`: check, store, answer — 201 JSON, or 303 to the form's
/// `redirect_url` for a plain HTML form post; CORS headers for allowed origins.
pub async fn submit(
    State(s): State<AppState>,
    limits: axum::Extension<Arc<FormLimits>>,
    ApiPath(id): ApiPath<String>,
    req: Request,
) -> Response {
    let config = s.live.config();
    let cors = cors_origin(&config, &id, req.headers());
    let html = is_html_form(req.headers());
    let mut resp = match accept(s, limits, &config, &id, req).await {
        Ok(()) => {
            let redirect = config
                .channel(&id)
                .and_then(|c| c.form.redirect_url.as_deref())
                .filter(|_| html);
            match redirect {
                Some(url) => Redirect::to(url).into_response(),
                None => (
                    StatusCode::CREATED,
                    Json(serde_json::json!({ "received": true })),
                )
                    .into_response(),
            }
        }
        Err(e) => e.into_response(),
    };
    if let Some(origin) = cors {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// `OPTIONS`: the CORS preflight of a JavaScript post. Allowed origins get
/// the permissions; others get none (the browser then refuses the post).
pub async fn preflight(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    let config = s.live.config();
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(origin) = cors_origin(&config, &id, &headers) {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        h.insert(VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Check and store one submission (`Ok` also for a filled honeypot).
async fn accept(
    s: AppState,
    axum::Extension(limits): axum::Extension<Arc<FormLimits>>,
    config: &Config,
    id: &str,
    req: Request,
) -> Result<(), ApiError> {
    let channel = config
        .channel(id)
        .filter(|c| c.kind == ChannelKind::Form)
        .ok_or_else(|| ApiError::not_found(format!("form {id:?} not found")))?;
    let form = &channel.form;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical());
    let ip = peer.map(|p| client_ip(p, req.headers(), &config.http.trusted_proxies));
    // The rate limit first: a flood costs no store reads.
    if let Some(ip) = ip
        && !limits.allow(&channel.id, form.rate_limit_per_minute, ip)
    {
        count("rate_limited");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many submissions from this address; try again in a minute",
        ));
    }
    if let Err(e) = super::open::check_enabled(&s, channel, || {
        format!("form {id:?} is not accepting submissions")
    })
    .await
    {
        count("disabled");
        return Err(e);
    }
    let header = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let content_type = header
        .split(';')
        .next()
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BODY)
        .await
        .map_err(|_| too_large(format!("form body larger than {MAX_FORM_BODY} bytes")))?;
    let pairs = match content_type.as_str() {
        "application/json" => json_pairs(&body)?,
        "application/x-www-form-urlencoded" => form_urlencoded::parse(&body).into_owned().collect(),
        "multipart/form-data" => multipart_pairs(&header, body).await?,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type {other:?}: post application/json, application/x-www-form-urlencoded or multipart/form-data"
                ),
            ));
        }
    };
    let sub = match submit::check_form(form, pairs) {
        Ok(Checked::Accepted(sub)) => sub,
        Ok(Checked::Honeypot) => {
            count("honeypot");
            tracing::info!(form = %id, ip = ?ip, "form honeypot filled; submission dropped");
            return Ok(());
        }
        Err(e) => {
            count("invalid");
            return Err(submit_error(e));
        }
    };
    let submission_id =
        super::auth::new_token().map_err(|e| ApiError::internal(format!("random id: {e}")))?;
    let raw = serde_json::to_vec(&sub.to_json(&channel.id))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let opening = super::open::Opening {
        origin: Origin {
            id: &submission_id,
            method: "form",
            date: now_rfc2822(),
        },
        contact: ContactRef {
            email: sub.email.clone(),
            name: sub.name.clone(),
        },
        subject: sub.ticket_subject(form, channel),
        text: sub.conversation_text(form),
        fields: sub
            .fields
            .iter()
            .map(|f| (f.name.clone(), f.value.clone()))
            .collect(),
        spool: NewSpool {
            source: SpoolSource::Form,
            mail_from: sub.email.clone(),
            rcpt_to: Vec::new(),
            client_ip: ip.map(|i| i.to_string()),
            helo: None,
            tls: false,
            channel: Some(channel.id.clone()),
            raw,
        },
    };
    let outcome = super::open::open(&s, config, channel, opening).await?;
    count("stored");
    for d in &outcome.delivered {
        tracing::info!(form = %id, ticket = d.ticket.0, owner = ?d.owner, "form submission stored");
    }
    Ok(())
}

/// The client's address: the TCP peer, unless it is a trusted proxy; then
/// the last `X-Forwarded-For` entry that is not a trusted proxy (entries
/// before it were written by the client and prove nothing).
pub(crate) fn client_ip(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The current time as an RFC 2822 date, as mail carries it.
pub(super) fn now_rfc2822() -> String {
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    jiff::fmt::rfc2822::to_string(&now).unwrap_or_default()
}

fn submit_error(e: SubmitError) -> ApiError {
    if e.is_too_large() {
        too_large(e.to_string())
    } else {
        ApiError::bad_request(e.to_string())
    }
}

/// The text fields of a `multipart/form-data` body (what an HTML form with
/// `enctype="multipart/form-data"` posts). A file input left empty is
/// ignored; a file is refused (415): a form submission here is text.
async fn multipart_pairs(
    content_type: &str,
    body: axum::body::Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |e: multer::Error| ApiError::bad_request(format!("malformed multipart body: {e}"));
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut pairs = Vec::new();
    while let Some(field) = parts.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        let file = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(bad)?;
        match file {
            Some(f) if f.is_empty() && bytes.is_empty() => continue,
            Some(f) => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("field {name:?} is a file ({f:?}): forms take text fields only"),
                ));
            }
            None => {
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::bad_request(format!("field {name:?} is not UTF-8 text"))
                })?;
                pairs.push((name, text));
            }
        }
    }
    Ok(pairs)
}

/// A JSON object's members as (name, value) text pairs.
fn json_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let Value::Object(map) = v else {
        return Err(ApiError::bad_request("expected a JSON object of fields"));
    };
    let scalar = |name: &str, v: Value| -> Result<Option<String>, ApiError> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Number(n) => Ok(Some(n.to_string())),
            _ => Err(ApiError::bad_request(format!(
                "field `{name}`: expected text, a number, a boolean or an array of them"
            ))),
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (name, v) in map {
        match v {
            Value::Array(items) => {
                for item in items {
                    if let Some(s) = scalar(&name, item)? {
                        out.push((name.clone(), s));
                    }
                }
            }
            v => {
                if let Some(s) = scalar(&name, v)? {
                    out.push((name, s));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (peer, X-Forwarded-For, trusted, expected client)
    const CASES: &[(&str, Option<&str>, &[&str], &str)] = &[
        ("203.0.113.9", Some("1.2.3.4"), &[], "203.0.113.9"),
        ("127.0.0.1", Some("1.2.3.4"), &[], "127.0.0.1"),
        ("127.0.0.1", None, &["127.0.0.1/32"], "127.0.0.1"),
        ("127.0.0.1", Some("1.2.3.4"), &["127.0.0.1/32"], "1.2.3.4"),
        (
            "127.0.0.1",
            Some("6.6.6.6, 1.2.3.4"),
            &["127.0.0.1/32"],
            "1.2.3.4",
        ),
        (
            "127.0.0.1",
            Some("1.2.3.4, 10.0.0.2"),
            &["127.0.0.1/32", "10.0.0.0/8"],
            "1.2.3.4",
        ),
        (
            "127.0.0.1",
            Some("junk, 10.0.0.2"),
            &["127.0.0.1/32", "10.0.0.0/8"],
            "10.0.0.2",
        ),
    ];

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        for (peer, xff, trusted, want) in CASES {
            let mut h = axum::http::HeaderMap::new();
            if let Some(x) = xff {
                h.insert("x-forwarded-for", x.parse().unwrap());
            }
            let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
            let got = client_ip(peer.parse().unwrap(), &h, &trusted);
            assert_eq!(got.to_string(), *want, "{peer} {xff:?} {trusted:?}");
        }
    }

    #[test]
    fn limits_are_per_form_and_address() {
        let l = FormLimits::default();
        let a: IpAddr = "1.2.3.4".parse().unwrap();
        let b: IpAddr = "1.2.3.5".parse().unwrap();
        assert!(l.allow("f", 1, a));
        assert!(!l.allow("f", 1, a));
        assert!(l.allow("f", 1, b));
        assert!(l.allow("g", 1, a));
        assert!(l.allow("f", 0, a), "0 = no limit");
        assert!(l.allow("f", 5, a), "a new quota starts afresh");
    }
}

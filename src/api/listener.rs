//! The HTTP listener's connections: accept, caps, timeouts, shutdown.
//!
//! Each accepted connection first takes a place in [`ConnLimits`] (total and
//! per client IP); one over a cap is answered a fixed 503 `unavailable` and
//! closed (within 2 s, by at most 64 tasks at once; beyond that at once). A
//! connection then has `[http] header_timeout_secs` for each request's header
//! (hyper's `header_read_timeout`, which also bounds how long a kept-alive
//! connection waits for its next request) and `body_timeout_secs` for the
//! body ([`body_deadline`]: 408 `request_timeout`, connection closed). On
//! shutdown, idle connections close at once and busy ones after their
//! response.
//!
//! Must not: route or authenticate (the router does), or keep a connection
//! open past its deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::AppState;
use super::error::ApiError;
use super::limits::ConnLimits;

/// What a connection over a cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 78\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections; retry later\"}}";

/// Refused connections told so at a time (each for at most [`REFUSE_FOR`]);
/// beyond, refused ones are closed with no more than a best-effort write.
const MAX_REFUSING: usize = 64;

/// Longest a refused connection is kept to be told so cleanly.
const REFUSE_FOR: Duration = Duration::from_secs(2);

/// Answer [`BUSY`] and close cleanly: closing a socket whose request is
/// still unread would reset it, and the client could lose the answer. So
/// the request is read and dropped (at most 64 KiB, [`REFUSE_FOR`]) until
/// the client closes its side.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSE_FOR, async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// One listener's connection settings.
pub struct Listener {
    /// `api` or `metrics`: the `listener` label of its metrics and logs.
    pub name: &'static str,
    pub header_timeout: Duration,
    pub conns: Arc<ConnLimits>,
}

/// Serve `router` on `listener` until `shutdown` is cancelled, then wait for
/// the connections to finish their responses.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    l: Listener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let gauge = metrics::gauge!("postdesk_http_connections", "listener" => l.name);
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors (EMFILE) or a connection reset
                    // before it was accepted: not the listener's end.
                    tracing::warn!(listener = l.name, error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let slot = match l.conns.try_open(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                metrics::counter!("postdesk_http_connections_refused_total", "reason" => why.as_str())
                    .increment(1);
                tracing::debug!(listener = l.name, %peer, reason = why.as_str(), "http connection refused");
                match refusing.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tracker.spawn(async move {
                            refuse(stream).await;
                            drop(permit);
                        });
                    }
                    // Many refusals at once: no courtesy, close now (a
                    // fresh socket's send buffer is empty, this does not block).
                    Err(_) => {
                        let _ = stream.try_write(BUSY);
                    }
                }
                continue;
            }
        };
        gauge.set(l.conns.open() as f64);
        let (router, shutdown, conns, gauge) = (
            router.clone(),
            shutdown.clone(),
            l.conns.clone(),
            gauge.clone(),
        );
        let (name, header_timeout) = (l.name, l.header_timeout);
        tracker.spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(listener = name, %peer, error = %e, "http connection closed");
            }
            drop(slot);
            gauge.set(conns.open() as f64);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Middleware: the request body must arrive within `[http]
/// body_timeout_secs` of the handler's start; otherwise the handler's read
/// fails and the answer is 408 `request_timeout` with `Connection: close`.
pub async fn body_deadline(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let timeout = Duration::from_secs(s.live.config().http.body_timeout_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let flag = expired.clone();
    let timed = futures_util::stream::unfold(
        (body.into_data_stream(), false),
        move |(mut stream, done)| {
            let flag = flag.clone();
            async move {
                if done {
                    return None;
                }
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(chunk)) => Some((chunk, (stream, false))),
                    Ok(None) => None,
                    Err(_) => {
                        flag.store(true, Ordering::Relaxed);
                        let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "body timeout");
                        Some((Err(axum::Error::new(e)), (stream, true)))
                    }
                }
            }
        },
    );
    let resp = next
        .run(Request::from_parts(parts, Body::from_stream(timed)))
        .await;
    if !expired.load(Ordering::Relaxed) {
        return resp;
    }
    metrics::counter!("postdesk_http_body_timeouts_total").increment(1);
    let mut resp = ApiError::request_timeout(format!(
        "the request body did not arrive within {}s",
        timeout.as_secs()
    ))
    .into_response();
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        HeaderValue::from_static("close"),
    );
    resp
}

#[cfg(test)]
mod tests {
    /// The refusal is a well-formed response: its Content-Length is its body's.
    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(super::BUSY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "unavailable");
    }
}

//! SMTP connections to the relay and to the providers: lettre's SMTP client,
//! our own small pool.
//!
//! Owns connecting (plain, STARTTLS or implicit TLS; AUTH), keeping up to
//! `pool_size` connections to `[relay]` (and up to `[channels.smtp]
//! connections` per gmail/office365 channel, [`ProviderPools`]) open for
//! reuse, and mapping lettre's errors to temporary/permanent.
//!
//! Why not lettre's pooled transport: it connects without `TCP_NODELAY`, and
//! lettre writes the message body and the final `.` in two writes; with Nagle
//! on, the final small write waits for the peer's delayed ACK (~40 ms on
//! Linux) on every message, capping throughput at a few hundred messages per
//! second. We connect the socket ourselves (nodelay) and hand it to
//! `AsyncSmtpConnection::connect_with_transport`. Implicit TLS still goes
//! through lettre's own connect (TLS set up before EHLO), without nodelay.
//!
//! Limits: at most `size` connections at once (callers wait); a connection
//! idle longer than [`IDLE_CHECK`] is checked with NOOP before reuse; every
//! transaction is bounded by the timeout; a connection that saw any error is
//! dropped, never reused.
//!
//! Untrusted input: the relay's replies (kept as text for the agent).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::sender::SendError;
use crate::config::TlsMode;

/// Idle time after which a pooled connection is tested with NOOP before reuse.
pub const IDLE_CHECK: Duration = Duration::from_secs(2);
/// Idle time after which a pooled connection is closed instead of reused.
pub const IDLE_MAX: Duration = Duration::from_secs(60);

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// Our EHLO name.
    pub hello: String,
    pub timeout: Duration,
    /// PEM roots to trust instead of the system's (`relay.ca_file`).
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// AUTH mechanisms to offer (empty: lettre's default PLAIN, LOGIN).
    pub mechanisms: Vec<Mechanism>,
}

fn temporary(what: &str, e: impl std::fmt::Display) -> SendError {
    SendError::Temporary(super::compose::clean_header_value(
        &format!("{what}: {e}"),
        500,
    ))
}

/// Map a lettre error: 5xx and client-side refusals are permanent.
pub fn classify(e: lettre::transport::smtp::Error) -> SendError {
    let text = super::compose::clean_header_value(&e.to_string(), 500);
    if e.is_permanent() || e.is_client() {
        SendError::Permanent(text)
    } else {
        SendError::Temporary(text)
    }
}

/// TLS parameters for `host`: system roots, or only those in `ca_file`.
pub fn tls_parameters(host: &str, ca_file: Option<&Path>) -> Result<TlsParameters, SendError> {
    match ca_file {
        None => TlsParameters::new(host.to_string()).map_err(|e| temporary("TLS parameters", e)),
        Some(file) => {
            let pem = std::fs::read(file)
                .map_err(|e| temporary(&format!("reading {}", file.display()), e))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| temporary(&format!("certificates in {}", file.display()), e))?;
            TlsParameters::builder(host.to_string())
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert)
                .build()
                .map_err(|e| temporary("TLS parameters", e))
        }
    }
}

/// Open one authenticated connection.
pub async fn connect(t: &SmtpTarget) -> Result<AsyncSmtpConnection, SendError> {
    let hello = ClientId::Domain(t.hello.clone());
    let params = || tls_parameters(&t.host, t.ca_file.as_deref());
    let mut conn = match t.tls {
        TlsMode::Implicit => AsyncSmtpConnection::connect_tokio1(
            (t.host.as_str(), t.port),
            Some(t.timeout),
            &hello,
            Some(params()?),
            None,
        )
        .await
        .map_err(|e| temporary("connect", e))?,
        TlsMode::None | TlsMode::Starttls => {
            let tcp = tokio::time::timeout(
                t.timeout,
                tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
            )
            .await
            .map_err(|_| temporary("connect", "timed out"))?
            .map_err(|e| temporary("connect", e))?;
            let _ = tcp.set_nodelay(true);
            let mut c = tokio::time::timeout(
                t.timeout,
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello),
            )
            .await
            .map_err(|_| temporary("greeting", "timed out"))?
            .map_err(classify)?;
            if t.tls == TlsMode::Starttls {
                tokio::time::timeout(t.timeout, c.starttls(params()?, &hello))
                    .await
                    .map_err(|_| temporary("STARTTLS", "timed out"))?
                    .map_err(|e| temporary("STARTTLS", e))?;
            }
            c
        }
    };
    if let Some(creds) = &t.credentials {
        let mechanisms = if t.mechanisms.is_empty() {
            vec![Mechanism::Plain, Mechanism::Login]
        } else {
            t.mechanisms.clone()
        };
        let xoauth2 = mechanisms.contains(&Mechanism::Xoauth2);
        tokio::time::timeout(t.timeout, conn.auth(&mechanisms, creds))
            .await
            .map_err(|_| temporary("AUTH", "timed out"))?
            .map_err(|e| {
                // Gmail answers a bad token with an error challenge (334),
                // which lettre's XOAUTH2 refuses client-side.
                let challenged = xoauth2 && e.is_client() && e.to_string().contains("challenge");
                match classify(e) {
                    _ if challenged => SendError::AuthRejected(
                        "error challenge to AUTH XOAUTH2 (token refused)".into(),
                    ),
                    // An OAuth token can expire or be revoked at any time: a
                    // fresh one may work, so this is not the reply's
                    // permanent failure.
                    SendError::Permanent(text) if xoauth2 => SendError::AuthRejected(text),
                    // The relay refusing our credentials (a rotated password,
                    // AUTH offered only after TLS) is its configuration's
                    // problem, not this reply's: retried until the entry's
                    // lifetime ends, like an unreadable password file.
                    SendError::Permanent(text) => SendError::Temporary(format!("AUTH: {text}")),
                    other => other,
                }
            })?;
    }
    Ok(conn)
}

/// Send one message on `conn`. lettre sends the whole transaction in one
/// call, so it is bounded as a whole: one timeout per command (MAIL, each
/// RCPT, DATA, the body) — a relay silent after the body is given up on
/// after that sum, and the attempt deferred.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    t: &SmtpTarget,
    envelope: &Envelope,
    raw: &[u8],
) -> Result<Response, SendError> {
    // MAIL, RCPT…, DATA, the body: allow a timeout for each step.
    let steps = 3 + envelope.to().len() as u32;
    tokio::time::timeout(t.timeout * steps, conn.send(envelope, raw))
        .await
        .map_err(|_| temporary("relay", "timed out"))?
        .map_err(classify)
}

/// A bounded set of reusable connections to one target.
pub struct Pool {
    target: SmtpTarget,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    permits: Semaphore,
    /// Set by [`Pool::close`]: connections still sending then end with QUIT
    /// instead of going back to the idle list nobody will take them from.
    closed: std::sync::atomic::AtomicBool,
}

impl Pool {
    pub fn new(target: SmtpTarget, size: usize) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn take_idle(&self) -> Option<(AsyncSmtpConnection, Instant)> {
        self.idle.lock().ok().and_then(|mut v| v.pop())
    }

    /// A usable connection: a pooled one (checked if idle a while) or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some((mut conn, since)) = self.take_idle() {
            let idle = since.elapsed();
            if conn.has_broken() || idle > IDLE_MAX {
                conn.abort().await;
                continue;
            }
            if idle > IDLE_CHECK {
                let ok = tokio::time::timeout(self.target.timeout, conn.test_connected())
                    .await
                    .unwrap_or(false);
                if !ok {
                    conn.abort().await;
                    continue;
                }
            }
            return Ok(conn);
        }
        connect(&self.target).await
    }

    /// Deliver `raw`: the relay's final reply on success. While waiting for a
    /// connection, `stop` cancels ([`SendError::Cancelled`]: nothing was sent);
    /// once the transaction started it runs to its end.
    pub async fn send(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        stop: &CancellationToken,
    ) -> Result<Response, SendError> {
        let _permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(SendError::Cancelled),
            p = self.permits.acquire() => p.map_err(|_| SendError::Temporary("relay pool closed".into()))?,
        };
        if stop.is_cancelled() {
            return Err(SendError::Cancelled);
        }
        let mut conn = self.checkout().await?;
        match transaction(&mut conn, &self.target, envelope, raw).await {
            Ok(resp) => {
                // Checked under the idle list's lock, which close() takes to
                // set the flag: a connection either goes back before close()
                // empties the list, or sees the flag and QUITs.
                let back = match self.idle.lock() {
                    Ok(mut v) if !self.closed.load(std::sync::atomic::Ordering::SeqCst) => {
                        v.push((conn, Instant::now()));
                        None
                    }
                    _ => Some(conn),
                };
                if let Some(mut conn) = back {
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
                }
                Ok(resp)
            }
            Err(e) => {
                conn.abort().await;
                Err(e)
            }
        }
    }

    /// Close every idle connection politely, and those still sending once
    /// they are done.
    pub async fn close(&self) {
        let idle = self.idle.lock();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(idle);
        while let Some((mut conn, _)) = self.take_idle() {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
        }
    }
}

/// One pool per provider channel (gmail/office365 replies over XOAUTH2), so
/// a backlog of replies reuses at most `[channels.smtp] connections`
/// connections instead of opening one per message. A pool is kept for the
/// target it was built for: connections authenticate when they open, so a
/// new access token (or a reload changing the target) needs a new pool.
#[derive(Default)]
pub struct ProviderPools {
    pools: Mutex<HashMap<String, Built>>,
}

/// A channel's pool with the target and size it was built for.
type Built = (SmtpTarget, usize, Arc<Pool>);

impl ProviderPools {
    /// The channel's pool of `size` for `target`; a pool built for another
    /// target (an older token) is replaced, and closed in the background.
    pub async fn pool(&self, channel: &str, target: &SmtpTarget, size: usize) -> Arc<Pool> {
        let (pool, stale) = {
            let Ok(mut pools) = self.pools.lock() else {
                // Poisoned (cannot happen: nothing panics under the lock):
                // a pool of its own for this send.
                return Arc::new(Pool::new(target.clone(), size));
            };
            match pools.get(channel) {
                Some((t, n, p)) if t == target && *n == size => (p.clone(), None),
                _ => {
                    let pool = Arc::new(Pool::new(target.clone(), size));
                    let stale =
                        pools.insert(channel.to_string(), (target.clone(), size, pool.clone()));
                    (pool, stale.map(|(_, _, p)| p))
                }
            }
        };
        if let Some(old) = stale {
            // Not on this reply's time: QUITs can take a while.
            tokio::spawn(async move { old.close().await });
        }
        pool
    }

    /// Drop the channel's pool if it is still the one built for `target`
    /// (its token was refused; a newer pool, with a fresher token, stays).
    pub async fn forget(&self, channel: &str, target: &SmtpTarget) {
        let old = self.pools.lock().ok().and_then(|mut p| {
            if p.get(channel).is_some_and(|(t, _, _)| t == target) {
                p.remove(channel)
            } else {
                None
            }
        });
        if let Some((_, _, p)) = old {
            p.close().await;
        }
    }

    /// Close every pool's idle connections (shutdown).
    pub async fn close(&self) {
        let all: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .map(|mut p| p.drain().map(|(_, (_, _, pool))| pool).collect())
            .unwrap_or_default();
        for p in all {
            p.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider target whose access token is `token`.
    fn target(token: &str) -> SmtpTarget {
        SmtpTarget {
            host: "smtp.gmail.com".into(),
            port: 587,
            tls: crate::config::TlsMode::Starttls,
            hello: "desk.acme.example".into(),
            timeout: Duration::from_secs(30),
            ca_file: None,
            credentials: Some(Credentials::new(
                "support@acme.example".into(),
                token.into(),
            )),
            mechanisms: vec![Mechanism::Xoauth2],
        }
    }

    /// A refused token drops only the pool built for it: when a send with an
    /// older token fails after a newer pool replaced its own, the newer pool
    /// stays (no connection is made: pools connect on first use).
    #[tokio::test]
    async fn forgetting_an_old_token_keeps_the_newer_pool() {
        let pools = ProviderPools::default();
        let (old, new) = (target("token-1"), target("token-2"));
        let first = pools.pool("support", &old, 3).await;
        assert!(Arc::ptr_eq(&first, &pools.pool("support", &old, 3).await));
        let second = pools.pool("support", &new, 3).await;
        assert!(!Arc::ptr_eq(&first, &second), "a new token, a new pool");

        pools.forget("support", &old).await;
        assert!(
            Arc::ptr_eq(&second, &pools.pool("support", &new, 3).await),
            "the newer pool survives the old token's refusal"
        );

        pools.forget("support", &new).await;
        let third = pools.pool("support", &new, 3).await;
        assert!(!Arc::ptr_eq(&second, &third), "its own refusal drops it");
        // Another channel's pool is its own.
        let other = pools.pool("sales", &new, 3).await;
        assert!(!Arc::ptr_eq(&third, &other));
    }
}

//! Opening an authenticated IMAP session: TCP, TLS (none, STARTTLS or
//! implicit, via tokio-rustls with the platform's trust store), then LOGIN or
//! SASL XOAUTH2.
//!
//! Must not: log credentials or tokens (the XOAUTH2 string is built here and
//! never formatted into an error or a log line), or retry (the puller owns
//! backoff). Limits: connect and each step are bounded by [`STEP_TIMEOUT`].
//! Untrusted input: everything the server sends; async-imap parses it, and a
//! server error text is shortened before it is kept.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_imap::{Authenticator, Client, Session};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::TlsMode;

use super::PullError;

/// Bound on connecting, the TLS handshake and logging in.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A byte stream IMAP runs over (plain TCP or TLS).
pub trait ImapIo: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> ImapIo for T {}

/// The stream type of every session.
pub type Io = Box<dyn ImapIo>;

/// An authenticated session.
pub type ImapSession = Session<Io>;

/// How to log in.
pub enum Credentials {
    /// LOGIN with a password.
    Login { username: String, password: String },
    /// AUTHENTICATE XOAUTH2 with a bearer access token.
    XOAuth2 { username: String, token: String },
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Login { username, .. } => write!(f, "Login({username}, <secret>)"),
            Credentials::XOAuth2 { username, .. } => write!(f, "XOAuth2({username}, <token>)"),
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

/// The SASL XOAUTH2 client: first answer the initial (empty) challenge with
/// the token; if the server answers with an error challenge, send an empty
/// line so it finishes with a tagged NO.
struct XOAuth2<'a> {
    username: &'a str,
    token: &'a str,
    sent: bool,
}

impl Authenticator for XOAuth2<'_> {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        if self.sent {
            return String::new();
        }
        self.sent = true;
        format!(
            "user={}\x01auth=Bearer {}\x01\x01",
            self.username, self.token
        )
    }
}

use crate::mail::short;

fn tls_connector() -> Result<tokio_rustls::TlsConnector, PullError> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let config =
        rustls::ClientConfig::with_platform_verifier().map_err(|e| PullError::Tls(short(e)))?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn tls_wrap<S>(stream: S, host: &str) -> Result<Io, PullError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Debug + 'static,
{
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| PullError::Tls(format!("bad server name {host:?}: {e}")))?;
    let tls = tls_connector()?
        .connect(name, stream)
        .await
        .map_err(|e| PullError::Tls(short(e)))?;
    Ok(Box::new(tls))
}

async fn timed<T>(
    what: &'static str,
    f: impl Future<Output = Result<T, PullError>>,
) -> Result<T, PullError> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| PullError::Timeout(what))?
}

/// Connect, secure and log in.
pub async fn open(ep: &Endpoint, creds: &Credentials) -> Result<ImapSession, PullError> {
    let tcp = timed("connect", async {
        TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(PullError::Io)
    })
    .await?;
    let _ = tcp.set_nodelay(true);
    let mut client = match ep.tls {
        TlsMode::Implicit => {
            let io = timed("tls handshake", tls_wrap(tcp, &ep.host)).await?;
            Client::new(io)
        }
        TlsMode::None | TlsMode::Starttls => Client::new(Box::new(tcp) as Io),
    };
    timed("greeting", async {
        match client.read_response().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(PullError::Protocol(
                "connection closed before greeting".into(),
            )),
            Err(e) => Err(PullError::Io(e)),
        }
    })
    .await?;
    if ep.tls == TlsMode::Starttls {
        timed("starttls", async {
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| PullError::Protocol(format!("STARTTLS refused: {}", short(e))))
        })
        .await?;
        let plain = client.into_inner();
        let io = timed("tls handshake", tls_wrap(plain, &ep.host)).await?;
        client = Client::new(io);
    }
    timed("login", async {
        match creds {
            Credentials::Login { username, password } => client
                .login(username, password)
                .await
                .map_err(|(e, _)| PullError::Auth(short(e))),
            Credentials::XOAuth2 { username, token } => client
                .authenticate(
                    "XOAUTH2",
                    XOAuth2 {
                        username,
                        token,
                        sent: false,
                    },
                )
                .await
                .map_err(|(e, _)| PullError::Auth(short(e))),
        }
    })
    .await
}

//! Real headless Chromium driven over WebDriver: chromedriver on a free
//! loopback port (Debian `chromium` and `chromium-driver`; `scripts/test`
//! installs them), a fresh profile directory, stopped when dropped. The
//! calls block (the test's own small runtime runs fantoccini).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::{free_port, wait_for};

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver and a headless Chromium session.
    pub fn start() -> Browser {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("chromedriver-{port}.log"));
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test installs chromium-driver)");
        let up = wait_for(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "chromedriver did not listen on {port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("WebDriver session: {e}"));
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    /// The element at `css` (panics with the selector when there is none).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .expect("current url")
            .to_string()
    }

    /// Do `act` to the element at `css` (panics with `what` and the
    /// selector when it fails). A live page may replace the element between
    /// finding it and acting on it (a stale reference: the command did
    /// nothing): then it is found again, up to five times.
    fn on<T, F, Fut>(&self, css: &str, what: &str, act: F) -> T
    where
        F: Fn(Element) -> Fut,
        Fut: std::future::Future<Output = Result<T, CmdError>>,
    {
        self.rt.block_on(async {
            let mut tries = 0;
            loop {
                match act(self.find(css).await).await {
                    Ok(t) => return t,
                    Err(e) if tries < 5 && e.is_stale_element_reference() => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{what} {css}: {e}"),
                }
            }
        })
    }

    /// Type `text` into the element at `css`.
    pub fn fill(&self, css: &str, text: &str) {
        self.on(css, "type into", |e| async move { e.send_keys(text).await });
    }

    /// Empty the input at `css`.
    pub fn clear(&self, css: &str) {
        self.on(css, "clear", |e| async move { e.clear().await });
    }

    pub fn click(&self, css: &str) {
        self.on(css, "click", |e| async move { e.click().await.map(drop) });
    }

    /// Click `css` (a link or a submit button) and wait until the page it
    /// leads to has loaded: the old document's marker is gone and the new one
    /// is complete. A bare `click` returns before the browser has even sent
    /// the request, so a check right after it may still read the old page.
    pub fn click_and_load(&self, css: &str) {
        self.js("window.__postdeskOldPage = true;");
        self.click(css);
        let loaded = wait_for(Duration::from_secs(20), || {
            // A script run while the page changes may fail: asked again.
            let now = self.rt.block_on(self.c().execute(
                "return window.__postdeskOldPage !== true && document.readyState === 'complete';",
                Vec::new(),
            ));
            matches!(now, Ok(Value::Bool(true))).then_some(())
        });
        if loaded.is_none() {
            panic!("clicking {css} loaded no new page\n{}", self.source());
        }
    }

    /// Choose the option with `value` in the select at `css`.
    pub fn select(&self, css: &str, value: &str) {
        let what = format!("select {value} in");
        self.on(css, &what, |e| async move {
            e.select_by_value(value).await.map(drop)
        });
    }

    /// The visible text of the element at `css`.
    pub fn text(&self, css: &str) -> String {
        self.on(css, "text of", |e| async move { e.text().await })
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        self.rt
            .block_on(self.c().find_all(Locator::Css(css)))
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Wait (up to `timeout`) for an element at `css`; panics with the page
    /// source when none appears.
    pub fn wait_for(&self, css: &str, timeout: Duration) {
        let found = self.rt.block_on(
            self.c()
                .wait()
                .at_most(timeout)
                .every(Duration::from_millis(100))
                .for_element(Locator::Css(css)),
        );
        if let Err(e) = found {
            panic!("no {css} within {timeout:?}: {e}\n{}", self.source());
        }
    }

    /// Whether an element at `css` appears within `timeout`.
    pub fn appears(&self, css: &str, timeout: Duration) -> bool {
        self.rt
            .block_on(
                self.c()
                    .wait()
                    .at_most(timeout)
                    .every(Duration::from_millis(100))
                    .for_element(Locator::Css(css)),
            )
            .is_ok()
    }

    pub fn source(&self) -> String {
        self.rt.block_on(self.c().source()).unwrap_or_default()
    }

    /// Run `script` in the page; its return value.
    pub fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.c().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        self.rt.block_on(self.c().screenshot()).expect("screenshot")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Postfix's `smtp-sink` on a free port, keeping every message it accepts
/// as a file in its own directory.
pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("sink dir");
        // smtp-sink drops to `nobody`, who writes the files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let port = free_port();
        let child = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/msg.", dir.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("16")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink is installed (Debian postfix; scripts/test installs it)");
        let up = wait_for(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "smtp-sink did not listen on {port}");
        SmtpSink { port, dir, child }
    }

    /// The messages received so far (whole dump files, as text).
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

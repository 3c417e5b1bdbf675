//! Test helper: a scripted IMAP server on a socket, for the server
//! behaviours Dovecot cannot be made to show on demand (a FETCH ending in
//! NO, a message never returned, EXISTS piggybacked on a reply, refused or
//! dropped moves), and [`Run`], a puller running against it.
//!
//! Must not: be built outside tests (`#[cfg(test)]`), or hold assertions of
//! its own — the tests sit next to the code they test.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::live::Live;
use crate::store::Store;

use super::mailbox::Puller;
use crate::oauth::TokenSource;

fn msg(n: u32) -> String {
    format!(
        "Message-ID: <m{n}@x.example>\r\nFrom: a@x.example\r\nTo: help@acme.example\r\nSubject: m{n}\r\n\r\nbody {n}\r\n"
    )
}

/// How the scripted server misbehaves. Default: a mailbox with UIDs 1
/// and 2 (UIDVALIDITY 7), no IDLE, every fetch answered in full, each
/// message's RFC822.SIZE its true size.
#[derive(Clone, Copy, Default)]
pub(super) struct Mode {
    /// The first UID FETCH returns UID 1 only and ends with a tagged NO
    /// (as Dovecot/Gmail/O365 do on a temporary failure).
    pub(super) first_fetch_fails: bool,
    /// Offer IDLE and answer it with BAD (a throttling server).
    pub(super) idle_bad: bool,
    /// UIDs 1-3; no fetch ever returns UID 2 (each ends with NO).
    pub(super) damaged: bool,
    /// UID 3 arrives during the first fetch, announced by an unsolicited
    /// `* 3 EXISTS` in that fetch's reply.
    pub(super) grows: bool,
    /// Offer MOVE; a UID MOVE answers with 150 EXPUNGEs and then
    /// `* 3 EXISTS` (UID 3 arrived meanwhile).
    pub(super) floods_on_move: bool,
    /// Offer UIDPLUS (and not MOVE): moves go by UID COPY, UID STORE
    /// and UID EXPUNGE.
    pub(super) uidplus: bool,
    /// Offer MOVE (moves answered with a plain OK).
    pub(super) offers_move: bool,
    /// Commands starting with this (`UID STORE`…) are answered with a
    /// tagged NO.
    pub(super) refuse: Option<&'static str>,
    /// Only the first this many of them (0: all).
    pub(super) refuse_times: usize,
    /// The first UID MOVE is answered `NO [TRYCREATE]` (the target
    /// folder was deleted after the session started).
    pub(super) target_deleted: bool,
    /// UIDs 1-5, reported (RFC822.SIZE) as [`LARGE`] bytes each, except
    /// UID 4, whose size is not reported; the bodies are small. Every
    /// fetch returns exactly the UIDs asked.
    pub(super) large: bool,
    /// UIDs 1-45, small; every fetch returns exactly the UIDs asked.
    pub(super) many: bool,
    /// Close the connection on a UID MOVE (a server or network dying
    /// mid-move).
    pub(super) drops_on_move: bool,
    /// Close the connection on the first command starting with this
    /// (`UID STORE`…): the command is lost with it.
    pub(super) drops_on_first: Option<&'static str>,
    /// Not the server's: the puller's first wait after a failed move, in
    /// ms (0: 1 s).
    pub(super) move_wait_ms: u64,
}

/// The size `Mode::large` reports.
pub(super) const LARGE: u32 = 20 << 20;

/// The mailbox's UIDs once `fetched` bodies were fetched.
fn mailbox(mode: Mode, fetched: usize) -> Vec<u32> {
    let arrived = (mode.grows || mode.floods_on_move) && fetched > 0;
    if mode.large {
        (1..=5).collect()
    } else if mode.many {
        (1..=45).collect()
    } else if mode.damaged || arrived {
        vec![1, 2, 3]
    } else {
        vec![1, 2]
    }
}

/// The RFC822.SIZE the server reports for `uid`.
fn size(mode: Mode, uid: u32) -> Option<u32> {
    match (mode.large, uid) {
        (true, 4) => None,
        (true, _) => Some(LARGE),
        (false, _) => Some(msg(uid).len() as u32),
    }
}

/// The UIDs of the mailbox that the UID set of `UID FETCH <set> …` names.
fn asked(cmd: &str, mailbox: &[u32]) -> Vec<u32> {
    let set = cmd.split(' ').nth(2).unwrap_or("");
    mailbox
        .iter()
        .copied()
        .filter(|u| covers(set, *u))
        .collect()
}

/// The headers of `msg(n)`.
fn head(n: u32) -> String {
    let m = msg(n);
    m.split_once("\r\n\r\n")
        .map_or_else(|| m.clone(), |(h, _)| format!("{h}\r\n\r\n"))
}

/// Serve IMAP on `l` as `mode` says; counts body fetches (not those of
/// sizes or headers) and logins, and keeps every command (without its
/// tag) in `commands`. A UID EXPUNGE answered OK removes its UIDs from
/// what UID SEARCH finds afterwards (fetches are scripted by the mode).
async fn serve(
    l: TcpListener,
    mode: Mode,
    fetches: Arc<AtomicUsize>,
    logins: Arc<AtomicUsize>,
    commands: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let gone: Arc<std::sync::Mutex<Vec<u32>>> = Arc::default();
    loop {
        let Ok((sock, _)) = l.accept().await else {
            return;
        };
        let fetches = fetches.clone();
        let logins = logins.clone();
        let commands = commands.clone();
        let gone = gone.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"* OK fake ready\r\n").await.ok();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let mut it = line.trim_end().splitn(2, ' ');
                let tag = it.next().unwrap_or("").to_string();
                let cmd = it.next().unwrap_or("").to_ascii_uppercase();
                let (first_move, refusing, drop_now) = {
                    let mut all = commands.lock().expect("commands");
                    all.push(cmd.clone());
                    let seen = |p: &str| all.iter().filter(|c| c.starts_with(p)).count();
                    (
                        cmd.starts_with("UID MOVE") && seen("UID MOVE") == 1,
                        mode.refuse.is_some_and(|r| {
                            cmd.starts_with(r)
                                && (mode.refuse_times == 0 || seen(r) <= mode.refuse_times)
                        }),
                        mode.drops_on_first
                            .is_some_and(|p| cmd.starts_with(p) && seen(p) == 1),
                    )
                };
                if drop_now {
                    return;
                }
                // Refusals used up: answered as if never scripted.
                let mode = Mode {
                    refuse: mode.refuse.filter(|_| refusing),
                    ..mode
                };
                if mode.drops_on_move && cmd.starts_with("UID MOVE") {
                    return;
                }
                let mut out = if mode.target_deleted && first_move {
                    format!("{tag} NO [TRYCREATE] Mailbox doesn't exist: Done\r\n")
                } else {
                    reply(mode, &tag, &cmd, &fetches, &logins)
                };
                {
                    let mut gone = gone.lock().expect("gone");
                    if cmd.starts_with("UID EXPUNGE") && out.contains(&format!("{tag} OK")) {
                        gone.extend(asked(&cmd, &(1..=64).collect::<Vec<u32>>()));
                    } else if cmd.starts_with("UID SEARCH") {
                        out = out
                            .split_inclusive("\r\n")
                            .map(|l| match l.strip_prefix("* SEARCH") {
                                Some(uids) => {
                                    let kept: Vec<&str> = uids
                                        .split_whitespace()
                                        .filter(|u| {
                                            u.parse().is_ok_and(|u: u32| !gone.contains(&u))
                                        })
                                        .collect();
                                    format!("* SEARCH {}\r\n", kept.join(" "))
                                }
                                None => l.to_string(),
                            })
                            .collect();
                    }
                }
                if w.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The server's answer to one command.
fn reply(mode: Mode, tag: &str, cmd: &str, fetches: &AtomicUsize, logins: &AtomicUsize) -> String {
    let mut out = String::new();
    if mode.refuse.is_some_and(|r| cmd.starts_with(r)) {
        // A full target for moves; a temporary fault for a fetch (where
        // `[OVERQUOTA]` is Gmail's download cap).
        let code = if cmd.starts_with("UID FETCH") {
            "UNAVAILABLE"
        } else {
            "OVERQUOTA"
        };
        out += &format!("{tag} NO [{code}] refused\r\n");
    } else if cmd.starts_with("IDLE") {
        out += &format!("{tag} BAD try later\r\n");
    } else if cmd.starts_with("CAPABILITY") {
        out += "* CAPABILITY IMAP4rev1";
        if mode.idle_bad {
            out += " IDLE";
        }
        if mode.floods_on_move || mode.offers_move {
            out += " MOVE";
        }
        if mode.uidplus {
            out += " UIDPLUS";
        }
        out += &format!("\r\n{tag} OK done\r\n");
    } else if cmd.starts_with("LOGIN") {
        logins.fetch_add(1, Ordering::SeqCst);
        out += &format!("{tag} OK logged in\r\n");
    } else if cmd.starts_with("SELECT") {
        out += if mode.damaged {
            "* 3 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n"
        } else {
            "* 2 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 3] ok\r\n"
        };
        out += &format!("{tag} OK [READ-WRITE] done\r\n");
    } else if cmd.starts_with("UID SEARCH") {
        let uids = mailbox(mode, fetches.load(Ordering::SeqCst));
        let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
        out += &format!("* SEARCH {}\r\n{tag} OK done\r\n", uids.join(" "));
    } else if cmd.starts_with("UID FETCH") && cmd.contains("RFC822.SIZE") {
        // Not counted in `fetches`: the modes script the body fetches.
        for u in asked(cmd, &mailbox(mode, fetches.load(Ordering::SeqCst))) {
            out += &match size(mode, u) {
                Some(b) => format!("* {u} FETCH (UID {u} RFC822.SIZE {b})\r\n"),
                None => format!("* {u} FETCH (UID {u})\r\n"),
            };
        }
        out += &format!("{tag} OK done\r\n");
    } else if cmd.starts_with("UID FETCH") && cmd.contains("BODY.PEEK[HEADER]") {
        for u in asked(cmd, &mailbox(mode, fetches.load(Ordering::SeqCst))) {
            let h = head(u);
            out += &format!(
                "* {u} FETCH (UID {u} BODY[HEADER] {{{}}}\r\n{h})\r\n",
                h.len()
            );
        }
        out += &format!("{tag} OK done\r\n");
    } else if cmd.starts_with("UID FETCH") {
        let n = fetches.fetch_add(1, Ordering::SeqCst);
        let short = (n == 0 && mode.first_fetch_fails) || mode.damaged;
        let uids: Vec<u32> = if mode.large || mode.many {
            asked(cmd, &mailbox(mode, n))
        } else if mode.damaged {
            vec![1, 3]
        } else if (mode.grows || mode.floods_on_move) && n > 0 {
            vec![3]
        } else if short {
            vec![1]
        } else {
            vec![1, 2]
        };
        for u in uids {
            let m = msg(u);
            out += &format!("* {u} FETCH (UID {u} BODY[] {{{}}}\r\n{m})\r\n", m.len());
        }
        if mode.grows && n == 0 {
            out += "* 3 EXISTS\r\n";
        }
        if short {
            out += &format!("{tag} NO [UNAVAILABLE] Some messages could not be FETCHed\r\n");
        } else {
            out += &format!("{tag} OK done\r\n");
        }
    } else if cmd.starts_with("UID MOVE") {
        for _ in 0..150 {
            out += "* 1 EXPUNGE\r\n";
        }
        out += "* 3 EXISTS\r\n";
        out += &format!("{tag} OK moved\r\n");
    } else if cmd.starts_with("LOGOUT") {
        out += &format!("* BYE bye\r\n{tag} OK done\r\n");
    } else {
        out += &format!("{tag} OK done\r\n");
    }
    out
}

/// A puller running against the scripted server.
pub(super) struct Run {
    _dir: tempfile::TempDir,
    pub(super) store: Arc<dyn Store>,
    fetches: Arc<AtomicUsize>,
    pub(super) logins: Arc<AtomicUsize>,
    commands: Arc<std::sync::Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Run {
    /// Start the server in `mode` and a puller polling every `poll` s.
    pub(super) async fn start(mode: Mode, poll: u64) -> Run {
        Self::start_with(mode, poll, "").await
    }

    /// As `start`, moving pulled mail to `Done`.
    pub(super) async fn start_moving(mode: Mode, poll: u64) -> Run {
        Self::start_with(mode, poll, "move_to = \"Done\"\n").await
    }

    pub(super) async fn start_with(mode: Mode, poll: u64, imap_extra: &str) -> Run {
        Self::start_full(mode, poll, imap_extra, None).await
    }

    /// As `start_with`, the mailbox pulled before under `uidvalidity`
    /// (the server says 7): the first round is a resync.
    pub(super) async fn start_resyncing(mode: Mode, imap_extra: &str, uidvalidity: u32) -> Run {
        Self::start_full(mode, 1, imap_extra, Some(uidvalidity)).await
    }

    pub(super) async fn start_full(
        mode: Mode,
        poll: u64,
        imap_extra: &str,
        uidvalidity: Option<u32>,
    ) -> Run {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (fetches, logins, commands) = (Arc::default(), Arc::default(), Arc::default());
        tokio::spawn(serve(
            l,
            mode,
            Arc::clone(&fetches),
            Arc::clone(&logins),
            Arc::clone(&commands),
        ));
        let (store, puller) = setup(&dir, port, poll, imap_extra).await;
        puller.retry_moves_after(Duration::from_millis(match mode.move_wait_ms {
            0 => 1000,
            ms => ms,
        }));
        if let Some(v) = uidvalidity {
            store
                .reset_checkpoint(crate::store::tests::generation(v), None)
                .await
                .expect("checkpoint");
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(puller.run(stop.clone()));
        Run {
            _dir: dir,
            store,
            fetches,
            logins,
            commands,
            stop,
            task,
        }
    }

    /// Whether `n` messages are spooled within `secs`.
    pub(super) async fn spooled_within(&self, n: i64, secs: u64) -> bool {
        for _ in 0..secs * 10 {
            if self.store.status().await.expect("status").spool_total == n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Stop the puller; the checkpoint's last UID.
    pub(super) async fn finish(self) -> Option<u32> {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        self.store
            .checkpoint("mailbox".into(), "INBOX".into())
            .await
            .expect("checkpoint")
            .map(|c| c.last_uid)
    }

    pub(super) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Wait until `n` messages are spooled (at most `secs`), then stop:
    /// the UID sets fetched with each of `items`, and (all spooled,
    /// spool total, checkpoint).
    pub(super) async fn settle<const K: usize>(
        self,
        n: i64,
        secs: u64,
        items: [&str; K],
    ) -> ([Vec<String>; K], (bool, i64, Option<u32>)) {
        let all = self.spooled_within(n, secs).await;
        let sets = items.map(|i| fetch_sets(&self, i));
        let total = self.store.status().await.expect("status").spool_total;
        let last = self.finish().await;
        (sets, (all, total, last))
    }

    /// Wait until `n` messages are spooled (at most `secs`), then stop:
    /// (all spooled, body fetches so far, checkpoint).
    pub(super) async fn pulled(self, n: i64, secs: u64) -> (bool, usize, Option<u32>) {
        let all = self.spooled_within(n, secs).await;
        let fetches = self.fetches();
        (all, fetches, self.finish().await)
    }

    /// The commands received so far that start with `prefix`.
    pub(super) fn commands(&self, prefix: &str) -> Vec<String> {
        let all = self.commands.lock().expect("commands");
        all.iter()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The COPY fallback's commands received so far (UID COPY, UID
    /// STORE, UID EXPUNGE), in order.
    pub(super) fn copy_fallback(&self) -> Vec<String> {
        let all = self.commands.lock().expect("commands");
        all.iter()
            .filter(|c| {
                ["UID COPY", "UID STORE", "UID EXPUNGE"]
                    .iter()
                    .any(|p| c.starts_with(p))
            })
            .cloned()
            .collect()
    }
}

/// The UID sets of the `UID FETCH <set> <items>` commands received.
pub(super) fn fetch_sets(run: &Run, items: &str) -> Vec<String> {
    run.commands("UID FETCH")
        .iter()
        .filter(|c| c.ends_with(items))
        .filter_map(|c| c.split(' ').nth(2).map(str::to_string))
        .collect()
}

/// Whether the IMAP UID set `set` (`1:3,5`) names `uid`.
pub(super) fn covers(set: &str, uid: u32) -> bool {
    set.split(',').any(|part| {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse().expect("uid"), b.parse().expect("uid"));
        (a.min(b)..=a.max(b)).contains(&uid)
    })
}

/// A puller for the scripted server, polling every `poll` seconds.
pub(super) async fn setup(
    dir: &tempfile::TempDir,
    port: u16,
    poll: u64,
    imap_extra: &str,
) -> (Arc<dyn Store>, Puller) {
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").expect("pw");
    let text = format!(
        r#"
[company]
name = "Acme"

[[users]]
id = "ann"
email = "ann@acme.example"

[[channels]]
id = "mailbox"
kind = "imap"
address = "help@acme.example"
[channels.imap]
host = "127.0.0.1"
port = {port}
tls = "none"
username = "test"
password_file = {pw:?}
poll_interval_secs = {poll}
{imap_extra}"#
    );
    let config = crate::config::parse(&text, &dir.path().join("postdesk.toml"))
        .unwrap_or_else(|e| panic!("config: {e:?}"));
    let store = crate::store::tests::fresh_store(dir.path()).await;
    let live = Arc::new(Live::new(config));
    let puller = Puller::new(
        "mailbox".into(),
        store.clone(),
        live,
        Arc::new(Notify::new()),
        Arc::new(TokenSource::new()),
    );
    (store, puller)
}

//! DATA and BDAT (CHUNKING): receiving the message bytes and committing them to the spool.
//!
//! DATA goes through [`DotReceiver`], our own small state machine: the message
//! ends only at the exact `<CRLF>.<CRLF>`, and a line that starts with a dot
//! right after a `<CRLF>` loses that dot (dot-unstuffing, RFC 5321 4.5.2).
//! A bare LF or bare CR never starts a line: `\n.\n`, `\r.\r`, `\n.\r\n` and
//! `\r\n.\r\r\n` are message content, not an end (no SMTP smuggling). The
//! bytes between line ends are copied in runs found with `memchr`, not one
//! by one. smtp-proto's `DataReceiver` was the first implementation; it ends
//! on `<CRLF>.<CR><CR>…<LF>` and does not treat the start of DATA as a line
//! start, so it needed a wrapper, and it handled every byte on its own. BDAT
//! chunks still go through smtp-proto's `BdatReceiver`.
//!
//! Must not: send `250` before `Spool::commit` returned `Ok`; keep more than
//! `max_message_size` bytes (plus one read buffer); stop reading an oversize message
//! before its end (that would turn its body into commands). Limits: an empty non-LAST
//! BDAT chunk counts toward `max_junk_commands`; an accepted message resets that count.
//! Untrusted input: message bytes and BDAT chunk sizes.

use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply;
use super::session::{Flow, Session, State, Transaction};
use super::{Envelope, Spool, SpoolError, rejected};

/// Where the receiver is, relative to line ends and the terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Inside a line; the last byte was not a CR.
    Text,
    /// Inside a line, right after a CR.
    Cr,
    /// Right after a CRLF (or at the start of DATA).
    LineStart,
    /// A dot at a line start: dropped, whatever follows.
    Dot,
    /// `.<CR>` at a line start: the end if an LF follows.
    DotCr,
}

/// DATA's bytes: dot-unstuffed into a sink, ending only at `<CRLF>.<CRLF>`.
pub(crate) struct DotReceiver {
    state: At,
}

impl DotReceiver {
    pub fn new() -> Self {
        // The DATA command's CRLF counts as the line end before a first-line dot.
        Self {
            state: At::LineStart,
        }
    }

    /// Feed `bytes`, appending unstuffed message bytes to `sink`. Returns how many bytes
    /// were consumed and whether the message ended (the terminator is not in `sink`).
    pub fn ingest(&mut self, bytes: &[u8], sink: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == At::Text {
                // The common case: copy up to and including the next CR.
                match memchr::memchr(b'\r', &bytes[i..]) {
                    Some(at) => {
                        sink.extend_from_slice(&bytes[i..=i + at]);
                        i += at + 1;
                        self.state = At::Cr;
                        continue;
                    }
                    None => {
                        sink.extend_from_slice(&bytes[i..]);
                        return (bytes.len(), false);
                    }
                }
            }
            let b = bytes[i];
            i += 1;
            self.state = match (self.state, b) {
                (At::Cr, b'\n') => {
                    sink.push(b'\n');
                    At::LineStart
                }
                (At::LineStart, b'.') => At::Dot,
                (At::Dot, b'\r') => At::DotCr,
                (At::DotCr, b'\n') => {
                    self.state = At::LineStart;
                    return (i, true);
                }
                // `.<CR>` then anything but LF: the dot was stuffing, the
                // CR is content, and `b` follows a CR.
                (At::DotCr, b) => {
                    sink.extend_from_slice(&[b'\r', b]);
                    if b == b'\r' { At::Cr } else { At::Text }
                }
                (_, b'\r') => {
                    sink.push(b'\r');
                    At::Cr
                }
                (_, b) => {
                    sink.push(b);
                    At::Text
                }
            };
        }
        (bytes.len(), false)
    }
}

/// Receiver for the bytes of one BDAT chunk.
pub(crate) enum ChunkRx {
    Keep(BdatReceiver),
    Discard(DummyDataReceiver),
}

/// One BDAT chunk being read.
pub(crate) struct BdatChunk {
    /// The transaction; for a rejected chunk, the untouched one to return to (if any).
    tx: Option<Transaction>,
    rx: ChunkRx,
    is_last: bool,
    size: usize,
    /// Set when the BDAT command itself was refused: its bytes are read and dropped.
    refused: Option<reply::Reply>,
}

impl<S, IO> Session<S, IO>
where
    S: Spool,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    pub(super) fn data(&mut self) -> Flow {
        let State::Mail(tx) = &self.state else {
            return self.error(reply::NEED_MAIL);
        };
        if tx.bdat {
            return self.error(reply::DATA_AFTER_BDAT);
        }
        if tx.rcpt_to.is_empty() {
            let reply = if tx.rcpt_attempts == 0 {
                reply::NEED_RCPT
            } else {
                reply::NO_VALID_RCPT
            };
            return self.error(reply);
        }
        let State::Mail(tx) = std::mem::replace(&mut self.state, State::Idle) else {
            return Flow::Continue;
        };
        self.state = State::Data(tx, DotReceiver::new());
        self.out.extend_from_slice(reply::START_DATA);
        Flow::Continue
    }

    /// Message bytes after `354`.
    pub(super) async fn on_data_bytes(&mut self) -> Flow {
        let max = self.shared.cfg.max_message_size;
        let State::Data(tx, rx) = &mut self.state else {
            return Flow::Continue;
        };
        let (used, ended) = rx.ingest(&self.rbuf[self.pos..self.filled], &mut tx.raw);
        self.pos += used;
        let State::Data(tx, _) = &mut self.state else {
            return Flow::Continue;
        };
        if !tx.too_large && tx.raw.len() > max {
            tx.too_large = true;
            tx.raw = Vec::new();
        }
        if tx.too_large {
            tx.raw.clear();
        }
        if !ended {
            return Flow::Continue;
        }
        let State::Data(tx, _) = std::mem::replace(&mut self.state, State::Idle) else {
            return Flow::Continue;
        };
        self.finish(tx).await
    }

    pub(super) async fn bdat(&mut self, size: usize, is_last: bool) -> Flow {
        let max = self.shared.cfg.max_message_size;
        let discard = || ChunkRx::Discard(DummyDataReceiver::new_bdat(size));
        let chunk = match std::mem::replace(&mut self.state, State::Idle) {
            State::Mail(mut tx) if !tx.rcpt_to.is_empty() => {
                tx.bdat = true;
                let rx = if tx.too_large || tx.raw.len().saturating_add(size) > max {
                    tx.too_large = true;
                    tx.raw = Vec::new();
                    discard()
                } else {
                    ChunkRx::Keep(BdatReceiver::new(size, is_last))
                };
                BdatChunk {
                    tx: Some(tx),
                    rx,
                    is_last,
                    size,
                    refused: None,
                }
            }
            State::Mail(tx) => {
                let refused = if tx.rcpt_attempts == 0 {
                    reply::NEED_RCPT
                } else {
                    reply::NO_VALID_RCPT
                };
                BdatChunk {
                    tx: Some(tx),
                    rx: discard(),
                    is_last,
                    size,
                    refused: Some(refused),
                }
            }
            _ => BdatChunk {
                tx: None,
                rx: discard(),
                is_last,
                size,
                refused: Some(reply::NEED_MAIL),
            },
        };
        if size == 0 {
            return self.end_chunk(chunk).await;
        }
        self.state = State::Bdat(chunk);
        Flow::Continue
    }

    /// Bytes of the current BDAT chunk.
    pub(super) async fn on_bdat_bytes(&mut self) -> Flow {
        let pending = &self.rbuf[self.pos..self.filled];
        let State::Bdat(chunk) = &mut self.state else {
            return Flow::Continue;
        };
        let mut iter = pending.iter();
        let done = match (&mut chunk.rx, chunk.tx.as_mut()) {
            (ChunkRx::Keep(rx), Some(tx)) => rx.ingest(&mut iter, &mut tx.raw),
            (ChunkRx::Keep(rx), None) => rx.ingest(&mut iter, &mut Vec::new()),
            (ChunkRx::Discard(rx), _) => rx.ingest(&mut iter),
        };
        let used = pending.len() - iter.as_slice().len();
        self.pos += used;
        if !done {
            return Flow::Continue;
        }
        let State::Bdat(chunk) = std::mem::replace(&mut self.state, State::Idle) else {
            return Flow::Continue;
        };
        self.end_chunk(chunk).await
    }

    async fn end_chunk(&mut self, chunk: BdatChunk) -> Flow {
        if let Some(refused) = chunk.refused {
            self.state = chunk.tx.map_or(State::Idle, State::Mail);
            return self.error(refused);
        }
        let Some(tx) = chunk.tx else {
            return Flow::Continue;
        };
        if tx.too_large || !chunk.is_last {
            if tx.too_large {
                // Refuse at once; later chunks of this message get 503 (no transaction).
                return self.finish(tx).await;
            }
            self.state = State::Mail(tx);
            // An empty chunk adds nothing, so it must not loop for free.
            if chunk.size == 0 && self.over_junk_limit() {
                return Flow::Close;
            }
            let text = format!("{} octets received", chunk.size);
            reply::write_reply(&mut self.out, 250, [2, 0, 0], text);
            return Flow::Continue;
        }
        self.finish(tx).await
    }

    /// The message is complete: refuse it if oversize, else commit and answer.
    async fn finish(&mut self, tx: Transaction) -> Flow {
        if tx.too_large {
            tracing::info!(client_ip = %self.peer, "message too large");
            rejected("size");
            metrics::counter!("postdesk_smtp_messages_total", "result" => "rejected").increment(1);
            self.reply(reply::TOO_BIG);
            return Flow::Continue;
        }
        let envelope = Envelope {
            mail_from: tx.mail_from,
            rcpt_to: tx.rcpt_to,
            client_ip: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls,
        };
        let size = tx.raw.len();
        match self.shared.spool.commit(envelope, tx.raw).await {
            Ok(id) => {
                tracing::info!(client_ip = %self.peer, spool_id = id, size, "message accepted");
                metrics::counter!("postdesk_smtp_messages_total", "result" => "accepted")
                    .increment(1);
                self.junk = 0;
                reply::write_reply(&mut self.out, 250, [2, 0, 0], format!("Ok: queued as {id}"));
                Flow::Continue
            }
            Err(error) => {
                tracing::warn!(client_ip = %self.peer, %error, size, "spool refused message");
                rejected("storage");
                metrics::counter!("postdesk_smtp_messages_total", "result" => "rejected")
                    .increment(1);
                match error {
                    SpoolError::Full => {
                        self.reply(reply::STORAGE_FULL);
                        Flow::Continue
                    }
                    SpoolError::Unavailable(_) => {
                        self.reply(reply::STORAGE_UNAVAILABLE);
                        Flow::Continue
                    }
                    SpoolError::ShuttingDown => {
                        self.reply(reply::SHUTTING_DOWN);
                        Flow::Close
                    }
                }
            }
        }
    }
}

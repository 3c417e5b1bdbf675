//! DATA and BDAT (CHUNKING): receiving the message bytes and committing them to the spool.
//!
//! DATA goes through smtp-proto's `DataReceiver` (dot-unstuffing), wrapped in
//! [`DotReceiver`], which lets the message end only at the exact `<CRLF>.<CRLF>`.
//! smtp-proto 0.2.5 alone (a) ends on `<CRLF>.<CR><CR>…<LF>` (a bare CR after the dot)
//! and (b) starts with no "previous line end", so `.<CRLF>` right after `354` does not end
//! the message and a leading `..` is not unstuffed. Bare-LF forms (`\n.\n`, `\n.\r\n`,
//! `\r\n.\n`) are already not an end there; tests pin all of this.
//!
//! Must not: send `250` before `Spool::commit` returned `Ok`; keep more than
//! `max_message_size` bytes (plus one read buffer); stop reading an oversize message
//! before its end (that would turn its body into commands).
//! Untrusted input: message bytes and BDAT chunk sizes.

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply;
use super::session::{Flow, Session, State, Transaction};
use super::{Envelope, Spool, SpoolError, rejected};

/// The only sequence that ends DATA.
const END: &[u8; 5] = b"\r\n.\r\n";

/// `DataReceiver` that ends only at the exact `<CRLF>.<CRLF>`.
pub(crate) struct DotReceiver {
    rx: DataReceiver,
    /// How many bytes of `END` the input has matched so far.
    matched: usize,
}

/// A `DataReceiver` in the state "a line just ended", as at the start of DATA.
fn fresh_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut scratch = Vec::new();
    rx.ingest(&mut b"\r\n".iter(), &mut scratch);
    rx
}

impl DotReceiver {
    pub fn new() -> Self {
        // The DATA command's CRLF counts as the line end before a first-line dot.
        Self {
            rx: fresh_receiver(),
            matched: 2,
        }
    }

    /// Feed `bytes`, appending unstuffed message bytes to `sink`. Returns how many bytes
    /// were consumed and whether the message ended (the terminator is not in `sink`).
    pub fn ingest(&mut self, bytes: &[u8], sink: &mut Vec<u8>) -> (usize, bool) {
        let mut strict_end = None;
        for (i, &b) in bytes.iter().enumerate() {
            self.matched = if END.get(self.matched) == Some(&b) {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == END.len() {
                strict_end = Some(i + 1);
                break;
            }
        }
        let used = strict_end.unwrap_or(bytes.len());
        let mut rest = &bytes[..used];
        loop {
            let mut iter = rest.iter();
            let ended = self.rx.ingest(&mut iter, sink);
            rest = iter.as_slice();
            if !ended {
                break;
            }
            if rest.is_empty() && strict_end.is_some() {
                return (used, true);
            }
            // smtp-proto ended on `<CRLF>.<CR>…<CR><LF>`, which is not an end: put back
            // the `<CR><LF>` it swallowed and go on with a receiver at a line start.
            sink.extend_from_slice(b"\r\n");
            self.rx = fresh_receiver();
        }
        // smtp-proto always sees an exact terminator; this only guards the invariant.
        (used, strict_end.is_some())
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

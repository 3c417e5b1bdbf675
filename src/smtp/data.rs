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
//! Memory: a message's buffer grows on demand, its capacity taken from the shared
//! in-flight budget (`budget`) before it grows — DATA by doubling as bytes arrive,
//! BDAT by the whole chunk at the BDAT command (the buffer still grows as the chunk's
//! bytes arrive). When the budget is spent the message's bytes and budget are
//! dropped at once, the rest is read and discarded, and the end of the message
//! (DATA) or the chunk (BDAT) gets `452 4.3.1`; the session goes on. The budget is
//! given back after `Spool::commit` returns, or when the transaction ends otherwise.
//!
//! Must not: send `250` before `Spool::commit` returned `Ok`; keep more than
//! `max_message_size` + 1 bytes (plus one read buffer); hold message bytes the
//! budget does not cover; stop reading an oversize or refused message before its end
//! (that would turn its body into commands). Limits: `max_message_size`,
//! `max_inflight_bytes`; an empty non-LAST BDAT chunk counts toward
//! `max_junk_commands`; an accepted message resets that count. The data timeouts
//! (`data_timeout_secs`, `min_data_rate`) are enforced where the session reads.
//! Untrusted input: message bytes and BDAT chunk sizes.

use smtp_proto::request::receiver::{BdatReceiver, DummyDataReceiver};
use tokio::io::{AsyncRead, AsyncWrite};

use super::reply;
use super::session::{Discard, Flow, Session, State, Transaction, Transfer};
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
    /// The message's length once this chunk is in (what its budget covers).
    end: usize,
    /// Set when the BDAT command itself was refused: its bytes are read and dropped.
    refused: Option<reply::Reply>,
}

impl BdatChunk {
    pub fn tx(&self) -> Option<&Transaction> {
        self.tx.as_ref()
    }
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
        let State::Mail(mut tx) = std::mem::replace(&mut self.state, State::Idle) else {
            return Flow::Continue;
        };
        tx.transfer = Some(Transfer::new());
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
        let mut pending = &self.rbuf[self.pos..self.filled];
        if tx.discard.is_none() {
            // At most one byte past the limit is kept, so `raw` never needs more
            // than `max + 1` (the rest stays in `rbuf` for the next round).
            let room = max.saturating_add(1).saturating_sub(tx.raw.len());
            pending = &pending[..pending.len().min(room)];
            let need = tx.raw.len() + pending.len();
            if !tx.mem.fit(&mut tx.raw, need, max.saturating_add(1)) {
                tracing::info!(client_ip = %self.peer, held = tx.raw.len(),
                    "in-flight byte budget spent: refusing the message at its end");
                tx.discard(Discard::NoMemory);
            }
        }
        let (used, ended) = rx.ingest(pending, &mut tx.raw);
        self.pos += used;
        if let Some(transfer) = &mut tx.transfer {
            transfer.bytes += used as u64;
        }
        if tx.discard.is_none() && tx.raw.len() > max {
            tx.discard(Discard::TooLarge);
        }
        if tx.discard.is_some() {
            // `raw` is only a scratch sink now (at most one read's worth).
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
                tx.transfer.get_or_insert_with(Transfer::new);
                let end = tx.raw.len().saturating_add(size);
                if tx.discard.is_none() && end > max {
                    tx.discard(Discard::TooLarge);
                }
                // The whole chunk's budget now: the chunk is then either kept whole
                // or refused whole, never cut off in the middle.
                if tx.discard.is_none() && !tx.mem.grow_to(end) {
                    tracing::info!(client_ip = %self.peer, held = tx.raw.len(), size,
                        "in-flight byte budget spent: refusing the BDAT chunk");
                    tx.discard(Discard::NoMemory);
                }
                let rx = if tx.discard.is_some() {
                    discard()
                } else {
                    ChunkRx::Keep(BdatReceiver::new(size, is_last))
                };
                BdatChunk {
                    tx: Some(tx),
                    rx,
                    is_last,
                    size,
                    end,
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
                    end: 0,
                    refused: Some(refused),
                }
            }
            _ => BdatChunk {
                tx: None,
                rx: discard(),
                is_last,
                size,
                end: 0,
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
            (ChunkRx::Keep(rx), Some(tx)) => {
                // The chunk's budget was taken at BDAT: this only sizes the buffer,
                // within it (so smtp-proto's `extend` never reallocates past it).
                let need = tx.raw.len().saturating_add(pending.len()).min(chunk.end);
                let fits = tx.mem.fit(&mut tx.raw, need, chunk.end);
                debug_assert!(fits, "a BDAT chunk's budget is taken whole");
                rx.ingest(&mut iter, &mut tx.raw)
            }
            (ChunkRx::Keep(rx), None) => rx.ingest(&mut iter, &mut Vec::new()),
            (ChunkRx::Discard(rx), _) => rx.ingest(&mut iter),
        };
        let used = pending.len() - iter.as_slice().len();
        self.pos += used;
        if let Some(transfer) = chunk.tx.as_mut().and_then(|tx| tx.transfer.as_mut()) {
            transfer.bytes += used as u64;
        }
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
        if tx.discard.is_some() || !chunk.is_last {
            if tx.discard.is_some() {
                // Refuse at once (RFC 3030: a failed chunk fails the transaction);
                // later chunks of this message get 503 (no transaction).
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

    /// The message is complete: refuse it if oversize or over the budget, else commit
    /// and answer. Its budget is given back when the commit returned.
    async fn finish(&mut self, tx: Transaction) -> Flow {
        match tx.discard {
            None => {}
            Some(Discard::TooLarge) => {
                tracing::info!(client_ip = %self.peer, "message too large");
                rejected("size");
                metrics::counter!("postdesk_smtp_messages_total", "result" => "rejected")
                    .increment(1);
                self.reply(reply::TOO_BIG);
                return Flow::Continue;
            }
            Some(Discard::NoMemory) => {
                tracing::info!(client_ip = %self.peer, "message refused: in-flight byte budget spent");
                rejected("memory");
                metrics::counter!("postdesk_smtp_messages_total", "result" => "rejected")
                    .increment(1);
                self.reply(reply::NO_MEMORY);
                return Flow::Continue;
            }
        }
        let Transaction {
            mail_from,
            rcpt_to,
            raw,
            mem,
            ..
        } = tx;
        let envelope = Envelope {
            mail_from,
            rcpt_to,
            client_ip: self.peer,
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls,
        };
        let size = raw.len();
        let committed = self.shared.spool.commit(envelope, raw).await;
        // The bytes are the spool's now (or dropped): give their budget back.
        drop(mem);
        match committed {
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

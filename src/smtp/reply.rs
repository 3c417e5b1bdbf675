//! Every fixed SMTP reply the listener sends, as one table of constants, and the writer
//! that renders a reply through smtp-proto's `Response`.
//!
//! Must not: contain logic or echo client input (client text never reaches a reply, so a
//! reply cannot be used to inject lines). Limits: none. Untrusted input: none.

use smtp_proto::Response;

/// One reply: basic code, enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    pub esc: [u8; 3],
    pub text: &'static str,
}

const fn r(code: u16, esc: [u8; 3], text: &'static str) -> Reply {
    Reply { code, esc, text }
}

impl Reply {
    /// Append this reply to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_reply(out, self.code, self.esc, self.text);
    }
}

/// Append one reply line with a dynamic, server-generated text.
pub(crate) fn write_reply(
    out: &mut Vec<u8>,
    code: u16,
    esc: [u8; 3],
    text: impl std::fmt::Display,
) {
    let [a, b, c] = esc;
    // Writing into a Vec cannot fail.
    let _ = Response::new(code, a, b, c, text).write(out);
}

// 2xx
pub(crate) const OK: Reply = r(250, [2, 0, 0], "Ok");
pub(crate) const SENDER_OK: Reply = r(250, [2, 1, 0], "Sender ok");
pub(crate) const RCPT_OK: Reply = r(250, [2, 1, 5], "Recipient ok");
pub(crate) const VRFY: Reply = r(
    252,
    [2, 5, 0],
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub(crate) const HELP: Reply = r(214, [2, 0, 0], "See RFC 5321");
pub(crate) const BYE: Reply = r(221, [2, 0, 0], "Bye");
pub(crate) const TLS_READY: Reply = r(220, [2, 0, 0], "Ready to start TLS");

// 4xx
pub(crate) const IDLE_TIMEOUT: Reply = r(421, [4, 4, 2], "Idle timeout, closing connection");
pub(crate) const SESSION_TIMEOUT: Reply = r(421, [4, 4, 2], "Session time limit exceeded");
pub(crate) const DATA_TIMEOUT: Reply = r(
    421,
    [4, 4, 2],
    "Message transfer time limit exceeded, closing connection",
);
pub(crate) const DATA_TOO_SLOW: Reply = r(
    421,
    [4, 4, 2],
    "Message transfer too slow, closing connection",
);
pub(crate) const SHUTTING_DOWN: Reply = r(421, [4, 3, 2], "Service shutting down, try again later");
pub(crate) const TOO_MANY_CONNECTIONS: Reply = r(421, [4, 7, 0], "Too many connections");
pub(crate) const TOO_MANY_CONNECTIONS_IP: Reply =
    r(421, [4, 7, 0], "Too many connections from your address");
pub(crate) const TOO_MANY_ERRORS: Reply = r(421, [4, 7, 0], "Too many errors");
pub(crate) const TOO_MANY_JUNK: Reply = r(421, [4, 7, 0], "Too many commands without mail");
pub(crate) const RCPT_DISABLED: Reply = r(
    450,
    [4, 2, 1],
    "Mailbox temporarily disabled, try again later",
);
pub(crate) const RATE_LIMITED: Reply = r(451, [4, 7, 0], "Message rate exceeded, try again later");
pub(crate) const STORAGE_UNAVAILABLE: Reply =
    r(451, [4, 3, 0], "Temporary storage failure, try again later");
pub(crate) const STORAGE_FULL: Reply = r(452, [4, 3, 1], "Insufficient system storage");
/// The in-flight byte budget (`max_inflight_bytes`) is spent.
pub(crate) const NO_MEMORY: Reply = r(
    452,
    [4, 3, 1],
    "Insufficient system resources, try again later",
);
pub(crate) const TOO_MANY_RCPTS: Reply = r(452, [4, 5, 3], "Too many recipients");
pub(crate) const TLS_UNAVAILABLE: Reply = r(454, [4, 7, 0], "TLS not available");

// 5xx
pub(crate) const UNKNOWN_COMMAND: Reply = r(500, [5, 5, 2], "Syntax error, command unrecognized");
pub(crate) const LINE_TOO_LONG: Reply = r(500, [5, 5, 2], "Line too long");
pub(crate) const BAD_SENDER: Reply = r(501, [5, 1, 7], "Bad sender address syntax");
pub(crate) const BAD_RCPT: Reply = r(501, [5, 1, 3], "Bad recipient address syntax");
pub(crate) const SYNTAX: Reply = r(501, [5, 5, 4], "Syntax error in parameters or arguments");
pub(crate) const NOT_IMPLEMENTED: Reply = r(502, [5, 5, 1], "Command not implemented");
pub(crate) const NEED_HELO: Reply = r(503, [5, 5, 1], "Send EHLO or HELO first");
pub(crate) const NESTED_MAIL: Reply = r(503, [5, 5, 1], "Sender already specified");
pub(crate) const NEED_MAIL: Reply = r(503, [5, 5, 1], "Need MAIL command");
pub(crate) const NEED_RCPT: Reply = r(503, [5, 5, 1], "Need RCPT command");
pub(crate) const DATA_AFTER_BDAT: Reply = r(503, [5, 5, 1], "DATA not allowed after BDAT");
pub(crate) const ALREADY_TLS: Reply = r(503, [5, 5, 1], "TLS already active");
/// RFC 5321 §4.1.1.11: MAIL/RCPT parameter not recognized or not implemented.
pub(crate) const UNSUPPORTED_PARAM: Reply = r(555, [5, 5, 4], "Unsupported parameter");
pub(crate) const RCPT_UNKNOWN: Reply =
    r(550, [5, 1, 1], "Recipient address rejected: unknown user");
pub(crate) const TOO_BIG: Reply = r(552, [5, 3, 4], "Message size exceeds fixed limit");
pub(crate) const NO_VALID_RCPT: Reply = r(554, [5, 5, 1], "No valid recipients");
pub(crate) const NEED_TLS: Reply = r(530, [5, 7, 0], "Must issue a STARTTLS command first");

/// `354` carries no enhanced status code (RFC 2034 covers 2xx/4xx/5xx only).
pub(crate) const START_DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";

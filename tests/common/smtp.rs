//! A minimal blocking SMTP client for protocol tests: raw lines in, reply
//! codes out, so tests can send exactly the bytes they mean.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connect and read the greeting (asserts 220).
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Self::connect_raw(addr);
        let (code, text) = c.reply();
        assert_eq!(code, 220, "greeting: {text}");
        c
    }

    /// Connect without reading the greeting.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        Client { stream, reader }
    }

    /// Read one (possibly multi-line) reply. Code 0 means the connection closed.
    pub fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return (0, all),
                Ok(_) => {}
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, all);
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Send one command line and read its reply.
    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// MAIL + RCPT… + DATA with `body` (after EHLO; already dot-stuffed,
    /// without the final dot). Returns the final reply.
    pub fn mail(&mut self, from: &str, rcpts: &[&str], body: &str) -> (u16, String) {
        let (c, t) = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(c, 250, "MAIL: {t}");
        for r in rcpts {
            let (c, t) = self.cmd(&format!("RCPT TO:<{r}>"));
            assert_eq!(c, 250, "RCPT {r}: {t}");
        }
        let (c, t) = self.cmd("DATA");
        assert_eq!(c, 354, "DATA: {t}");
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}

/// A simple RFC 5322 message with CRLF line ends.
pub fn message(from: &str, to: &str, subject: &str, message_id: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
}

/// Send a whole message file over SMTP: line ends become CRLF and lines that
/// start with a dot are stuffed. Returns the reply to the end of DATA.
pub fn send_file(addr: SocketAddr, mail_from: &str, rcpt: &str, raw: &[u8]) -> (u16, String) {
    let mut c = Client::connect(addr);
    let (code, text) = c.cmd("EHLO sender.example");
    assert_eq!(code, 250, "{text}");
    let mut body = Vec::with_capacity(raw.len() + raw.len() / 50);
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'.') {
            body.push(b'.');
        }
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    let (code, text) = c.cmd(&format!("MAIL FROM:<{mail_from}>"));
    assert_eq!(code, 250, "{text}");
    let (code, text) = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert_eq!(code, 250, "{text}");
    assert_eq!(c.cmd("DATA").0, 354);
    c.send(&body);
    c.send(b".\r\n");
    c.reply()
}

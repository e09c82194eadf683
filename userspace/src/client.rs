//! A small, blocking HTTP/1.1 client for the agent's Unix socket (what `eipctl` uses).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};

use crate::api::{ErrorBody, ErrorKind};

/// Default socket path, shared by `eipgwd` and `eipctl`.
pub const DEFAULT_SOCKET: &str = "/run/eipgw/eipgw.sock";

/// How long to wait for the agent's answer (a million-mapping `apply` takes seconds).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a call did not succeed. The CLI maps each kind to its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The agent refused the request; nothing changed.
    #[error("{}: {}", .0.code, .0.message)]
    Refused(ErrorBody),
    /// The agent took the request but could not carry it out.
    #[error("agent failed: {}", .0.message)]
    Failed(ErrorBody),
    /// No agent answered, or the answer made no sense.
    #[error("{0}")]
    Unreachable(String),
    /// The command line or its input file is wrong; nothing was sent.
    #[error("{0}")]
    Usage(String),
}

pub struct Client {
    socket: PathBuf,
}

/// What the head of an HTTP/1.1 answer says that matters here.
struct Head {
    status: u16,
    chunked: bool,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self { socket: socket.as_ref().to_owned() }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call("GET", path, None::<&()>)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        self.call("POST", path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<(), CallError> {
        let _: serde_json::Value = self.call("DELETE", path, None::<&()>)?;
        Ok(())
    }

    /// POSTs `body` and hands each line of a streamed (chunked, NDJSON) answer to `on_line`
    /// as it arrives.
    pub fn post_lines<B: Serialize>(
        &self,
        path: &str,
        body: &B,
        mut on_line: impl FnMut(&[u8]),
    ) -> Result<(), CallError> {
        let (head, mut reader) = self.send("POST", path, Some(body))?;
        if !(200..300).contains(&head.status) || !head.chunked {
            let payload = self.read_rest(&mut reader)?;
            if !(200..300).contains(&head.status) {
                return Err(self.error_from(head.status, &payload));
            }
            payload.split(|&b| b == b'\n').filter(|l| !l.is_empty()).for_each(on_line);
            return Ok(());
        }
        let mut pending = Vec::new();
        loop {
            let chunk = self.read_chunk(&mut reader)?;
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                on_line(&pending[..end]);
                pending.drain(..=end);
            }
            if chunk.is_empty() {
                if !pending.is_empty() {
                    on_line(&pending);
                }
                return Ok(());
            }
        }
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let (head, mut reader) = self.send(method, path, body)?;
        let payload = if head.chunked {
            let mut all = Vec::new();
            loop {
                let chunk = self.read_chunk(&mut reader)?;
                if chunk.is_empty() {
                    break all;
                }
                all.extend_from_slice(&chunk);
            }
        } else {
            self.read_rest(&mut reader)?
        };
        if !(200..300).contains(&head.status) {
            return Err(self.error_from(head.status, &payload));
        }
        let payload = if payload.is_empty() { b"null".as_slice() } else { &payload };
        serde_json::from_slice(payload).map_err(|e| self.unreachable("unexpected answer from", &e))
    }

    /// Sends one request (`Connection: close`) and reads the status line and headers; the
    /// reader is left at the start of the body.
    fn send<B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<(Head, BufReader<UnixStream>), CallError> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| self.unreachable("cannot connect to", &e))?;
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(|e| self.unreachable("socket", &e))?;
        let body = match body {
            Some(b) => {
                serde_json::to_vec(b).map_err(|e| self.unreachable("encoding a request for", &e))?
            }
            None => Vec::new(),
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: eipgw\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(&body))
            .map_err(|e| self.unreachable("writing to", &e))?;
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n =
                reader.read_line(&mut line).map_err(|e| self.unreachable("reading from", &e))?;
            if n == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let head =
            parse_head(&head).ok_or_else(|| self.unreachable("malformed answer from", &"HTTP"))?;
        Ok((head, reader))
    }

    fn read_rest(&self, reader: &mut BufReader<UnixStream>) -> Result<Vec<u8>, CallError> {
        let mut payload = Vec::new();
        reader.read_to_end(&mut payload).map_err(|e| self.unreachable("reading from", &e))?;
        Ok(payload)
    }

    /// One chunk of a chunked body (RFC 9112, 7.1); empty for the last one.
    fn read_chunk(&self, reader: &mut BufReader<UnixStream>) -> Result<Vec<u8>, CallError> {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).map_err(|e| self.unreachable("reading from", &e))?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| self.unreachable("malformed chunk from", &size_line.trim()))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).map_err(|e| self.unreachable("reading from", &e))?;
        chunk.truncate(size);
        Ok(chunk)
    }

    fn unreachable(&self, what: &str, e: &dyn std::fmt::Display) -> CallError {
        CallError::Unreachable(format!(
            "{what} {}: {e} (is eipgwd running? set --api-socket or EIPGW_SOCKET)",
            self.socket.display()
        ))
    }

    fn error_from(&self, status: u16, payload: &[u8]) -> CallError {
        match serde_json::from_slice::<ErrorBody>(payload) {
            Ok(error) => match error.kind {
                ErrorKind::Refused => CallError::Refused(error),
                ErrorKind::Failed => CallError::Failed(error),
            },
            Err(_) => self.unreachable(
                &format!("HTTP {status} ({}) from", String::from_utf8_lossy(payload).trim()),
                &"no error body",
            ),
        }
    }
}

fn parse_head(head: &str) -> Option<Head> {
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Some(Head { status, chunked })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_chunking_from_the_head() {
        let head = parse_head("HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n").unwrap();
        assert_eq!((head.status, head.chunked), (409, false));
        let head = parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n").unwrap();
        assert_eq!((head.status, head.chunked), (200, true));
        assert!(parse_head("garbage").is_none());
    }
}

//! A small, blocking HTTP/1.1 client for the agent's Unix socket (what `eipctl` uses).

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};

use crate::api::{ErrorBody, ErrorKind};

/// Default socket path, shared by `eipgwd` and `eipctl`.
pub const DEFAULT_SOCKET: &str = "/run/eipgw/eipgw.sock";

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

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CallError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            CallError::Unreachable(format!(
                "{what} {}: {e} (is eipgwd running? set --api-socket or EIPGW_SOCKET)",
                self.socket.display()
            ))
        };
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|e| unreachable("cannot connect to", &e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| unreachable("socket", &e))?;
        let body = match body {
            Some(b) => {
                serde_json::to_vec(b).map_err(|e| unreachable("encoding a request for", &e))?
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
            .map_err(|e| unreachable("writing to", &e))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| unreachable("reading from", &e))?;
        let (status, payload) = split_response(&response)
            .ok_or_else(|| unreachable("malformed answer from", &"HTTP"))?;
        if (200..300).contains(&status) {
            let payload = if payload.is_empty() { b"null".as_slice() } else { payload };
            return serde_json::from_slice(payload)
                .map_err(|e| unreachable("unexpected answer from", &e));
        }
        let error: ErrorBody = serde_json::from_slice(payload).map_err(|_| {
            unreachable(
                &format!("HTTP {status} ({}) from", String::from_utf8_lossy(payload).trim()),
                &"no error body",
            )
        })?;
        Err(match error.kind {
            ErrorKind::Refused => CallError::Refused(error),
            ErrorKind::Failed => CallError::Failed(error),
        })
    }
}

/// Status code and body of a complete HTTP/1.1 response with a Content-Length (which is
/// what the agent always sends).
fn split_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, &response[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_status_and_body() {
        let raw = b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(split_response(raw), Some((409, b"{}".as_slice())));
        assert_eq!(split_response(b"garbage"), None);
    }
}

//! The few questions the plugin asks the Docker daemon over its API socket (what `docker -H`
//! talks to): a network's name, which CreateNetwork does not carry. One HTTP/1.0 request per
//! question on a blocking unix stream, with a short timeout: a daemon that does not answer
//! must not hold up a driver call for long.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Docker's own default (`DOCKER_HOST` unset).
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--docker-host {0:?}: only unix:///PATH sockets are supported")]
    Scheme(String),
    #[error("Docker API at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Docker API at {path}: {why}")]
    Answer { path: PathBuf, why: String },
}

/// The daemon's API socket.
#[derive(Debug, Clone)]
pub struct DockerHost {
    path: PathBuf,
}

impl DockerHost {
    /// `unix:///var/run/docker.sock` or a plain absolute path.
    pub fn parse(s: &str) -> Result<DockerHost, ClientError> {
        let path = match s.strip_prefix("unix://") {
            Some(p) => p,
            None if s.starts_with('/') => s,
            None => return Err(ClientError::Scheme(s.to_string())),
        };
        if !path.starts_with('/') {
            return Err(ClientError::Scheme(s.to_string()));
        }
        Ok(DockerHost {
            path: PathBuf::from(path),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the Docker network `id`; None while the daemon does not know it (during
    /// its own CreateNetwork call it has not stored the network yet).
    pub fn network_name(&self, id: &str) -> Result<Option<String>, ClientError> {
        Ok(self
            .network(id)?
            .and_then(|v| v.get("Name").and_then(|n| n.as_str()).map(str::to_string)))
    }

    /// `GET /networks/ID`: the network as `docker network inspect` shows it, None on 404.
    fn network(&self, id: &str) -> Result<Option<serde_json::Value>, ClientError> {
        // Ids are hex: nothing to escape in the path.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let (status, body) = self.get(&format!("/networks/{id}"))?;
        match status {
            200 => {}
            404 => return Ok(None),
            s => return Err(self.answer(format!("GET /networks/{id}: status {s}"))),
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| self.answer(format!("GET /networks/{id}: {e}")))
    }

    /// The endpoint ids Docker has on network `id` (its containers' endpoints); None when
    /// the daemon does not know the network.
    pub fn network_endpoints(&self, id: &str) -> Result<Option<Vec<String>>, ClientError> {
        let Some(v) = self.network(id)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        if let Some(containers) = v.get("Containers").and_then(|c| c.as_object()) {
            for c in containers.values() {
                if let Some(ep) = c.get("EndpointID").and_then(|e| e.as_str()) {
                    out.push(ep.to_string());
                }
            }
        }
        Ok(Some(out))
    }

    /// Every network the daemon has, as `docker network inspect` shows each (with its
    /// containers: the list itself leaves them out).
    pub fn networks(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        let (status, body) = self.get("/networks")?;
        if status != 200 {
            return Err(self.answer(format!("GET /networks: status {status}")));
        }
        let list: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| self.answer(format!("GET /networks: {e}")))?;
        let mut out = Vec::new();
        for n in list {
            if let Some(full) = n
                .get("Id")
                .and_then(|i| i.as_str())
                .map(|id| self.network(id))
            {
                out.extend(full?);
            }
        }
        Ok(out)
    }

    fn answer(&self, why: String) -> ClientError {
        ClientError::Answer {
            path: self.path.clone(),
            why,
        }
    }

    /// `GET path`: the status code and the body.
    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
        let io = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut s = UnixStream::connect(&self.path).map_err(io)?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        // HTTP/1.0: the daemon sends a plain body and closes the connection.
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
            .map_err(io)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(io)?;
        parse_response(&raw).ok_or_else(|| self.answer(format!("GET {path}: malformed answer")))
    }
}

/// An HTTP/1.x answer without chunked encoding: (status, body).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        return None;
    }
    Some((status, raw[end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_answers() {
        assert_eq!(
            DockerHost::parse(DEFAULT_HOST).unwrap().path(),
            Path::new("/var/run/docker.sock")
        );
        assert_eq!(
            DockerHost::parse("/tmp/d.sock").unwrap().path(),
            Path::new("/tmp/d.sock")
        );
        for bad in ["tcp://1.2.3.4:2375", "unix://rel", "d.sock"] {
            assert!(DockerHost::parse(bad).is_err(), "{bad}");
        }
        let (s, b) =
            parse_response(b"HTTP/1.0 200 OK\r\nContent-Type: x\r\n\r\n{\"Name\":\"blue\"}")
                .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{\"Name\":\"blue\"}"[..]));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5").is_none()
        );
        assert!(parse_response(b"garbage").is_none());
    }
}

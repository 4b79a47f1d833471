//! etcd 3.4's discovery protocol (`--discovery URL`), run once by a member
//! that has never started: the same registry as v3 discovery, kept in a v2
//! keys API (etcd with `--enable-v2`) and spoken over plain HTTP/1.1,
//! through `--discovery-proxy` when given. Each answer is bounded in size
//! and every call but the long-polling wait in time.

use std::time::Duration;

use common::config::Member;
use common::discovery::V2Discovery;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::discovery::{
    registration, retrying, unreachable, Cluster, DiscoveryError, Registrations,
};

/// etcd's client timeout for one call that does not wait.
const CALL: Duration = Duration::from_secs(5);
/// More than any registry listing: a bigger answer is refused.
const MAX_ANSWER: usize = 4 << 20;

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `X-Etcd-Index`: the store's index when it answered.
    index: Option<u64>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Value, DiscoveryError> {
        serde_json::from_slice(&self.body).map_err(|_| DiscoveryError::BadEndpoint)
    }

    /// The v2 error code of a refusal.
    fn error_code(&self) -> Option<i64> {
        self.json().ok()?.get("errorCode")?.as_i64()
    }
}

/// `s` percent-encoded for a form or query value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A chunked body decoded; None when malformed.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Parse a whole HTTP/1.1 response read to the end of the connection.
fn parse_answer(raw: &[u8]) -> Result<Answer, DiscoveryError> {
    let bad = || unreachable("malformed HTTP answer from the discovery service");
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let (mut index, mut chunked) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("x-etcd-index") {
            index = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body).ok_or_else(bad)?
    } else {
        body.to_vec()
    };
    Ok(Answer {
        status,
        index,
        body,
    })
}

struct Registry<'a> {
    d: &'a V2Discovery,
}

impl Registry<'_> {
    /// One call, on a connection of its own (closed by the server after
    /// the answer); `limit` bounds the whole exchange when given.
    async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        form: Option<&str>,
        limit: Option<Duration>,
    ) -> Result<Answer, DiscoveryError> {
        let exchange = async {
            let via = self.d.proxy.as_deref().unwrap_or(&self.d.authority);
            let mut stream = tokio::time::timeout(CALL, TcpStream::connect(via))
                .await
                .map_err(|_| unreachable(format!("connecting to {via} timed out")))?
                .map_err(|e| unreachable(format!("{via}: {e}")))?;
            // A proxy takes the absolute form of the target.
            let target = match self.d.proxy {
                Some(_) => format!("http://{}{path_and_query}", self.d.authority),
                None => path_and_query.to_string(),
            };
            let mut request = format!(
                "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
                self.d.authority
            );
            match form {
                Some(body) => request.push_str(&format!(
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )),
                None => request.push_str("\r\n"),
            }
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(unreachable)?;
            let mut raw = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await.map_err(unreachable)?;
                if n == 0 {
                    break;
                }
                if raw.len() + n > MAX_ANSWER {
                    return Err(unreachable("the discovery service's answer is too large"));
                }
                raw.extend_from_slice(&buf[..n]);
            }
            parse_answer(&raw)
        };
        match limit {
            Some(limit) => tokio::time::timeout(limit, exchange)
                .await
                .map_err(|_| unreachable("the discovery service did not answer in time"))?,
            None => exchange.await,
        }
    }

    /// etcd's checkCluster: the size, the registrations in create order
    /// and the index they were read at; there must be room for this member.
    async fn check(&self, own_key: &str) -> Result<(Registrations, usize, u64), DiscoveryError> {
        let size = self
            .call(
                "GET",
                &format!("{}/_config/size", self.d.path),
                None,
                Some(CALL),
            )
            .await?;
        match (size.status, size.error_code()) {
            (200, _) => {}
            (404, Some(100)) => return Err(DiscoveryError::SizeNotFound),
            (status, _) => {
                return Err(unreachable(format!(
                    "the discovery service answered {status} for the size"
                )))
            }
        }
        let size: usize = size
            .json()?
            .pointer("/node/value")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .ok_or(DiscoveryError::BadSizeKey)?;
        let listing = self.call("GET", &self.d.path, None, Some(CALL)).await?;
        if listing.status == 404 && listing.error_code() == Some(100) {
            return Err(DiscoveryError::TokenNotFound);
        }
        if listing.status != 200 {
            return Err(unreachable(format!(
                "the discovery service answered {} for the registry",
                listing.status
            )));
        }
        let index = listing.index.unwrap_or(0);
        let mut registered = Registrations::default();
        let json = listing.json()?;
        let nodes = json
            .pointer("/node/nodes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for node in nodes {
            add_node(&mut registered, node);
        }
        registered.check_room(own_key.as_bytes(), size)?;
        Ok((registered, size, index))
    }

    /// Register this member; its own earlier registration (a stop before
    /// the first start finished) stands.
    async fn register(&self, own_key: &str, value: &str) -> Result<(), DiscoveryError> {
        let form = format!("value={}", form_encode(value));
        let put = self
            .call(
                "PUT",
                &format!("{own_key}?prevExist=false"),
                Some(&form),
                Some(CALL),
            )
            .await?;
        match (put.status, put.error_code()) {
            (200 | 201, _) => Ok(()),
            (412, Some(105)) => {
                let ours = self.call("GET", own_key, None, Some(CALL)).await?;
                let existing = ours.json()?;
                if existing.pointer("/node/value").and_then(Value::as_str) == Some(value) {
                    Ok(())
                } else {
                    Err(DiscoveryError::DuplicateId)
                }
            }
            (status, _) => Err(unreachable(format!(
                "the discovery service answered {status} to the registration"
            ))),
        }
    }

    /// Long-poll the registry from just after `index` until `size` members
    /// have registered.
    async fn wait(
        &self,
        registered: &mut Registrations,
        size: usize,
        mut index: u64,
    ) -> Result<(), DiscoveryError> {
        while registered.len() < size {
            let query = format!(
                "{}?wait=true&recursive=true&waitIndex={}",
                self.d.path,
                index + 1
            );
            let event = self.call("GET", &query, None, None).await?;
            if event.status != 200 {
                return Err(unreachable(format!(
                    "the discovery service answered {} to the wait",
                    event.status
                )));
            }
            let json = event.json()?;
            let node = json.get("node").ok_or(DiscoveryError::BadEndpoint)?;
            index = node
                .get("modifiedIndex")
                .and_then(Value::as_u64)
                .ok_or(DiscoveryError::BadEndpoint)?;
            add_node(registered, node);
        }
        Ok(())
    }
}

/// A registry node as a registration (`_config` is the registry's own).
fn add_node(registered: &mut Registrations, node: &Value) {
    let Some(key) = node.get("key").and_then(Value::as_str) else {
        return;
    };
    if key.rsplit('/').next() == Some("_config") {
        return;
    }
    let value = node.get("value").and_then(Value::as_str).unwrap_or("");
    let created = node
        .get("createdIndex")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    // Keys by their last segment: a listing names them in full, events too.
    registered.add(
        key.rsplit('/').next().unwrap_or(key).as_bytes(),
        value.as_bytes(),
        created,
    );
}

async fn attempt(d: &V2Discovery, member: &Member) -> Result<Cluster, DiscoveryError> {
    let registry = Registry { d };
    let id = format!("{:x}", member.member_id);
    let own_key = format!("{}/{id}", d.path);
    let value = registration(member);
    registry.check(&id).await?;
    registry.register(&own_key, &value).await?;
    tracing::info!(key = %own_key, "register member itself successfully");
    let (mut registered, size, index) = registry.check(&id).await?;
    if registered.len() < size {
        tracing::info!(
            registered = registered.len(),
            size,
            "waiting for the other members to register"
        );
        registry.wait(&mut registered, size, index).await?;
    }
    let cluster = registered.initial_cluster(size).map_err(|e| match e {
        DiscoveryError::InvalidUrl => DiscoveryError::InvalidDiscoveryUrl,
        other => other,
    })?;
    let names: std::collections::HashSet<&str> = cluster.iter().map(|(n, _)| n.as_str()).collect();
    if names.len() != size {
        return Err(DiscoveryError::DuplicateName);
    }
    Ok(cluster)
}

/// The initial cluster, as the discovery service names it.
pub async fn join_cluster(member: &Member, d: &V2Discovery) -> Result<Cluster, DiscoveryError> {
    retrying(|| attempt(d, member)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_parse() {
        let plain = b"HTTP/1.1 200 OK\r\nX-Etcd-Index: 7\r\nContent-Length: 2\r\n\r\n{}";
        let a = parse_answer(plain).unwrap();
        assert_eq!(
            (a.status, a.index, a.body.as_slice()),
            (200, Some(7), &b"{}"[..])
        );
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"err\r\n9\r\norCode\":1\r\n3\r\n00}\r\n0\r\n\r\n";
        let a = parse_answer(chunked).unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.error_code(), Some(100));
        assert!(parse_answer(b"garbage").is_err());
        assert!(dechunk(b"zz\r\n").is_none());
    }

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(
            form_encode("m0=http://127.0.0.1:2380"),
            "m0%3Dhttp%3A%2F%2F127.0.0.1%3A2380"
        );
    }

    #[test]
    fn registry_nodes_skip_the_config_directory() {
        let mut r = Registrations::default();
        let listing: Value = serde_json::from_str(
            r#"[{"key":"/_etcd/registry/t/_config","dir":true,"createdIndex":3},
                {"key":"/_etcd/registry/t/2","value":"b=http://127.0.0.1:2","createdIndex":9},
                {"key":"/_etcd/registry/t/1","value":"a=http://127.0.0.1:1","createdIndex":5}]"#,
        )
        .unwrap();
        for node in listing.as_array().unwrap() {
            add_node(&mut r, node);
        }
        assert_eq!(r.len(), 2);
        let cluster = r.initial_cluster(2).unwrap();
        assert_eq!(cluster[0].0, "a");
        assert!(r.check_room(b"1", 2).is_ok());
        assert!(matches!(
            r.check_room(b"3", 2),
            Err(DiscoveryError::FullCluster)
        ));
    }
}

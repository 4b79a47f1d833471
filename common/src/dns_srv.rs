//! DNS SRV lookups as etcd makes them (`--discovery-srv`, the gateway's
//! and the grpc-proxy's endpoint discovery): one UDP question per name
//! to the system's (or a given) name server, answers parsed here with
//! bounds on every read.

use std::net::SocketAddr;
use std::time::Duration;

/// One SRV question's records: (target, port).
pub type Records = Result<Vec<(String, u16)>, SrvError>;

/// How long a name server has to answer one question.
pub const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum SrvError {
    #[error("DNS: {0}")]
    Io(#[from] std::io::Error),
    #[error("DNS: no answer from {0}")]
    Timeout(SocketAddr),
    #[error("DNS: malformed answer")]
    Malformed,
    #[error("DNS: no SRV records for {0}")]
    NoRecords(String),
}

/// The first name server of /etc/resolv.conf (port 53).
pub fn system_name_server() -> SocketAddr {
    std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .find_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        })
        .map_or_else(
            || SocketAddr::from(([127, 0, 0, 1], 53)),
            |ip| SocketAddr::new(ip, 53),
        )
}

/// An SRV question for `name` with message id `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 33, 0, 1]); // SRV, IN
    q
}

/// A (possibly compressed) name at `at`; the name and where it ends.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), SrvError> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(at).ok_or(SrvError::Malformed)? as usize;
        if len == 0 {
            return Ok((labels.join("."), end.unwrap_or(at + 1)));
        }
        if len & 0xC0 == 0xC0 {
            let low = *msg.get(at + 1).ok_or(SrvError::Malformed)? as usize;
            end.get_or_insert(at + 2);
            at = ((len & 0x3F) << 8) | low;
            continue;
        }
        let label = msg.get(at + 1..at + 1 + len).ok_or(SrvError::Malformed)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += 1 + len;
    }
    Err(SrvError::Malformed)
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, SrvError> {
    let b = msg.get(at..at + 2).ok_or(SrvError::Malformed)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

/// The (target, port) pairs of the SRV answers in `msg`.
pub fn parse(msg: &[u8]) -> Result<Vec<(String, u16)>, SrvError> {
    let questions = u16_at(msg, 4)?;
    let answers = u16_at(msg, 6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = read_name(msg, at)?.1;
        let kind = u16_at(msg, at)?;
        let len = u16_at(msg, at + 8)? as usize;
        let data = at + 10;
        if kind == 33 {
            let port = u16_at(msg, data + 4)?;
            let (target, _) = read_name(msg, data + 6)?;
            out.push((target, port));
        }
        at = data + len;
    }
    Ok(out)
}

/// The (target, port) records of `name`, asking `server` (blocking: for
/// start-up, before any runtime runs).
pub fn lookup(name: &str, server: SocketAddr) -> Result<Vec<(String, u16)>, SrvError> {
    let socket = std::net::UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.send(&query(0x7431, name))?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => SrvError::Timeout(server),
        _ => SrvError::Io(e),
    })?;
    parse(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compressed_srv_answers() {
        let mut msg = query(1, "_etcd-client._tcp.example.com");
        msg[6..8].copy_from_slice(&2u16.to_be_bytes()); // two answers
        for (port, target) in [(2379u16, "m1.example.com"), (2479, "m2.example.com")] {
            msg.extend_from_slice(&[0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
            let mut rdata = vec![0, 10, 0, 10];
            rdata.extend_from_slice(&port.to_be_bytes());
            for l in target.split('.') {
                rdata.push(l.len() as u8);
                rdata.extend_from_slice(l.as_bytes());
            }
            rdata.push(0);
            msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            msg.extend_from_slice(&rdata);
        }
        assert_eq!(
            parse(&msg).expect("parse"),
            vec![
                ("m1.example.com".to_string(), 2379),
                ("m2.example.com".to_string(), 2479)
            ]
        );
        assert!(parse(&msg[..20]).is_err());
    }
}

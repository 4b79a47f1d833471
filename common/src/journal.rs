//! journald's native protocol, for etcd's `--log-outputs systemd/journal`:
//! each log line one datagram to journald's socket, with its priority and
//! the daemon's name as fields (so `journalctl -p` and `-t` select it
//! whatever the unit's stderr is).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// journald's socket for native messages.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A message larger than this is cut: journald takes bigger ones only
/// through a memfd, which a log line never needs.
const MAX_MESSAGE: usize = 64 * 1024;

pub struct Journal {
    socket: UnixDatagram,
    identifier: String,
}

impl Journal {
    /// Connect to journald at `path` (`SOCKET` in a daemon).
    pub fn connect(path: &Path, identifier: &str) -> io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Journal {
            socket,
            identifier: identifier.to_string(),
        })
    }

    /// Send one formatted line: a leading `<N>` (sd-daemon's priority
    /// prefix) becomes PRIORITY (else 6, info), the rest the MESSAGE.
    pub fn send(&self, line: &[u8]) -> io::Result<()> {
        let (priority, message) = split_priority(line);
        let message = trim_newline(message);
        let message = &message[..message.len().min(MAX_MESSAGE)];
        let mut datagram = Vec::with_capacity(message.len() + 64);
        datagram.extend_from_slice(format!("PRIORITY={priority}\n").as_bytes());
        datagram.extend_from_slice(b"SYSLOG_IDENTIFIER=");
        datagram.extend_from_slice(self.identifier.as_bytes());
        datagram.push(b'\n');
        // The binary form: a message may hold newlines.
        datagram.extend_from_slice(b"MESSAGE\n");
        datagram.extend_from_slice(&(message.len() as u64).to_le_bytes());
        datagram.extend_from_slice(message);
        datagram.push(b'\n');
        self.socket.send(&datagram).map(|_| ())
    }
}

fn split_priority(line: &[u8]) -> (u8, &[u8]) {
    match line {
        [b'<', p @ b'0'..=b'7', b'>', rest @ ..] => (p - b'0', rest),
        _ => (6, line),
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\n").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_journal_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let server = UnixDatagram::bind(&path).unwrap();
        let j = Journal::connect(&path, "raftd").unwrap();
        j.send(b"<4>2026 WARN two\nlines\n").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let mut want = b"PRIORITY=4\nSYSLOG_IDENTIFIER=raftd\nMESSAGE\n".to_vec();
        want.extend_from_slice(&19u64.to_le_bytes());
        want.extend_from_slice(b"2026 WARN two\nlines\n");
        assert_eq!(&buf[..n], &want[..]);
        j.send(b"plain").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"PRIORITY=6\n"));
    }
}

//! A DNS server of the test's own on loopback, for etcd's SRV discovery:
//! each SRV question is answered with the records `answer` gives for its
//! name (none: an empty answer).

use std::net::SocketAddr;
use std::time::Duration;

/// Serve SRV answers on a loopback UDP port (for a minute of silence at
/// most); its address.
pub fn serve(answer: impl Fn(&str) -> Vec<(String, u16)> + Send + 'static) -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = socket.local_addr().expect("addr");
    socket.set_read_timeout(Some(Duration::from_secs(60))).ok();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            let Some((name, question_end)) = question(q) else {
                continue;
            };
            let records = answer(&name);
            let mut r = Vec::new();
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, 0x80, 0, 1]);
            r.extend_from_slice(&(records.len() as u16).to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(&q[12..question_end]);
            for (target, port) in &records {
                r.extend_from_slice(&[0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 60]);
                let mut rdata = vec![0, 1, 0, 1];
                rdata.extend_from_slice(&port.to_be_bytes());
                for label in target.trim_end_matches('.').split('.') {
                    rdata.push(label.len() as u8);
                    rdata.extend_from_slice(label.as_bytes());
                }
                rdata.push(0);
                r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                r.extend_from_slice(&rdata);
            }
            let _ = socket.send_to(&r, from);
        }
    });
    addr
}

/// The question's name and where the question ends.
fn question(q: &[u8]) -> Option<(String, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(at)? as usize;
        if len == 0 {
            return Some((labels.join("."), at + 1 + 4));
        }
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
}

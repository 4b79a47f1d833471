//! A record of the raft log's segment files: how an entry is framed, and
//! reading records back (in order at recovery, at known offsets after it).
//!
//! A record is the payload's length (u32 LE), a CRC-32C of the index and
//! the payload (u32 LE), the index (u64 LE), then the payload (the entry,
//! postcard-encoded by `codec`). A zero length ends a segment's data: the
//! space a segment is preallocated with reads as zeros.

use std::fs::File;
use std::io::{self, BufReader, Read};

/// Length, checksum and index.
pub const HEADER: u64 = 16;

/// The bytes a record with a payload of `payload_len` bytes takes.
pub fn size(payload_len: usize) -> u64 {
    HEADER + payload_len as u64
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&index.to_le_bytes()), payload)
}

/// Append the record of entry `index` (encoded as `payload`) to `out`.
pub fn frame(index: u64, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raft log entry {index} is over 4 GiB encoded"),
        )
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// A header's fields: payload length, checksum, index.
fn header(b: &[u8; HEADER as usize]) -> (u32, u32, u64) {
    let [l0, l1, l2, l3, c0, c1, c2, c3, i @ ..] = *b;
    (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u64::from_le_bytes(i),
    )
}

/// The payload of the record at the start of `bytes` and the record's
/// size, if it is whole, intact and the record of entry `index`.
pub fn parse(bytes: &[u8], index: u64) -> Option<(&[u8], usize)> {
    let head: &[u8; HEADER as usize] = bytes.get(..HEADER as usize)?.try_into().ok()?;
    let (len, crc, at) = header(head);
    let end = HEADER as usize + usize::try_from(len).ok()?;
    let payload = bytes.get(HEADER as usize..end)?;
    (len != 0 && at == index && checksum(at, payload) == crc).then_some((payload, end))
}

/// What a segment file holds: its valid records from the start, in
/// order, each the entry after the one before.
pub struct Scan {
    /// Where each record starts.
    pub offsets: Vec<u64>,
    /// Where the last valid record ends.
    pub end: u64,
    /// The records stopped at something other than zeros or the file's
    /// end: a torn or damaged write.
    pub torn: bool,
}

/// Read `file` from its start, expecting entry `first` first. Payloads are
/// checked against their checksums only with `verify` (a segment that may
/// hold unsynced writes); elsewhere only the headers are read, and a
/// damaged payload fails the read that reaches it.
pub fn scan(file: &File, first: u64, verify: bool) -> io::Result<Scan> {
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut scan = Scan {
        offsets: Vec::new(),
        end: 0,
        torn: false,
    };
    let mut payload = Vec::new();
    let mut head = [0u8; HEADER as usize];
    let mut index = first;
    while size - scan.end >= HEADER {
        reader.read_exact(&mut head)?;
        let (len, crc, at) = header(&head);
        if len == 0 && crc == 0 && at == 0 {
            break;
        }
        if len == 0 || at != index || size - scan.end - HEADER < u64::from(len) {
            scan.torn = true;
            break;
        }
        if verify {
            payload.resize(len as usize, 0);
            reader.read_exact(&mut payload)?;
            if checksum(at, &payload) != crc {
                scan.torn = true;
                break;
            }
        } else {
            reader.seek_relative(i64::from(len))?;
        }
        scan.offsets.push(scan.end);
        scan.end += HEADER + u64::from(len);
        index += 1;
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_parses_only_whole_intact_and_at_its_index() {
        let mut out = Vec::new();
        frame(7, b"entry", &mut out).expect("frame");
        assert_eq!(out.len() as u64, size(5));
        assert_eq!(parse(&out, 7), Some((&b"entry"[..], out.len())));
        assert_eq!(parse(&out, 8), None, "another index");
        assert_eq!(parse(&out[..out.len() - 1], 7), None, "cut short");
        let mut damaged = out.clone();
        damaged[HEADER as usize] ^= 1;
        assert_eq!(parse(&damaged, 7), None, "damaged");
        assert_eq!(parse(&[0; 32], 7), None, "zeros");
    }
}

//! Key-space arithmetic etcd's clients and recipes rely on.

/// etcd's GetPrefixRangeEnd: the first key after every key with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"\x01\xff"), vec![2]);
        assert_eq!(prefix_end(b"\xff"), vec![0], "no end: the whole key space");
        assert_eq!(prefix_end(b""), vec![0]);
    }
}

//! What a member keeps of a secret it must recognise later: a digest,
//! never the secret itself, so nothing written to the raft log, a journal
//! or a backup can be replayed as a credential.

use sha2::{Digest, Sha256};

/// SHA-256 of `secret`, in lowercase hex.
pub fn digest(secret: &[u8]) -> String {
    Sha256::digest(secret)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            super::digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

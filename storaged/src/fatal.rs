//! The one place that decides a store error is fatal to storaged: fjall
//! refuses every write after a failed persist (a full disk, say) until
//! the database is opened again, and a poisoned lock of ours means a
//! thread panicked holding it. Whoever meets an error reports it here;
//! storaged's main exits on the first fatal one, so its supervisor
//! restarts it and it recovers from its journal.

use std::sync::LazyLock;

use tokio::sync::watch;

use crate::StoreError;

/// The first fatal error, once there is one.
pub static FATAL: LazyLock<watch::Sender<Option<String>>> =
    LazyLock::new(|| watch::Sender::new(None));

/// Whether only a restart cures `e`.
pub fn is_fatal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Fjall(fjall::Error::Poisoned | fjall::Error::Io(_))
            | StoreError::Poisoned
            | StoreError::JournalSync(_)
    )
}

/// Record `e` if it is fatal; true if it is.
pub fn report(e: &StoreError) -> bool {
    if !is_fatal(e) {
        return false;
    }
    FATAL.send_if_modified(|f| {
        let first = f.is_none();
        if first {
            *f = Some(e.to_string());
        }
        first
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::errors::EtcdError;

    #[test]
    fn only_errors_a_restart_cures_are_fatal() {
        assert!(!report(&StoreError::Etcd(EtcdError::KeyNotFound)));
        assert!(!report(&StoreError::CorruptKey));
        assert!(FATAL.borrow().is_none());
        assert!(report(&StoreError::Poisoned));
        assert!(FATAL
            .borrow()
            .as_deref()
            .is_some_and(|f| f.contains("poisoned")));
    }
}

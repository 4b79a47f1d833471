//! Leases and what is built on them: expiry, keepalives, locks and elections.
//! One scenario per file; every test starts the real daemon binaries.

mod election;
mod etcdctl_lock_elect;
mod leases;
mod lock;

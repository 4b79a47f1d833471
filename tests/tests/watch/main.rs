//! Watches: ordering and gap guarantees, replay across restarts, slow consumers and limits.
//! One scenario per file; every test starts the real daemon binaries.

mod watch_after_quiet;
mod watch_guarantees;
mod watch_replay_restart;
mod watch_slow_and_limits;

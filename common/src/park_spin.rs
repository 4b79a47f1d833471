//! Bounded, adaptive spinning before a runtime thread goes to sleep
//! (`--spin-before-sleep`).
//!
//! A write crosses three processes, and each hop wakes a daemon that went
//! to sleep moments before. On a virtual machine a vCPU with nothing to run
//! halts, and waking it again goes through the hypervisor: measured here,
//! that made a lone client's put 0.6 ms where the same work with the vCPUs
//! kept busy takes 0.3 ms. Go's scheduler spins briefly before it parks for
//! the same reason. So a runtime thread about to sleep first watches its
//! runtime's epoll descriptor (readable while events are ready, without
//! taking them) for up to the budget, yielding to any other runnable thread
//! between looks, so a reply or the next request that arrives soon is taken
//! without a halt.
//!
//! It spins only while its recent sleeps were typically shorter than the
//! budget (a moving average of their lengths), or while the process waits
//! for another daemon's answer to a client's request (`AwaitingReply`):
//! an idle member sleeps at once and costs no more CPU than without
//! spinning, and one serving requests spaced wider than the budget spins
//! only while a request is under way. A process told that work is on its
//! way (`expect_work_within`: storaged, when raftd has appended entries
//! that it will apply once committed) spins until the work arrives or the
//! window closes, however long that is.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Waits longer than this count as this long in the moving average.
const LONG_WAIT_US: u64 = 10_000;

/// The epoll descriptors of this process's runtime, found once it is built.
static EPOLL_FDS: OnceLock<Vec<RawFd>> = OnceLock::new();

/// How many `AwaitingReply` guards are alive in this process.
static AWAITING: AtomicUsize = AtomicUsize::new(0);

/// Held while this process waits for another daemon's answer to a client's
/// request: the answer is due within about a millisecond (an fsync and a
/// few hops), so runtime threads spin before parking while any is held,
/// however long they idled before the request came. Each park still spins
/// at most the budget, so a long wait (a daemon restarting, a lost quorum)
/// costs a spin per wake-up, not a busy core.
pub struct AwaitingReply(());

impl AwaitingReply {
    pub fn new() -> AwaitingReply {
        AWAITING.fetch_add(1, Ordering::Relaxed);
        AwaitingReply(())
    }
}

impl Default for AwaitingReply {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AwaitingReply {
    fn drop(&mut self) {
        AWAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When the expected work is due by, in nanoseconds since `clock_start`;
/// 0 when none is expected.
static EXPECTED_BY: AtomicU64 = AtomicU64::new(0);

fn clock_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn nanos_since_start(at: Instant) -> u64 {
    // At least 1: 0 means nothing is expected.
    (at.saturating_duration_since(clock_start()).as_nanos() as u64).max(1)
}

/// Work is on its way and due within `window`: until it comes
/// (`expected_work_arrived`) or the window closes, runtime threads about to
/// park spin for it instead.
pub fn expect_work_within(window: Duration) {
    EXPECTED_BY.store(
        nanos_since_start(Instant::now() + window),
        Ordering::Relaxed,
    );
}

/// The expected work came: parks go back to the usual policy.
pub fn expected_work_arrived() {
    EXPECTED_BY.store(0, Ordering::Relaxed);
}

/// Whether work is still expected at `now`.
fn work_expected(now: Instant) -> bool {
    nanos_since_start(now) < EXPECTED_BY.load(Ordering::Relaxed)
}

thread_local! {
    /// When this thread last began to park.
    static PARK_START: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Recent parks' typical length in microseconds: a moving average of
    /// lengths capped at `LONG_WAIT_US`, starting there, so a thread spins
    /// after a dozen or so short waits in a row, however long it idled.
    static TYPICAL_WAIT_US: Cell<u64> = const { Cell::new(LONG_WAIT_US) };
}

/// Remember the epoll descriptors open now: call right after the runtime is
/// built, before anything else opens one. With none found, nothing spins.
/// Returns how many were found (mio keeps a duplicate of its descriptor,
/// so one runtime shows two; watching both costs one more poll entry).
pub fn capture_epoll_fds() -> usize {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]")
                })
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let found = fds.len();
    let _ = EPOLL_FDS.set(fds);
    found
}

/// How a runtime thread spins before it parks (the runtime's park hooks).
#[derive(Debug, Clone, Copy)]
pub struct SpinPolicy {
    /// The longest spin, and the longest typical wait worth spinning for.
    pub budget: Duration,
}

impl SpinPolicy {
    /// The runtime's `on_thread_park` hook.
    pub fn before_park(&self) {
        let now = Instant::now();
        PARK_START.with(|p| p.set(Some(now)));
        let Some(fds) = EPOLL_FDS.get() else {
            return;
        };
        if work_expected(now) {
            spin_until_readable(fds, work_expected);
        } else if self.worth_spinning() {
            let deadline = now + self.budget;
            spin_until_readable(fds, |t| t < deadline);
        }
    }

    /// The runtime's `on_thread_unpark` hook: how long the park lasted
    /// (spin included) feeds the moving average.
    pub fn after_unpark(&self) {
        if let Some(start) = PARK_START.with(Cell::take) {
            self.record_wait(start.elapsed());
        }
    }

    fn worth_spinning(&self) -> bool {
        self.worth_spinning_when(AWAITING.load(Ordering::Relaxed) > 0)
    }

    fn worth_spinning_when(&self, awaiting_reply: bool) -> bool {
        awaiting_reply || TYPICAL_WAIT_US.with(Cell::get) <= self.budget.as_micros() as u64
    }

    fn record_wait(&self, waited: Duration) {
        let waited = waited.as_micros().min(u128::from(LONG_WAIT_US)) as u64;
        TYPICAL_WAIT_US.with(|w| w.set(w.get() - w.get() / 4 + waited / 4));
    }
}

/// Return once any of `fds` is readable or `go_on` says to stop; between
/// looks, let any other runnable thread on this CPU go first.
fn spin_until_readable(fds: &[RawFd], go_on: impl Fn(Instant) -> bool) {
    if fds.is_empty() {
        return;
    }
    let mut polls: Vec<nix::libc::pollfd> = fds
        .iter()
        .map(|&fd| nix::libc::pollfd {
            fd,
            events: nix::libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd entries,
        // and a zero timeout never blocks.
        let ready = unsafe { nix::libc::poll(polls.as_mut_ptr(), polls.len() as _, 0) };
        if ready != 0 || !go_on(Instant::now()) {
            return;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn spinning_ends_when_a_descriptor_is_readable_or_the_budget_is_spent() {
        let (reader, mut writer) = std::io::pipe().expect("pipe");
        let budget = Duration::from_millis(20);

        let start = Instant::now();
        let deadline = start + budget;
        spin_until_readable(&[reader.as_raw_fd()], |t| t < deadline);
        assert!(
            start.elapsed() >= budget,
            "nothing readable: spins the whole budget"
        );

        writer.write_all(b"x").expect("write");
        let start = Instant::now();
        spin_until_readable(&[reader.as_raw_fd()], |_| true);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "readable: returns at once"
        );
    }

    #[test]
    fn spins_only_while_recent_waits_were_short() {
        let policy = SpinPolicy {
            budget: Duration::from_micros(300),
        };
        assert!(
            !policy.worth_spinning_when(false),
            "a fresh thread has seen no short wait"
        );
        assert!(
            policy.worth_spinning_when(true),
            "however long it idled, while a reply is awaited"
        );
        for _ in 0..16 {
            policy.record_wait(Duration::from_micros(50));
        }
        assert!(policy.worth_spinning_when(false), "a stream of short waits");
        for _ in 0..2 {
            policy.record_wait(Duration::from_secs(100));
        }
        assert!(!policy.worth_spinning_when(false), "an idle spell");
        for _ in 0..16 {
            policy.record_wait(Duration::from_micros(50));
        }
        assert!(policy.worth_spinning_when(false), "short waits again");
    }

    #[test]
    fn expected_work_keeps_spinning_until_it_arrives_or_the_window_closes() {
        // The only test that touches the process-wide expectation.
        let (reader, _writer) = std::io::pipe().expect("pipe");
        let fds = [reader.as_raw_fd()];
        assert!(!work_expected(Instant::now()), "nothing expected at first");

        expect_work_within(Duration::from_millis(30));
        assert!(work_expected(Instant::now()));
        let start = Instant::now();
        spin_until_readable(&fds, work_expected);
        assert!(
            start.elapsed() >= Duration::from_millis(20),
            "spun through the window"
        );
        assert!(!work_expected(Instant::now()), "the window closed");

        expect_work_within(Duration::from_secs(60));
        let arrival = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            expected_work_arrived();
        });
        let start = Instant::now();
        spin_until_readable(&fds, work_expected);
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "stops once the work arrived, not at the window's end"
        );
        arrival.join().expect("arrival thread");
        assert!(!work_expected(Instant::now()));
    }

    #[test]
    fn a_reply_is_awaited_while_any_guard_lives() {
        // The only test that touches the process-wide count.
        assert_eq!(AWAITING.load(Ordering::Relaxed), 0);
        let first = AwaitingReply::new();
        let second = AwaitingReply::default();
        assert_eq!(AWAITING.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(AWAITING.load(Ordering::Relaxed), 1, "one still waits");
        drop(second);
        assert_eq!(AWAITING.load(Ordering::Relaxed), 0);
    }
}

//! Work handed from raftd's runtime thread to one of the raft log's own
//! threads (the flusher, the purger): a queue that hands over everything
//! waiting at once, and stops its thread when the last handle goes.

use std::io;

use crate::io_err;
use std::sync::{Arc, Condvar, Mutex};

/// Work handed to one of the log's threads: appends waiting for the
/// flusher's next fsync, purge marks for the purge thread.
///
/// A mutex-guarded list whose waker is signalled after the lock is released.
/// std's mpsc channel wakes its receiver while still holding its waiter
/// lock: the woken flusher preempted raftd's thread there, fsync'd, and then
/// blocked on that same lock until raftd ran again: two extra context
/// switches per append.
pub struct HandoffQueue<T> {
    state: Mutex<HandoffState<T>>,
    wake: Condvar,
}

struct HandoffState<T> {
    pending: Vec<T>,
    closed: bool,
}

impl<T> Default for HandoffQueue<T> {
    fn default() -> Self {
        HandoffQueue {
            state: Mutex::new(HandoffState {
                pending: Vec::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }
}

impl<T> HandoffQueue<T> {
    pub fn push(&self, callback: T) -> io::Result<()> {
        {
            let mut state = self.state.lock().map_err(io_err)?;
            if state.closed {
                return Err(io_err("raft log thread stopped"));
            }
            state.pending.push(callback);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Everything queued, once there is something; None once closed.
    pub fn take(&self) -> Option<Vec<T>> {
        let mut state = self.state.lock().ok()?;
        loop {
            if !state.pending.is_empty() {
                return Some(std::mem::take(&mut state.pending));
            }
            if state.closed {
                return None;
            }
            state = self.wake.wait(state).ok()?;
        }
    }

    pub fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
        }
        self.wake.notify_one();
    }
}

/// A log thread's handle, shared by every clone of the store: the thread
/// stops when the last one is dropped.
pub struct Closer<T>(pub Arc<HandoffQueue<T>>);

impl<T> Drop for Closer<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::HandoffQueue;
    use std::sync::Arc;
    use std::time::Duration;

    /// Everything pushed while the flusher was busy comes out in one take,
    /// in order; a take waits for the next push.
    #[test]
    fn queued_appends_come_out_together() {
        let queue = Arc::new(HandoffQueue::default());
        for i in 0..3 {
            queue.push(i).expect("push");
        }
        assert_eq!(queue.take(), Some(vec![0, 1, 2]));
        let waiter = std::thread::spawn({
            let queue = queue.clone();
            move || queue.take()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "take returned with nothing queued");
        queue.push(7).expect("push");
        assert_eq!(waiter.join().expect("waiter"), Some(vec![7]));
    }

    /// Closing hands over what is still queued, then ends the flusher;
    /// later appends fail instead of waiting for an fsync that never comes.
    #[test]
    fn close_drains_then_stops() {
        let queue = HandoffQueue::default();
        queue.push(1).expect("push");
        queue.close();
        assert_eq!(queue.take(), Some(vec![1]));
        assert_eq!(queue.take(), None);
        assert!(queue.push(2).is_err());
    }
}

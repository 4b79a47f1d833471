//! Read-index rounds shared by concurrent linearizable reads, as etcd's
//! linearizable read loop shares one: a read joins the next round that has
//! not started yet, so the quorum confirmation it gets was asked for after
//! it arrived; every read waiting when a round starts is answered by it.
//! raftd shares its quorum rounds this way (without it each read cost a
//! heartbeat round to the followers), and gatewayd its read-index calls to
//! raftd (one call on the Unix socket for many concurrent reads).

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::Status;

type Outcome<T> = Option<Result<T, Status>>;

/// Rounds whose outcome (a read index, a term) is a `T`.
pub struct ReadBatch<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    /// A task is running rounds.
    running: bool,
    /// The round not started yet, which new reads join.
    next: Option<watch::Sender<Outcome<T>>>,
}

impl<T> Default for ReadBatch<T> {
    fn default() -> Self {
        ReadBatch {
            inner: Mutex::new(Inner {
                running: false,
                next: None,
            }),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> ReadBatch<T> {
    /// The outcome of a `round` that starts after this call.
    pub async fn read<F, Fut>(self: &Arc<Self>, round: F) -> Result<T, Status>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let (mut rx, drive) = {
            let mut inner = self
                .inner
                .lock()
                .map_err(|_| Status::internal("read batch lock poisoned"))?;
            let rx = match &inner.next {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inner.next = Some(tx);
                    rx
                }
            };
            let drive = !inner.running;
            inner.running = true;
            (rx, drive)
        };
        if drive {
            let batch = self.clone();
            tokio::spawn(async move { batch.drive(round).await });
        }
        loop {
            if let Some(outcome) = rx.borrow_and_update().clone() {
                return outcome;
            }
            if rx.changed().await.is_err() {
                return Err(Status::unavailable("read index round abandoned"));
            }
        }
    }

    /// Run rounds while reads wait for one.
    async fn drive<F, Fut>(&self, round: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        loop {
            let tx = {
                let Ok(mut inner) = self.inner.lock() else {
                    return; // the waiting reads see their round abandoned
                };
                match inner.next.take() {
                    Some(tx) => tx,
                    None => {
                        inner.running = false;
                        return;
                    }
                }
            };
            let _ = tx.send(Some(round().await));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_reads_share_rounds_that_start_after_them() {
        let batch = Arc::new(ReadBatch::<u64>::default());
        let rounds = Arc::new(AtomicU64::new(0));
        let round = {
            let rounds = rounds.clone();
            move || {
                let rounds = rounds.clone();
                async move {
                    // The round's number, counted when it starts.
                    let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(n)
                }
            }
        };
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let (batch, round, rounds) = (batch.clone(), round.clone(), rounds.clone());
                tokio::spawn(async move {
                    let started_before = rounds.load(Ordering::SeqCst);
                    let got = batch.read(round).await.expect("read");
                    // Answered by a round that started after the read came.
                    assert!(got > started_before, "{got} <= {started_before}");
                    got
                })
            })
            .collect();
        for r in reads {
            r.await.expect("task");
        }
        let total = rounds.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&total),
            "50 concurrent reads took {total} rounds"
        );
        // Later reads start new rounds; errors reach every waiting read.
        let failing = || async { Err::<u64, _>(Status::unavailable("no leader")) };
        let err = batch.read(failing).await.expect_err("error passed on");
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
}

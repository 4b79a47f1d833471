//! A response stream that runs its producer inline: the producer future is
//! polled from the stream's own `poll_next` and hands items over through a
//! bounded outbox. A server-streaming response then costs one task (the
//! HTTP/2 stream's, which polls the body) instead of a producer task, a
//! channel and the body task: with watch fan-out every event is delivered
//! to every watcher stream, and the extra wake-up and channel hop per
//! stream were a large part of gatewayd's CPU per delivered event.
//!
//! Backpressure is the body's: when the client does not read, HTTP/2 flow
//! control stops the body from being polled, so the producer stops too.
//!
//! The body is polled several times per item (tonic's encoder asks for
//! more, hyper polls again after each frame); the producer is polled only
//! when something it waits on woke it (a full outbox wakes it itself).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use futures::Stream;

type Queue<T> = Arc<Mutex<VecDeque<T>>>;

fn lock<T>(q: &Queue<T>) -> MutexGuard<'_, VecDeque<T>> {
    // A panic while holding the lock cannot leave the queue half-changed.
    q.lock().unwrap_or_else(|e| e.into_inner())
}

/// The producer's waker: notes that the producer has something to do and
/// wakes whoever polls the stream.
struct Wakeup {
    woken: AtomicBool,
    reader: AtomicWaker,
}

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// The producer's end: items queued here come out of the stream in order.
pub struct Outbox<T> {
    queue: Queue<T>,
    capacity: usize,
}

impl<T> Outbox<T> {
    /// Queue `item`, waiting while `capacity` items are queued.
    pub async fn send(&self, item: T) {
        let mut item = Some(item);
        std::future::poll_fn(|cx| {
            let mut q = lock(&self.queue);
            if q.len() >= self.capacity {
                // The stream polls its producer once it has handed out every
                // queued item, if woken: mark it woken now.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(item) = item.take() {
                q.push_back(item);
            }
            Poll::Ready(())
        })
        .await
    }
}

/// The consumer's end: a `Stream` that drives its producer when empty.
pub struct InlineStream<T> {
    queue: Queue<T>,
    producer: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    wakeup: Arc<Wakeup>,
    /// `wakeup` as a Waker, made once.
    waker: Waker,
}

impl<T> InlineStream<T> {
    /// A stream of what `produce` sends to its outbox (at most `capacity`
    /// items ahead of the reader); it ends when `produce`'s future ends and
    /// everything it queued has been read.
    pub fn new<F, Fut>(capacity: usize, produce: F) -> Self
    where
        F: FnOnce(Outbox<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let queue: Queue<T> = Arc::new(Mutex::new(VecDeque::new()));
        let wakeup = Arc::new(Wakeup {
            woken: AtomicBool::new(true),
            reader: AtomicWaker::new(),
        });
        let outbox = Outbox {
            queue: queue.clone(),
            capacity: capacity.max(1),
        };
        InlineStream {
            queue,
            producer: Some(Box::pin(produce(outbox))),
            waker: Waker::from(wakeup.clone()),
            wakeup,
        }
    }
}

impl<T> Stream for InlineStream<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let this = &mut *self;
        if let Some(item) = lock(&this.queue).pop_front() {
            return Poll::Ready(Some(item));
        }
        this.wakeup.reader.register(cx.waker());
        let woken = this.wakeup.woken.swap(false, Ordering::AcqRel);
        // Empty: run the producer, if it has anything to do, until it
        // queues something or waits.
        if let Some(producer) = this.producer.as_mut().filter(|_| woken) {
            let mut own = Context::from_waker(&this.waker);
            if producer.as_mut().poll(&mut own).is_ready() {
                this.producer = None;
            }
        }
        match lock(&this.queue).pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if this.producer.is_none() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn items_arrive_in_order_and_the_stream_ends_with_its_producer() {
        let s = InlineStream::new(2, |out| async move {
            for i in 0..10 {
                out.send(i).await;
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(s.collect::<Vec<_>>().await, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_outbox_holds_the_producer_until_read() {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        let mut s = InlineStream::new(3, move |out| async move {
            for i in 0..100 {
                out.send(i).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        assert_eq!(s.next().await, Some(0));
        // The producer ran until the outbox was full, then stopped.
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(s.next().await, Some(1));
        assert_eq!(s.next().await, Some(2));
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(s.next().await, Some(3));
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 6);
        assert_eq!(s.count().await, 96);
    }

    #[test]
    fn the_producer_is_polled_only_when_woken() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut s = InlineStream::new(4, move |out| {
            std::future::poll_fn(move |cx| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                while let Poll::Ready(v) = rx.poll_recv(cx) {
                    let Some(v) = v else { return Poll::Ready(()) };
                    lock(&out.queue).push_back(v);
                }
                Poll::Pending
            })
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut poll = || Pin::new(&mut s).poll_next(&mut cx);
        assert!(poll().is_pending());
        assert!(poll().is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 1);
        tx.send(7).ok();
        assert_eq!(poll(), Poll::Ready(Some(7)));
        assert!(poll().is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 2);
        drop(tx);
        assert_eq!(poll(), Poll::Ready(None));
    }

    #[tokio::test]
    async fn a_waiting_producer_wakes_the_reader() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
        let mut s = InlineStream::new(4, |out| async move {
            while let Some(v) = rx.recv().await {
                out.send(v * 2).await;
            }
        });
        let reader = tokio::spawn(async move { (s.next().await, s.next().await) });
        tx.send(1).await.ok();
        tx.send(2).await.ok();
        drop(tx);
        let got = reader.await.ok();
        assert_eq!(got, Some((Some(2), Some(4))));
    }
}

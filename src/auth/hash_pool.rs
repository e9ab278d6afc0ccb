//! The threads that run argon2, apart from the blocking pool that serves replay reads, with a
//! bounded queue: a flood of password guesses waits here, or is refused, and nowhere else.

use std::io;

type Job = Box<dyn FnOnce() + Send>;

/// Password verifications waiting for a thread, at most; more are refused (503) rather than
/// queued without bound. Enough for a burst of reconnecting clients to each get one.
pub(crate) const HASH_QUEUE: usize = 64;

/// Threads verifying passwords: two, so a good login waits at most behind a short queue while
/// each argon2 run holds 19 MiB and a core's worth of time.
pub(crate) const HASH_THREADS: usize = 2;

/// The queue was full: the caller answers 503 and the client retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HashPoolBusy;

/// A small pool of threads with a bounded queue; its threads end when it is dropped.
pub(crate) struct HashPool {
    jobs: flume::Sender<Job>,
}

impl HashPool {
    /// Starts `threads` threads sharing a queue of `queue` jobs.
    pub(crate) fn new(threads: usize, queue: usize) -> io::Result<HashPool> {
        let (jobs, inbox) = flume::bounded::<Job>(queue);
        for i in 0..threads.max(1) {
            let inbox = inbox.clone();
            std::thread::Builder::new()
                .name(format!("herald-hash-{i}"))
                .spawn(move || {
                    while let Ok(job) = inbox.recv() {
                        job();
                    }
                })?;
        }
        Ok(HashPool { jobs })
    }

    /// Queues `work` without waiting for it (at start, while the queue is empty).
    pub(crate) fn submit(&self, work: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.try_send(Box::new(work));
    }

    /// Runs `work` on one of the pool's threads and waits for its answer without blocking the
    /// caller's thread; `Err` when the queue is full (or the pool is gone).
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, HashPoolBusy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (answer, answered) = flume::bounded(1);
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs.try_send(job).map_err(|_| HashPoolBusy)?;
        answered.recv_async().await.map_err(|_| HashPoolBusy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let pool = HashPool::new(1, 1).unwrap_or_else(|e| panic!("{e}"));
        let (release, wait) = flume::bounded::<()>(0);
        let (started, is_started) = flume::bounded::<()>(1);
        // One job holds the thread, one fills the queue, the third is refused.
        let blocker = pool.jobs.try_send(Box::new(move || {
            let _ = started.send(());
            let _ = wait.recv();
        }));
        assert!(blocker.is_ok());
        assert!(is_started.recv().is_ok());
        assert!(pool.jobs.try_send(Box::new(|| {})).is_ok());
        let refused = poll_once(pool.run(|| 1));
        assert_eq!(refused, Err(HashPoolBusy));
        drop(release);
    }

    /// Polls a future that is ready on its first poll (the refusal never waits).
    fn poll_once<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the future waited"),
        }
    }
}

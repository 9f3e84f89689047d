//! The query pool: where SQL, history queries, pipeline updates and
//! compaction run, apart from ingestion.
//!
//! * its own tokio runtime with `sql.threads` threads at a lower CPU
//!   priority (nice 10), so a heavy query slows itself, not the connectors,
//!   the journal or the twins;
//! * one DataFusion memory pool of `sql.memory_mb` shared by all queries
//!   (sorts spill to disk; a query that still needs more fails with
//!   "resources exhausted", never an out-of-memory kill);
//! * at most `sql.max_concurrent` queries at once (more wait up to
//!   `sql.queue_wait_ms` for a slot, then are refused: the caller gets a
//!   503 and retries);
//! * a timeout per query (`sql.timeout_s`), and a query whose caller went
//!   away (the HTTP client disconnected) is cancelled.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deltalake::datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use tokio::sync::Semaphore;

use crate::config::SqlConfig;

/// Why the pool did not run something.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("{running} queries are running (sql.max_concurrent) and none finished within sql.queue_wait_ms; retry shortly")]
    Busy { running: usize },
    #[error("the query ran longer than {0} s (sql.timeout_s, or the request's timeout_s) and was cancelled")]
    Timeout(u64),
    #[error("the query pool is stopping")]
    Stopped,
}

/// The bounded pool.
pub struct QueryPool {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    max: usize,
    env: Arc<RuntimeEnv>,
    timeout: Duration,
    threads: usize,
    queue_wait: Duration,
}

impl std::fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QueryPool({} threads, {} at once)",
            self.threads, self.max
        )
    }
}

/// Lower the calling thread's CPU priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; on Linux the nice
    // value is per thread and this changes only the calling thread's.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

impl QueryPool {
    /// A pool as configured by `[sql]`.
    pub fn new(cfg: &SqlConfig) -> std::io::Result<QueryPool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads.max(1))
            .thread_name("ironlake-sql")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        let env = RuntimeEnvBuilder::new()
            .with_memory_limit(cfg.memory_mb.max(16) << 20, 1.0)
            .build_arc()
            .map_err(std::io::Error::other)?;
        Ok(QueryPool {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            max: cfg.max_concurrent.max(1),
            queue_wait: Duration::from_millis(cfg.queue_wait_ms),
            env,
            timeout: Duration::from_secs(cfg.timeout_s.max(1)),
            threads: cfg.threads.max(1),
        })
    }

    /// The DataFusion runtime (memory pool, spill files) of every query.
    pub fn env(&self) -> Arc<RuntimeEnv> {
        self.env.clone()
    }

    /// Threads of the pool (DataFusion's target partitions).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The pool's runtime, for batch work that is not a query (pipelines,
    /// compaction): no permit, no timeout.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Run a query: refused when `max_concurrent` are running, cancelled
    /// after the timeout or when the returned future is dropped.
    pub async fn run<F, T>(&self, fut: F) -> Result<T, PoolError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.run_within(fut, None).await
    }

    /// [`QueryPool::run`] with a shorter timeout, if asked for.
    pub async fn run_within<F, T>(&self, fut: F, timeout: Option<Duration>) -> Result<T, PoolError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let busy = || PoolError::Busy {
            running: self.running(),
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if self.queue_wait.is_zero() => return Err(busy()),
            Err(_) => {
                match tokio::time::timeout(self.queue_wait, self.permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(PoolError::Stopped),
                    Err(_) => return Err(busy()),
                }
            }
        };
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let task = AbortOnDrop(self.handle.spawn(async move {
            let r = tokio::time::timeout(timeout, fut).await;
            drop(permit);
            r
        }));
        match task.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(PoolError::Timeout(timeout.as_secs())),
            Err(_) => Err(PoolError::Stopped),
        }
    }

    /// Stop the pool's threads (queries still running are cancelled).
    pub fn shutdown(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for QueryPool {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A task that is aborted when its handle is dropped (the caller left).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SqlConfig {
        SqlConfig {
            threads: 1,
            memory_mb: 64,
            timeout_s: 1,
            max_concurrent: 1,
            queue_wait_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_query_waits_briefly_for_a_slot_before_it_is_refused() {
        let pool = QueryPool::new(&SqlConfig {
            queue_wait_ms: 2000,
            ..cfg()
        })
        .unwrap();
        let slow = pool.run(tokio::time::sleep(Duration::from_millis(200)));
        let (a, b) = tokio::join!(slow, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pool.run(async { 1 }).await
        });
        assert_eq!((a, b), (Ok(()), Ok(1)), "the second waited for the first");
        let hold = pool.run(tokio::time::sleep(Duration::from_millis(900)));
        let quick = QueryPool::new(&SqlConfig {
            queue_wait_ms: 100,
            ..cfg()
        })
        .unwrap();
        let held = quick.run(tokio::time::sleep(Duration::from_millis(600)));
        let (_, _, c) = tokio::join!(hold, held, async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            quick.run(async { 1 }).await
        });
        assert!(matches!(c, Err(PoolError::Busy { .. })), "{c:?}");
    }

    #[tokio::test]
    async fn bounded_timed_and_cancelled() {
        let pool = QueryPool::new(&cfg()).unwrap();
        assert_eq!(pool.run(async { 7 }).await, Ok(7));
        // A second query while one runs is refused.
        let slow = pool.run(tokio::time::sleep(Duration::from_millis(300)));
        let (a, b) = tokio::join!(slow, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.run(async { 1 }).await
        });
        assert_eq!(a, Ok(()));
        assert!(matches!(b, Err(PoolError::Busy { .. })));
        // Past the timeout: cancelled.
        assert_eq!(
            pool.run(tokio::time::sleep(Duration::from_secs(5))).await,
            Err(PoolError::Timeout(1))
        );
        // A caller that leaves frees the slot at once.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let fut = pool.run(async move {
            let _keep = tx;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let _ = tokio::time::timeout(Duration::from_millis(50), fut).await;
        assert!(rx.recv().await.is_none(), "the abandoned query was dropped");
        for _ in 0..100 {
            if pool.running() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.running(), 0, "its slot is free again");
        tokio::task::spawn_blocking(move || pool.shutdown())
            .await
            .unwrap();
    }
}

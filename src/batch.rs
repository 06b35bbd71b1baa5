//! Group commit: many concurrent callers' writes go to Postgres as one transaction.
//!
//! A caller submits one item and awaits its own result; a flusher task takes
//! everything queued (up to `max_batch`) and runs it as one batch. While a batch is
//! in flight the next one fills, so the batch size follows the load by itself: one
//! item at low load (no added latency), hundreds under a surge.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

type Reply<R> = oneshot::Sender<Result<R, String>>;

pub struct Batcher<T, R> {
    tx: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone() }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// `flush` gets a batch and returns one result per item, in order.
    /// Up to `parallel` batches are in flight at once.
    pub fn spawn<F, Fut>(name: &'static str, max_batch: usize, parallel: usize, flush: F) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Vec<R>>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(T, Reply<R>)>(max_batch * 4);
        let flush = Arc::new(flush);
        let permits = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let mut items = vec![first];
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let flush = flush.clone();
                tokio::spawn(async move {
                    let (batch, replies): (Vec<T>, Vec<Reply<R>>) = items.into_iter().unzip();
                    let n = batch.len();
                    metrics::histogram!("recur_batch_size", "batch" => name).record(n as f64);
                    match flush(batch).await {
                        Ok(results) if results.len() == n => {
                            for (reply, r) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(r));
                            }
                        }
                        Ok(results) => {
                            let msg = format!("{name}: batch returned {} results for {n} items", results.len());
                            for reply in replies {
                                let _ = reply.send(Err(msg.clone()));
                            }
                        }
                        Err(e) => {
                            let msg = format!("{name}: {e:#}");
                            for reply in replies {
                                let _ = reply.send(Err(msg.clone()));
                            }
                        }
                    }
                    drop(permit);
                });
            }
        });
        Batcher { tx }
    }

    /// Queue one item and wait until its batch has committed.
    pub async fn submit(&self, item: T) -> anyhow::Result<R> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((item, reply)).await.map_err(|_| anyhow::anyhow!("batcher stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("batcher dropped the item"))?.map_err(anyhow::Error::msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_items_share_batches_and_keep_their_results() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b: Batcher<u32, u32> = Batcher::spawn("test", 64, 1, move |items: Vec<u32>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(items.into_iter().map(|i| i * 2).collect())
            }
        });
        let handles: Vec<_> = (0..500u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.submit(i).await.unwrap()) })
            })
            .collect();
        for h in handles {
            let (i, r) = h.await.unwrap();
            assert_eq!(r, i * 2);
        }
        assert!(calls.load(Ordering::SeqCst) < 100, "no batching happened");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_item() {
        let b: Batcher<u32, u32> =
            Batcher::spawn("fail", 8, 2, |_items: Vec<u32>| async { Err(anyhow::anyhow!("db down")) });
        let err = b.submit(1).await.unwrap_err();
        assert!(err.to_string().contains("db down"));
    }
}

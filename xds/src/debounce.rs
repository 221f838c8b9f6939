//! Coalescing bursts of change notifications before a push.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Collects triggers into batches: a batch closes when no trigger arrived for `quiet`, or
/// `max_delay` after its first trigger, whichever is first. Istio's pilot debounces the same
/// way (100 ms quiet, 10 s max); without it a burst of store events becomes a burst of pushes
/// to every proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debouncer {
    /// Quiet period that closes a batch.
    pub quiet: Duration,
    /// Longest a batch stays open, so a steady trickle of changes still gets pushed.
    pub max_delay: Duration,
}

impl Default for Debouncer {
    fn default() -> Self {
        Debouncer {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl Debouncer {
    /// Waits for the next batch; `None` once every sender is gone and nothing is left.
    pub async fn next_batch<T>(&self, rx: &mut mpsc::Receiver<T>) -> Option<Vec<T>> {
        let first = rx.recv().await?;
        let mut batch = vec![first];
        let deadline = Instant::now() + self.max_delay;
        loop {
            let until = (Instant::now() + self.quiet).min(deadline);
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => return Some(batch),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn batches_a_burst_and_caps_the_delay() {
        let d = Debouncer {
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_millis(230),
        };
        let (tx, mut rx) = mpsc::channel(64);
        let producer = tokio::spawn(async move {
            for i in 0..10 {
                tx.send(i).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let start = Instant::now();
        let first = d.next_batch(&mut rx).await.unwrap();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert_eq!(start.elapsed(), Duration::from_millis(230));
        let second = d.next_batch(&mut rx).await.unwrap();
        assert_eq!(second, vec![5, 6, 7, 8, 9]);
        producer.await.unwrap();
        assert_eq!(d.next_batch(&mut rx).await, None);
    }
}

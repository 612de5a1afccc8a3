//! Closed-loop load: a fixed number of tasks, each issuing its next operation as soon as
//! the previous one answered, either over a fixed list of work items or for a fixed time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::stats::Sample;

/// Runs `op(i)` once for every `i` in `0..count` on `concurrency` tasks that share one
/// work counter. Returns the sample and each operation's output, indexed by `i`. The
/// first error stops every task and is returned.
pub async fn run_count<T, F, Fut>(
    count: usize,
    concurrency: usize,
    op: F,
) -> Result<(Sample, Vec<T>), String>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (op, next, failed) = (op.clone(), next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut done: Vec<(usize, u64, T)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.load(Ordering::Relaxed) {
                    return Ok(done);
                }
                let t0 = Instant::now();
                match op(i).await {
                    Ok(out) => done.push((i, t0.elapsed().as_nanos() as u64, out)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        }));
    }
    let per_task = join_all(tasks).await?;
    let elapsed = started.elapsed();
    let mut slots: Vec<Option<(u64, T)>> = (0..count).map(|_| None).collect();
    for (i, ns, out) in per_task.into_iter().flatten() {
        slots[i] = Some((ns, out));
    }
    let mut sample = Sample {
        latencies_ns: Vec::with_capacity(count),
        elapsed,
    };
    let mut outputs = Vec::with_capacity(count);
    for (i, slot) in slots.into_iter().enumerate() {
        let (ns, out) = slot.ok_or_else(|| format!("operation {i} never ran"))?;
        sample.latencies_ns.push(ns);
        outputs.push(out);
    }
    Ok((sample, outputs))
}

/// Runs `op(n)` repeatedly on `concurrency` tasks until `duration` has passed (`n` counts
/// up across all tasks, so callers can cycle through inputs). Operations in flight at
/// the deadline are finished and counted, and the wall time runs until the last one
/// ends, so count / elapsed is the true throughput.
pub async fn run_for<F, Fut>(
    duration: Duration,
    concurrency: usize,
    op: F,
) -> Result<Sample, String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (op, next, failed) = (op.clone(), next.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                if let Err(e) = op(n).await {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                latencies.push(t0.elapsed().as_nanos() as u64);
            }
            Ok(latencies)
        }));
    }
    let per_task = join_all(tasks).await?;
    Ok(Sample {
        elapsed: started.elapsed(),
        latencies_ns: per_task.into_iter().flatten().collect(),
    })
}

/// Waits for every task; the first error (or panic) wins.
async fn join_all<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, String>>>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("a load task panicked: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_runs_once_and_outputs_keep_their_index() {
        let (sample, out) = run_count(50, 4, |i| async move { Ok(i * 10) })
            .await
            .unwrap();
        assert_eq!(sample.count(), 50);
        assert_eq!(out, (0..50).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_first_error_is_returned() {
        let res = run_count(100, 3, |i| async move {
            if i == 7 {
                Err(format!("item {i} failed"))
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(res.unwrap_err(), "item 7 failed");
    }

    #[tokio::test]
    async fn timed_runs_stop_after_the_duration() {
        let started = Instant::now();
        let sample = run_for(Duration::from_millis(100), 2, |_| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        })
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(sample.elapsed >= Duration::from_millis(100));
        // Two tasks sleeping 5 ms for 100 ms: about 40 operations, never more.
        assert!((10..=44).contains(&sample.count()), "{}", sample.count());
        let err = run_for(Duration::from_secs(5), 2, |n| async move {
            if n == 3 {
                Err("boom".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(err.unwrap_err(), "boom");
    }
}

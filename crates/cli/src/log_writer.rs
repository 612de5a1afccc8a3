//! A log destination that can never take the process down.
//!
//! tracing-subscriber's fmt layer writes each event from the thread that emitted it; on
//! a full disk or a closed pipe that write fails, and the layer reports the failure
//! with `eprintln!`, which panics when stderr itself is what failed: measured, 42 of 50
//! API requests lost their connection with the server's log on a full tmpfs. Here each
//! formatted line goes into a bounded queue (never blocking, never failing) and one
//! thread writes the queue to stderr. A line that finds the queue full (a slow reader)
//! or cannot be written (a full disk, a closed pipe) is counted as lost
//! (`appfence_log_lines_dropped_total`), and once writing works again the log says how
//! many were lost, once.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines waiting for the writer thread; beyond this they are dropped.
const QUEUE_LINES: usize = 8192;
/// How long the end of the process waits for queued lines to be written.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

enum Item {
    Line(Vec<u8>),
    /// Written once everything before it is: answers on the channel.
    Flush(SyncSender<()>),
}

struct Shared {
    queue: SyncSender<Item>,
    /// Lost since the last report.
    lost: AtomicU64,
}

/// The [`tracing_subscriber::fmt::MakeWriter`] for the log: cheap to clone.
#[derive(Clone)]
pub struct LossyLog {
    shared: Arc<Shared>,
}

/// Waits (boundedly) for the queue to reach the destination when dropped.
pub struct FlushOnDrop(LossyLog);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.0.flush(FLUSH_LIMIT);
    }
}

impl LossyLog {
    /// A log writing to `destination` from its own thread.
    pub fn start(destination: impl Write + Send + 'static) -> (LossyLog, FlushOnDrop) {
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let shared = Arc::new(Shared {
            queue,
            lost: AtomicU64::new(0),
        });
        let log = LossyLog { shared };
        let for_thread = log.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || for_thread.write_all(lines, destination));
        if spawned.is_err() {
            // No thread, no log: every line counts as lost rather than blocking.
            log.shared.lost.fetch_add(1, Ordering::Relaxed);
        }
        (log.clone(), FlushOnDrop(log))
    }

    /// Lines lost and not yet reported.
    #[cfg(test)]
    fn unreported_losses(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    fn lose(&self, n: u64) {
        self.shared.lost.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("appfence_log_lines_dropped_total").increment(n);
    }

    fn offer(&self, line: &[u8]) {
        match self.shared.queue.try_send(Item::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.lose(1),
        }
    }

    /// Waits up to `limit` for everything queued so far to be written (or lost).
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = sync_channel(1);
        let deadline = Instant::now() + limit;
        let mut item = Item::Flush(done);
        loop {
            match self.shared.queue.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }

    fn write_all(&self, lines: Receiver<Item>, mut destination: impl Write) {
        for item in lines {
            match item {
                Item::Line(line) => {
                    let lost = self.shared.lost.load(Ordering::Relaxed);
                    if lost > 0 {
                        let note = format!(
                            "appfence: {lost} log line(s) were lost: the log destination \
                             failed or could not keep up\n"
                        );
                        if destination.write_all(note.as_bytes()).is_ok() {
                            self.shared.lost.fetch_sub(lost, Ordering::Relaxed);
                        }
                    }
                    if destination.write_all(&line).is_err() {
                        self.lose(1);
                    }
                }
                Item::Flush(done) => {
                    let _ = destination.flush();
                    let _ = done.try_send(());
                }
            }
        }
    }
}

/// One event's writer: the fmt layer writes a whole formatted line with one
/// `write_all`, which is offered to the queue as it is.
pub struct LineWriter(LossyLog);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.offer(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyLog {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.clone())
    }
}

/// The destination of tests: records what was written, fails while told to.
#[cfg(test)]
#[derive(Clone, Default)]
struct Recorder {
    written: Arc<std::sync::Mutex<Vec<u8>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.written.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Recorder) -> String {
        String::from_utf8(r.written.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_written_in_order() {
        let recorder = Recorder::default();
        let (log, _flush) = LossyLog::start(recorder.clone());
        for i in 0..100 {
            log.offer(format!("line {i}\n").as_bytes());
        }
        log.flush(Duration::from_secs(10));
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text(&recorder), expected);
    }

    #[test]
    fn a_failing_destination_loses_lines_and_says_so_once_it_works() {
        let recorder = Recorder::default();
        let (log, _flush) = LossyLog::start(recorder.clone());
        recorder.failing.store(true, Ordering::SeqCst);
        for i in 0..5 {
            log.offer(format!("lost {i}\n").as_bytes());
        }
        log.flush(Duration::from_secs(10));
        assert_eq!(log.unreported_losses(), 5);
        assert_eq!(text(&recorder), "");
        recorder.failing.store(false, Ordering::SeqCst);
        log.offer(b"back\n");
        log.offer(b"again\n");
        log.flush(Duration::from_secs(10));
        assert_eq!(
            text(&recorder),
            "appfence: 5 log line(s) were lost: the log destination failed or could not \
             keep up\nback\nagain\n"
        );
        assert_eq!(log.unreported_losses(), 0);
    }

    /// A destination that never returns (a reader that stopped reading): offering
    /// lines never blocks; what does not fit is counted.
    #[test]
    fn a_stuck_destination_never_blocks_the_caller() {
        struct Stuck(Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = sync_channel(0);
        let (log, _flush) = LossyLog::start(Stuck(stuck));
        let extra = 1000;
        for _ in 0..QUEUE_LINES + extra {
            log.offer(b"x\n");
        }
        // The writer holds one line; the queue holds QUEUE_LINES; the rest is lost.
        let lost = log.unreported_losses();
        assert!(lost >= extra as u64 - 1 && lost <= extra as u64, "{lost}");
        drop(release);
    }
}

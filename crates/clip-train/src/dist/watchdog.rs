//! A deadline on every collective (`train --collective-timeout`): a process that waits in one
//! longer than the timeout — another process stuck (stopped, hung in I/O, a machine gone
//! without its processes dying) — is told so by a watching thread, which ends it, instead of
//! waiting for ever. A process that dies is noticed by `mpirun` itself; this covers the ones
//! that do not die.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::Tensor;

use super::Comm;
use crate::error::Result;

/// What the watching thread is told: the collective entered and when, or nothing.
type Entered = Arc<Mutex<Option<(&'static str, Instant)>>>;

/// `inner`'s collectives, each under the deadline.
pub struct Watchdog {
    inner: Box<dyn Comm>,
    entered: Entered,
}

impl Watchdog {
    /// Watch `inner`'s collectives: one that has waited longer than `timeout` calls
    /// `expire` (from the watching thread) with a message naming it; `expire` is expected to
    /// end the process (the collective itself cannot be interrupted).
    pub fn new(
        inner: Box<dyn Comm>,
        timeout: Duration,
        expire: impl Fn(String) + Send + 'static,
    ) -> Self {
        let entered: Entered = Arc::new(Mutex::new(None));
        let watched = Arc::downgrade(&entered);
        let rank = inner.rank();
        let every = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("collective-watchdog".into())
            .spawn(move || {
                // Ends with the Watchdog: the weak reference no longer upgrades.
                while let Some(entered) = watched.upgrade() {
                    let late = entered
                        .lock()
                        .map(|e| (*e).filter(|(_, since)| since.elapsed() > timeout))
                        .unwrap_or(None);
                    drop(entered);
                    if let Some((what, since)) = late {
                        expire(format!(
                            "rank {rank} has waited {:.0} s in a collective ({what}) for the other \
                             processes, past --collective-timeout {}: one of them is stuck, or gone \
                             without its launcher noticing",
                            since.elapsed().as_secs_f64(),
                            timeout.as_secs_f64()
                        ));
                        return;
                    }
                    std::thread::sleep(every);
                }
            })
            .expect("a thread to watch the collectives");
        Self { inner, entered }
    }

    fn watched<R>(&self, what: &'static str, f: impl FnOnce() -> R) -> R {
        *self.entered.lock().unwrap_or_else(|e| e.into_inner()) = Some((what, Instant::now()));
        let out = f();
        *self.entered.lock().unwrap_or_else(|e| e.into_inner()) = None;
        out
    }
}

impl Comm for Watchdog {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.watched("all-gather", || self.inner.all_gather(local))
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.watched("all-reduce", || self.inner.all_reduce_sum(buf))
    }
    fn transport(&self) -> &'static str {
        self.inner.transport()
    }
    fn launched(&self) -> bool {
        self.inner.launched()
    }
    fn all_gather_tensor(&self, local: &Tensor) -> Result<Tensor> {
        self.watched("all-gather", || self.inner.all_gather_tensor(local))
    }
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<Tensor> {
        self.watched("all-reduce", || self.inner.all_reduce_sum_tensor(t))
    }
    fn all_reduce_sum_tensors(&self, parts: &[Tensor]) -> Result<Vec<Tensor>> {
        self.watched("all-reduce", || self.inner.all_reduce_sum_tensors(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A world of one whose all-reduce takes `delay`: another process arriving late.
    struct Slow(Duration);

    impl Comm for Slow {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
            Ok(local.repeat(2))
        }
        fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
            std::thread::sleep(self.0);
            Ok(())
        }
        fn transport(&self) -> &'static str {
            "test"
        }
    }

    fn watched(delay_ms: u64, timeout_ms: u64) -> (Watchdog, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let w = Watchdog::new(
            Box::new(Slow(Duration::from_millis(delay_ms))),
            Duration::from_millis(timeout_ms),
            move |msg| {
                let _ = tx.send(msg);
            },
        );
        (w, rx)
    }

    #[test]
    fn a_collective_past_the_timeout_is_reported_with_its_name() {
        let (w, rx) = watched(400, 100);
        w.all_reduce_sum(&mut [1.0]).unwrap();
        let msg = rx.recv_timeout(Duration::from_secs(5)).expect("expired");
        assert!(msg.contains("all-reduce"), "{msg}");
        assert!(msg.contains("rank 0"), "{msg}");
    }

    #[test]
    fn collectives_within_the_timeout_and_time_outside_them_are_not() {
        let (w, rx) = watched(20, 1000);
        for _ in 0..5 {
            w.all_reduce_sum(&mut [1.0]).unwrap(); // 20 ms each: well within
        }
        std::thread::sleep(Duration::from_millis(1500)); // between collectives: not watched
        assert_eq!(w.all_gather(&[1.0]).unwrap(), vec![1.0, 1.0]);
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
}

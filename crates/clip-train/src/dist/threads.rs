//! A world of threads in one process, with the collectives' semantics (every rank blocks until
//! all have arrived; sums in rank order, the same bits everywhere): for tests of the
//! distributed step where no MPI is installed, and for reasoning about it without one.

use std::sync::{Arc, Barrier, Mutex};

use super::{failed, Comm};
use crate::error::Result;

struct Shared {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

/// One rank of a [`world`].
pub struct ThreadComm {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

/// `size` connected ranks; hand one to each thread.
pub fn world(size: usize) -> Vec<ThreadComm> {
    let shared = Arc::new(Shared {
        slots: Mutex::new(vec![Vec::new(); size]),
        barrier: Barrier::new(size),
    });
    (0..size)
        .map(|rank| ThreadComm {
            rank,
            size,
            shared: Arc::clone(&shared),
        })
        .collect()
}

impl ThreadComm {
    /// Every rank's `local`, in rank order.
    fn exchange(&self, local: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.shared
            .slots
            .lock()
            .map_err(|e| failed("all-gather", e))?[self.rank] = local.to_vec();
        self.shared.barrier.wait(); // all written
        let all = self
            .shared
            .slots
            .lock()
            .map_err(|e| failed("all-gather", e))?
            .clone();
        self.shared.barrier.wait(); // all read: the slots may be reused
        if all.iter().any(|v| v.len() != local.len()) {
            return Err(failed(
                "all-gather",
                "the ranks sent buffers of different lengths",
            ));
        }
        Ok(all)
    }
}

impl Comm for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(self.exchange(local)?.concat())
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let all = self.exchange(buf)?;
        buf.fill(0.0);
        for part in &all {
            buf.iter_mut().zip(part).for_each(|(b, x)| *b += x);
        }
        Ok(())
    }
    fn transport(&self) -> &'static str {
        "threads"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_orders_by_rank_and_sums_agree_everywhere() {
        let handles: Vec<_> = world(3)
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let r = c.rank() as f32;
                    let gathered = c.all_gather(&[r, r + 0.5]).unwrap();
                    let mut sum = vec![r, 1.0];
                    c.all_reduce_sum(&mut sum).unwrap();
                    (gathered, sum)
                })
            })
            .collect();
        for h in handles {
            let (g, s) = h.join().unwrap();
            assert_eq!(g, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
            assert_eq!(s, vec![3.0, 3.0]);
        }
    }

    #[test]
    fn tensors_are_summed_in_their_shapes_whatever_their_layout() {
        use candle_core::{Device, Tensor};
        let handles: Vec<_> = world(2)
            .into_iter()
            .map(|c| {
                std::thread::spawn(move || {
                    let r = c.rank() as f32;
                    let dev = Device::Cpu;
                    let a = Tensor::new(&[[r, 1.0, 2.0], [3.0, 4.0, r]], &dev).unwrap(); // [2, 3]
                    let b = a.t().unwrap(); // [3, 2], not contiguous
                    let c0 = Tensor::zeros(0, candle_core::DType::F32, &dev).unwrap(); // [0]
                    c.all_reduce_sum_tensors(&[a, b, c0]).unwrap()
                })
            })
            .collect();
        for h in handles {
            let sums = h.join().unwrap();
            assert_eq!(
                sums[0].to_vec2::<f32>().unwrap(),
                vec![vec![1.0, 2.0, 4.0], vec![6.0, 8.0, 1.0]]
            );
            assert_eq!(
                sums[1].to_vec2::<f32>().unwrap(),
                vec![vec![1.0, 6.0], vec![2.0, 8.0], vec![4.0, 1.0]]
            );
            assert_eq!(sums[2].dims(), &[0]);
        }
    }
}

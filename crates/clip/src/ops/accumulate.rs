//! Parameter gradients summed over a backward op's tasks in a few fixed groups of tasks.
//!
//! The tasks are cut into a few contiguous groups (twice the threads); each group's tasks add
//! in order into one zeroed vector, and the group vectors are summed in order: one gradient
//! vector per group rather than one per split of a rayon `fold`, and the same sums, bit for
//! bit, on every run with the same thread count (training resumes exactly,
//! `tests/training.rs`), whichever thread runs a group.

use rayon::prelude::*;

use super::rows::add_into;

/// Runs `f(task, grads, scratch)` for every task, in groups of consecutive tasks, each group on
/// one rayon job with its own zeroed gradient vector (`out.len()` values) and `scratch()`; adds
/// the groups' vectors, in group order, to `out`. `f` must only add into `grads`.
pub(super) fn par_accumulate<T, S>(
    tasks: impl IndexedParallelIterator<Item = T>,
    out: &mut [f32],
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(T, &mut [f32], &mut S) + Sync,
) where
    T: Send,
{
    let len = out.len();
    let mut items: Vec<T> = tasks.collect(); // in task order
    let n = items.len();
    if n == 0 {
        return;
    }
    // Group g holds tasks [g·n/G, (g+1)·n/G): fixed by the task and thread counts alone.
    let groups = (2 * rayon::current_num_threads()).clamp(1, n);
    let mut batches: Vec<Vec<T>> = (0..groups)
        .rev()
        .map(|g| items.split_off(g * n / groups))
        .collect();
    batches.reverse();
    let parts: Vec<Vec<f32>> = batches
        .into_par_iter()
        .with_max_len(1)
        .map(|batch| {
            let (mut g, mut s) = (vec![0f32; len], scratch());
            for task in batch {
                f(task, &mut g, &mut s);
            }
            g
        })
        .collect(); // in group order

    // out += Σ parts, in group order for every value; chunks across the threads.
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        for p in &parts {
            add_into(o, &p[c * CHUNK..][..o.len()]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_task_once_whatever_the_thread() {
        // 1,000 tasks, each adding its index into value (index mod 37) of 100,003 and one into
        // the last: the sums are small integers, so exact in any order.
        let n = 100_003;
        let mut out = vec![0.5f32; n];
        par_accumulate(
            (0..1000usize).into_par_iter(),
            &mut out,
            || (),
            |i, g, _| {
                g[i % 37] += i as f32;
                g[n - 1] += 1.0;
            },
        );
        for (j, &v) in out.iter().enumerate() {
            let want: usize = match j {
                j if j < 37 => (0..1000).filter(|i| i % 37 == j).sum(),
                j if j == n - 1 => 1000,
                _ => 0,
            };
            assert_eq!(v, want as f32 + 0.5, "value {j}");
        }
    }

    #[test]
    fn the_same_sums_bit_for_bit_on_every_run() {
        // Values whose float sum depends on the order of the additions: every run must give
        // the same bits (the uninterrupted and the resumed training runs must agree).
        let run = || {
            let mut out = vec![0f32; 3];
            par_accumulate(
                (0..997usize).into_par_iter(),
                &mut out,
                || (),
                |i, g, _| {
                    // Enough work per task that both threads take part.
                    let w: f32 = (0..2000).map(|j| ((i * j) as f32 * 1e-3).sin()).sum();
                    g[i % 3] += w * 1e3_f32.powi((i % 5) as i32 - 2);
                },
            );
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let first = run();
        for _ in 0..20 {
            assert_eq!(run(), first);
        }
    }

    #[test]
    fn no_tasks_leave_the_output() {
        let mut out = vec![1f32; 10];
        par_accumulate((0..0usize).into_par_iter(), &mut out, || (), |_, _, _| {});
        assert!(out.iter().all(|&v| v == 1.0));
    }
}

//! Parameter gradients summed over a backward op's tasks with one accumulator per rayon thread.
//!
//! A rayon `fold` + `reduce` makes a fresh zeroed gradient vector at every split of the task
//! list (several per thread, as work is stolen) and adds them pairwise afterwards: for a
//! `small` vision block, several 7 MB vectors zeroed and summed per block call. Here each
//! thread that runs a task accumulates into its own vector, made once per call, and the few
//! vectors are summed at the end.

use std::sync::Mutex;

use rayon::prelude::*;

use super::block::add_into;

/// One thread's gradient vector and scratch, made when it runs its first task.
type Slot<S> = Mutex<Option<(Vec<f32>, S)>>;

/// Runs `f(task, grads, scratch)` for every task, on rayon's threads, each thread with its own
/// zeroed gradient vector (`out.len()` values) and its own `scratch()`; adds their sum to
/// `out`. Tasks may run in any order and on any thread, so `f` must only add into `grads`.
pub(super) fn par_accumulate<T, S>(
    tasks: impl ParallelIterator<Item = T>,
    out: &mut [f32],
    scratch: impl Fn() -> S + Sync,
    f: impl Fn(T, &mut [f32], &mut S) + Sync,
) where
    T: Send,
    S: Send,
{
    let len = out.len();
    let slots: Vec<Slot<S>> = (0..rayon::current_num_threads().max(1))
        .map(|_| Mutex::new(None))
        .collect();
    // A task whose thread's slot is busy (its thread is already inside a task and stole this
    // one while waiting on rayon) gets a vector of its own, summed with the rest.
    let spare: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
    tasks.for_each(|task| {
        let i = rayon::current_thread_index().unwrap_or(0) % slots.len();
        match slots[i].try_lock() {
            Ok(mut slot) => {
                let (g, s) = slot.get_or_insert_with(|| (vec![0f32; len], scratch()));
                f(task, g, s);
            }
            Err(_) => {
                let (mut g, mut s) = (vec![0f32; len], scratch());
                f(task, &mut g, &mut s);
                spare.lock().expect("spare gradients lock").push(g);
            }
        }
    });
    let parts: Vec<Vec<f32>> = slots
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten().map(|(g, _)| g))
        .chain(spare.into_inner().unwrap_or_default())
        .collect();
    // out += Σ parts, in chunks across the threads.
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
    fn no_tasks_leave_the_output() {
        let mut out = vec![1f32; 10];
        par_accumulate((0..0usize).into_par_iter(), &mut out, || (), |_, _, _| {});
        assert!(out.iter().all(|&v| v == 1.0));
    }
}

//! Buffers for the activations the fused blocks keep from forward to backward, reused from one
//! training step to the next.
//!
//! A `small` vision block keeps ≈ 190 MB per forward pass at batch 128; a fresh zeroed vector
//! for each was a `memset` of every block's activations, every step, though the forward pass
//! writes every value. Kept activations give their buffers back here when dropped (after the
//! backward pass, or with the graph); the next forward pass takes them.

use std::sync::Mutex;

/// Buffers waiting for reuse.
static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Most buffers held: a dozen blocks' worth, each a handful of buffers.
const MAX_HELD: usize = 256;

/// Buffers shorter than this are not worth keeping.
const MIN_LEN: usize = 1 << 12;

/// A buffer of `n` values whose contents are unspecified: the caller writes every value before
/// reading it. (In builds with debug assertions, a reused buffer is filled with NaN, so that a
/// value read before it is written shows in the tests.)
pub(super) fn take(n: usize) -> Vec<f32> {
    let found = {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest that holds n, and not more than twice n: a much larger one would be
        // wasted on a small request.
        free.iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= n && v.capacity() <= 2 * n)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
            .map(|i| free.swap_remove(i))
    };
    match found {
        Some(mut v) => {
            v.resize(n, 0.0); // writes only values beyond the old length
            if cfg!(debug_assertions) {
                v.fill(f32::NAN);
            }
            v
        }
        None => vec![0f32; n],
    }
}

/// Gives `v` back for a later [`take`].
pub(super) fn give(v: Vec<f32>) {
    if v.capacity() < MIN_LEN {
        return;
    }
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    if free.len() < MAX_HELD {
        free.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pool is shared with the other tests of the process; the lengths here are far above
    // any buffer their small models keep, so no other test takes these.

    #[test]
    fn a_buffer_given_back_is_taken_again_when_it_fits() {
        let v = vec![1f32; 1_234_567];
        let ptr = v.as_ptr();
        give(v);
        let w = take(1_234_560);
        assert_eq!((w.as_ptr(), w.len()), (ptr, 1_234_560));
        if cfg!(debug_assertions) {
            assert!(w.iter().all(|x| x.is_nan()), "a reused buffer is poisoned");
        }
        give(w);
        // Less than half its capacity: a fresh, zeroed buffer instead.
        let small = take(600_000);
        assert_ne!(small.as_ptr(), ptr);
        assert!(small.iter().all(|&x| x == 0.0));
        let full = take(1_234_567);
        assert_eq!((full.as_ptr(), full.len()), (ptr, 1_234_567));
    }
}

//! Weights a caller holds fixed across many inference calls (embedding a collection, a
//! benchmark, an evaluation): each fused block's packed parameters and the product operands
//! it keeps ([`KeptWeights`], bf16 under autocast, int8 when quantised) are prepared once, not once per call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{Result, Tensor, TensorId};

use super::block_tail::KeptWeights;
use super::mode::{products, Products};

/// A block's parameter tensors, and what its products run in.
type Key = (Vec<TensorId>, Products);

/// The packed parameters `[P]` and the cell the op fills with its kept operands on first use.
pub(super) type Prepared = (Tensor, Option<Arc<OnceLock<KeptWeights>>>);

#[derive(Clone)]
struct Entry {
    packed: Tensor,
    kept: Arc<OnceLock<KeptWeights>>,
}

/// A cache of prepared block weights, keyed by the identity of the parameter tensors. Inside
/// [`FrozenWeights::run`] the fused blocks take their weights from it.
///
/// The caller promises that no parameter read inside `run` changes while the cache lives:
/// tensors keep their identity when an optimiser updates them in place, so a cache kept across
/// a training step would serve the old weights. Make one per model and inference job.
#[derive(Clone, Default)]
pub struct FrozenWeights(Arc<Mutex<HashMap<Key, Entry>>>);

thread_local! {
    static ACTIVE: RefCell<Option<FrozenWeights>> = const { RefCell::new(None) };
}

impl FrozenWeights {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cache of the [`FrozenWeights::run`] this thread is inside (a caller that holds a
    /// model for a whole job, such as a server), else a new one.
    pub fn active_or_new() -> Self {
        ACTIVE.with(|a| a.borrow().clone()).unwrap_or_default()
    }

    /// Run `f` with the fused blocks it calls (on this thread) using this cache.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = ACTIVE.with(|a| a.replace(Some(self.clone())));
        let out = f();
        ACTIVE.with(|a| *a.borrow_mut() = before);
        out
    }

    /// Blocks prepared so far.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The packed parameters of the block made of `params` (`pack` makes them), and — inside
/// [`FrozenWeights::run`] — the shared cell for its kept operands; outside, `pack()` and None.
pub(super) fn prepared(
    params: &[&Tensor],
    pack: impl FnOnce() -> Result<Tensor>,
) -> Result<Prepared> {
    let Some(cache) = ACTIVE.with(|a| a.borrow().clone()) else {
        return Ok((pack()?, None));
    };
    let key = (params.iter().map(|t| t.id()).collect(), products());
    let mut map = cache.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = match map.get(&key) {
        Some(e) => e.clone(),
        None => {
            let e = Entry {
                packed: pack()?,
                kept: Arc::default(),
            };
            map.insert(key, e.clone());
            e
        }
    };
    Ok((entry.packed, Some(entry.kept)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside a job's `run`, an encoder asking for a cache gets the job's (so a server that
    /// holds one prepares its weights once), outside it a fresh one.
    #[test]
    fn active_or_new_joins_the_running_job() {
        let job = FrozenWeights::new();
        job.run(|| {
            let inner = FrozenWeights::active_or_new();
            assert!(Arc::ptr_eq(&inner.0, &job.0));
        });
        let outside = FrozenWeights::active_or_new();
        assert!(!Arc::ptr_eq(&outside.0, &job.0));
    }
}

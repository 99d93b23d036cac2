//! Inference mode: whether the fused ops keep what a backward pass would read.

use std::cell::Cell;

thread_local! {
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` without keeping the activations fused blocks would need for a backward pass (as
/// `torch.inference_mode`): for encoding and evaluation, where they only cost memory.
pub fn inference<R>(f: impl FnOnce() -> R) -> R {
    let before = INFERENCE.with(|c| c.replace(true));
    let out = f();
    INFERENCE.with(|c| c.set(before));
    out
}

/// Whether the caller is inside [`inference`]: no backward pass will follow.
pub(crate) fn in_inference() -> bool {
    INFERENCE.with(|c| c.get())
}

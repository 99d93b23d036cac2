//! The modes the fused ops read on the calling thread: inference (keep nothing for a backward
//! pass) and bf16 autocast (matrix products in bf16 where the CPU has the hardware for it).

use std::cell::Cell;

thread_local! {
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
    static BF16: Cell<bool> = const { Cell::new(false) };
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

/// Run `f` with the fused blocks' weight products in bf16 with f32 sums, as
/// `torch.autocast("cpu", dtype=torch.bfloat16)`: tensors stay f32, LayerNorm, softmax,
/// activations and everything outside the products stay f32. Where the CPU has no bf16
/// matrix hardware ([`bf16_kernel`] says `None`), the products stay f32 too.
pub fn autocast_bf16<R>(f: impl FnOnce() -> R) -> R {
    let before = BF16.with(|c| c.replace(true));
    let out = f();
    BF16.with(|c| c.set(before));
    out
}

/// Whether the caller is inside [`autocast_bf16`] and the CPU can act on it.
pub(crate) fn bf16_products() -> bool {
    BF16.with(|c| c.get()) && super::amx::available()
}

/// The kernel bf16 products run on here: `Some("AMX-BF16")`, or `None` where this CPU (or
/// OS, or `CLIPFORGE_NO_AMX=1`) leaves them in f32.
pub fn bf16_kernel() -> Option<&'static str> {
    super::amx::available().then_some("AMX-BF16")
}

//! The modes the fused ops read on the calling thread: inference (keep nothing for a backward
//! pass), bf16 autocast (matrix products in bf16 where the CPU has the hardware for it) and
//! int8 dynamic quantisation (inference only).

use std::cell::Cell;

thread_local! {
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
    static BF16: Cell<bool> = const { Cell::new(false) };
    static INT8: Cell<bool> = const { Cell::new(false) };
}

/// What the fused blocks' weight products run in on the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Products {
    F32,
    /// bf16 operands, f32 sums (AMX or AVX512-BF16).
    Bf16,
    /// i8 operands, i32 sums, f32 scales ([`super::int8`]).
    Int8,
}

/// The products of the calling thread's mode: int8 inside [`quantize_int8`] and
/// [`inference`], else bf16 inside [`autocast_bf16`] where the CPU can, else f32.
pub(crate) fn products() -> Products {
    if INT8.with(|c| c.get()) && in_inference() {
        Products::Int8
    } else if bf16_products() {
        Products::Bf16
    } else {
        Products::F32
    }
}

/// Run `f` with the fused blocks' weight products in int8, as PyTorch's
/// `quantize_dynamic(model, {nn.Linear}, torch.qint8)`: each weight quantised once per output
/// column, each product's input rows quantised as they come (one scale a row), sums exact in
/// i32. Only inside [`inference`] (there is no int8 backward pass); elsewhere f32.
pub fn quantize_int8<R>(f: impl FnOnce() -> R) -> R {
    let before = INT8.with(|c| c.replace(true));
    let out = f();
    INT8.with(|c| c.set(before));
    out
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
fn bf16_products() -> bool {
    BF16.with(|c| c.get()) && bf16_kernel().is_some()
}

/// The kernel bf16 products run on here: `Some("AMX-BF16")` (tiles), else
/// `Some("AVX512-BF16")` (`vdpbf16ps`), or `None` where this CPU (or OS, or
/// `CLIPFORGE_NO_AMX=1` and `CLIPFORGE_NO_AVX512BF16=1`) leaves them in f32.
pub fn bf16_kernel() -> Option<&'static str> {
    if super::amx::available() {
        Some("AMX-BF16")
    } else if super::bf16_avx512::available() {
        Some("AVX512-BF16")
    } else {
        None
    }
}

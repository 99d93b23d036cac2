//! Fused CPU ops with explicit backward, as candle custom ops: a whole residual block (`block`),
//! the last block reduced to the rows pooled after it (`pooled_block`), linear, multi-head
//! attention, LayerNorm, softmax over the last dimension, exact GELU and QuickGELU. candle's
//! generic versions are chains of element-wise ops (each a pass over memory and an allocation,
//! and more in backward); these work over plain buffers, parallel over rows. Off the CPU, or for
//! dtypes other than f32, the composed candle ops run. Each is tested against the composition
//! it replaces, values and gradients (`tests/fused_ops.rs`).
//!
//! Dimension letters, in shape comments and names throughout `ops`: B batch elements, T tokens
//! per element, R rows (B·T, or a task's share: r), W width, H attention heads, Dh = W/H one
//! head's width, M the MLP's hidden width, P the packed parameter count of a block. `p` is a
//! block's parameters, `probs` attention probabilities.
//!
//! Modules depend downwards only: the block ops (`block`, `pooled_block`) → `block_tail` →
//! `rows`, `block_params` → the kernels (`attention`, `norm`, `activation`, `linear`,
//! `softmax`, `gemm` → `amx`, `bf16_avx512`, `int8` → `int8_vnni`) → `cpu`, `math`, `lanes`, `mode`.

mod accumulate;
mod activation;
mod amx;
mod attention;
mod bf16_avx512;
#[cfg(test)]
mod bf16_check;
mod block;
mod block_params;
mod block_tail;
mod cpu;
mod frozen;
mod gemm;
mod int8;
mod int8_vnni;
mod lanes;
mod linear;
mod math;
mod mode;
mod norm;
mod pooled_block;
mod rows;
mod softmax;

pub use activation::{gelu, quick_gelu, Activation};
pub use attention::{attention, attention_composed, causal_mask};
pub use block::{residual_block, residual_block_composed};
pub use block_params::{BlockCfg, BlockParams};
pub use cpu::fused_ok;
pub use frozen::FrozenWeights;
pub use int8::int8_kernel;
pub use linear::{linear, linear_composed};
pub use mode::{autocast_bf16, bf16_kernel, inference, quantize_int8};
pub use norm::{layer_norm, layer_norm_composed};
pub use pooled_block::{gather_rows, residual_block_pooled, residual_block_pooled_composed};
pub use softmax::softmax_last_dim;

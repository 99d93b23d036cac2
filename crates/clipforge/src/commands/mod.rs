//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod embed;
pub mod eval;
pub mod init;
pub mod quickstart;
pub mod tokenize;
pub mod train;

/// `cpu`, `cuda` or `cuda:N` → a candle device; CUDA needs a binary built with `--features cuda`.
pub fn parse_device(name: &str) -> anyhow::Result<candle_core::Device> {
    use anyhow::Context;
    let ordinal = match name {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" => 0,
        _ => match name.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .with_context(|| format!("--device {name}: expected cuda:N with N a GPU number"))?,
            None => anyhow::bail!("--device {name}: expected cpu, cuda or cuda:N"),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        anyhow::bail!(
            "--device {name}: this clipforge was built without CUDA; build it with \
             `cargo build --release --features cuda` (docs/cuda.md)"
        );
    }
    candle_core::Device::new_cuda(ordinal).with_context(|| format!("--device {name}"))
}

/// `f32` or `bf16`.
pub fn parse_dtype(name: &str) -> anyhow::Result<candle_core::DType> {
    match name {
        "f32" => Ok(candle_core::DType::F32),
        "bf16" => Ok(candle_core::DType::BF16),
        _ => anyhow::bail!("--dtype {name}: expected f32 or bf16"),
    }
}

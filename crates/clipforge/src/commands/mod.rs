//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod embed;
pub mod estimate;
pub mod eval;
pub mod index;
pub mod init;
pub mod lab;
pub mod model;
pub mod quickstart;
pub mod search;
pub mod search_bench;
pub mod serve;
pub mod tokenize;
pub mod train;

/// Where to run: `cpu`, `cuda` or `cuda:N` (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    /// The GPU of this number; `cuda` alone: GPU 0, or under `train --distributed` the
    /// process's local rank on its machine (one process per GPU).
    Cuda(Option<usize>),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(|n| Self::Cuda(Some(n)))
                    .map_err(|_| format!("expected cuda:N with N a GPU number, got {s:?}")),
                None => Err(format!("expected cpu, cuda or cuda:N, got {s:?}")),
            },
        }
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(None) => write!(f, "cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceArg {
    /// The candle device; CUDA needs a binary built with `--features cuda`.
    pub fn open(self) -> anyhow::Result<candle_core::Device> {
        use anyhow::Context;
        let Self::Cuda(ordinal) = self else {
            return Ok(candle_core::Device::Cpu);
        };
        let ordinal = ordinal.unwrap_or(0);
        if !candle_core::utils::cuda_is_available() {
            anyhow::bail!(
                "--device {self}: this clipforge was built without CUDA; build it with \
                 `cargo build --release --features cuda` (docs/cuda.md)"
            );
        }
        candle_core::Device::new_cuda(ordinal).with_context(|| format!("--device {self}"))
    }
}

/// Precision of the encoders' products (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// f32 throughout.
    F32,
    /// bf16 products with f32 sums where the CPU has AMX or AVX512-BF16 (PyTorch's CPU
    /// autocast), else f32; on a GPU, bf16 parameters.
    Bf16,
    /// int8 products with i32 sums, weights quantised per output column and inputs per row
    /// as they come (PyTorch's dynamic quantisation); CPU inference only.
    Int8,
}

impl DtypeArg {
    /// Run CPU inference `f` in this precision (bf16: `clip::ops::autocast_bf16`, bf16
    /// products where the CPU has AMX or AVX512-BF16, f32 elsewhere; int8:
    /// `clip::ops::quantize_int8`), with the model's weights prepared once
    /// for the whole job (`clip::ops::FrozenWeights`: nothing trains inside `f`).
    pub fn infer<R>(self, f: impl FnOnce() -> R) -> R {
        let frozen = clip::ops::FrozenWeights::new();
        frozen.run(|| match self {
            DtypeArg::F32 => f(),
            DtypeArg::Bf16 => clip::ops::autocast_bf16(f),
            DtypeArg::Int8 => clip::ops::quantize_int8(f),
        })
    }

    /// What the products run on in this precision, for reports.
    pub fn kernel(self) -> &'static str {
        match self {
            DtypeArg::F32 => "f32",
            DtypeArg::Bf16 => clip::ops::bf16_kernel().unwrap_or("f32 (no bf16 hardware here)"),
            DtypeArg::Int8 => clip::ops::int8_kernel(),
        }
    }
}

impl From<DtypeArg> for candle_core::DType {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::F32 => candle_core::DType::F32,
            DtypeArg::Bf16 => candle_core::DType::BF16,
            // int8 keeps f32 parameters: only the products are quantised.
            DtypeArg::Int8 => candle_core::DType::F32,
        }
    }
}

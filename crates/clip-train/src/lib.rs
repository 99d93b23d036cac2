//! clipforge's training and evaluation: optimiser and schedule, the training loop, checkpoints
//! and resume, zero-shot evaluation, plots. Model from `clip`, data from `clip-data`.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dataset_eval;
pub mod dist;
pub mod encode;
pub mod error;
pub mod estimate;
pub mod eval;
pub mod feature_cache;
pub mod lab;
pub mod lock;
pub mod logistic;
pub mod optim;
pub mod plots;
pub mod run_log;
pub mod schedule;
pub mod step;
pub mod templates;
pub mod trainer;
pub mod zeroshot;

pub use config::{DataSpec, TrainConfig};
pub use error::{Result, TrainError};
pub use step::StepMetrics;
pub use trainer::{Observer, Trainer};

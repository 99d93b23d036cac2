//! clipforge's training and evaluation: optimiser and schedule, the training loop, checkpoints
//! and resume, zero-shot evaluation, plots. Model from `clip`, data from `clip-data`.

pub mod bench;
pub mod checkpoint;
pub mod dataset_eval;
pub mod error;
pub mod eval;
pub mod logistic;
pub mod optim;
pub mod plots;
pub mod schedule;
pub mod trainer;
pub mod zeroshot;

pub use error::{Result, TrainError};
pub use trainer::{DataSpec, Observer, StepMetrics, TrainConfig, Trainer};

//! The batch source a run's config names: built-in scenes, a listing, or streamed shards.

use std::sync::Arc;

use clip_data::{BatchSource, FileBatcher, SceneBatcher, Shapes, Split, StreamBatcher, StreamCfg};

use crate::config::{DataSpec, TrainConfig};
use crate::error::{Result, TrainError};

/// Build the batch source a config names, for one process reading everything.
pub fn make_source(cfg: &TrainConfig) -> Result<Arc<dyn BatchSource>> {
    make_source_for(cfg, 0, 1)
}

/// Build the batch source of process `rank` of `ranks`: streamed shards are dealt by rank (each
/// process reads only its own); the other sources are indexed by global sample position.
pub fn make_source_for(
    cfg: &TrainConfig,
    rank: usize,
    ranks: usize,
) -> Result<Arc<dyn BatchSource>> {
    let (size, ctx) = (
        cfg.model.vision_cfg.image_size,
        cfg.model.text_cfg.context_length,
    );
    let tokenizer = clip::TextTokenizer::for_config(&cfg.model.text_cfg)?;
    let files = |(samples, skips): (Vec<clip_data::RawSample>, clip_data::SkipCounts),
                 origin: String|
     -> Result<Arc<dyn BatchSource>> {
        if samples.len() < 2 {
            return Err(TrainError::Data(format!(
                "{origin}: {} usable samples (skipped {}); at least 2 are needed",
                samples.len(),
                skips.total()
            )));
        }
        tracing::info!(samples = samples.len(), skipped = skips.total(), "{origin}");
        Ok(Arc::new(
            FileBatcher::new(samples, skips, cfg.seed, size, ctx)
                .with_tokenizer(tokenizer.clone())
                .with_augment(cfg.augment),
        ))
    };
    match &cfg.data {
        DataSpec::Builtin {
            seed,
            labels_only,
            bag_of_words,
            hard_negatives,
        } => Ok(Arc::new(
            SceneBatcher::new(Shapes::new(*seed, Split::Train), size, ctx, *labels_only)
                .with_bag_of_words(*bag_of_words)
                .with_group(*hard_negatives)
                .with_tokenizer(tokenizer),
        )),
        DataSpec::Csv {
            path,
            img_key,
            caption_key,
        }
        | DataSpec::Jsonl {
            path,
            img_key,
            caption_key,
        } => {
            let read = match cfg.data {
                DataSpec::Csv { .. } => clip_data::files::read_csv,
                _ => clip_data::files::read_jsonl,
            };
            files(
                read(path, img_key, caption_key)?,
                path.display().to_string(),
            )
        }
        DataSpec::Wds {
            pattern,
            workers,
            shuffle_buffer,
        } => {
            let shards = clip_data::files::shard_files(pattern)?;
            if shards.len() < ranks {
                return Err(TrainError::Data(format!(
                    "{pattern}: {} shard(s) for {ranks} processes; each process reads shards of \
                     its own, so there must be at least one per process (better, several per \
                     process and worker): split the data into more shards",
                    shards.len()
                )));
            }
            tracing::info!(
                shards = shards.len(),
                workers,
                shuffle_buffer,
                rank,
                ranks,
                "{pattern}"
            );
            let stream = StreamCfg::new(*workers, *shuffle_buffer, cfg.seed).for_rank(rank, ranks);
            Ok(Arc::new(
                StreamBatcher::new(shards, stream, size, ctx)
                    .with_tokenizer(tokenizer)
                    .with_augment(cfg.augment),
            ))
        }
    }
}

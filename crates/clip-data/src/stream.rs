//! WebDataset shards streamed rather than loaded: each epoch the shards are shuffled, dealt to
//! the processes of a distributed run (WebDataset's split by node: each reads only its own) and
//! then to worker threads (its split by worker), each worker reads its shards entry by
//! entry into a bounded channel (reading runs ahead of training, memory stays bounded), a
//! seeded shuffle buffer mixes the samples, and each batch is decoded and augmented in parallel.
//!
//! The stream is a pure function of (seed, shards, rank and ranks, workers, buffer size):
//! workers are read in a fixed round-robin, so thread timing changes nothing. Batch `start..start+n` is therefore
//! reproducible, and a resumed run replays the stream up to its position (reading, not
//! decoding) and continues exactly. Skipped samples are counted per epoch and reported when
//! the epoch's last sample has been through a batch.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Result};
use clip::TextTokenizer;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::file_batcher::assemble;
use crate::files::{stream_shard, RawSample, SkipCounts};
use crate::{Batch, BatchSource};

/// Samples a worker may read ahead of the shuffle buffer.
const CHANNEL_DEPTH: usize = 64;

/// How a stream reads its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCfg {
    /// Reader threads; shards are dealt among them.
    pub workers: usize,
    /// Samples held in the shuffle buffer (1: no shuffling beyond the shard order).
    pub shuffle_buffer: usize,
    pub seed: u64,
    /// This process's place among the `ranks` processes sharing the shards: each epoch, after
    /// the shuffle, rank r takes every `ranks`-th shard from the r-th on, so the processes read
    /// disjoint shards that together are all of them. (0, 1): one process reads every shard.
    pub rank: usize,
    pub ranks: usize,
}

impl StreamCfg {
    /// One process reading every shard.
    pub fn new(workers: usize, shuffle_buffer: usize, seed: u64) -> Self {
        Self {
            workers,
            shuffle_buffer,
            seed,
            rank: 0,
            ranks: 1,
        }
    }

    /// Rank `rank` of `ranks` processes, each reading its own shards.
    pub fn for_rank(self, rank: usize, ranks: usize) -> Self {
        assert!(rank < ranks, "rank {rank} of {ranks}");
        Self {
            rank,
            ranks,
            ..self
        }
    }
}

/// What one epoch read and skipped.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EpochReport {
    pub epoch: u64,
    /// The process whose share of the shards this is, in a run of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// Usable samples the epoch yielded.
    pub samples: u64,
    pub skipped: SkipCounts,
}

/// What a worker sends: a sample, or the skip counts of a shard it has finished.
enum Item {
    Sample(RawSample),
    ShardDone(SkipCounts),
}

/// A sample out of the stream, with where it stands.
struct Placed {
    /// Its position in the endless stream (seeds its augmentation).
    position: u64,
    epoch: u64,
    sample: RawSample,
}

/// The endless sequence of samples: epoch after epoch of shuffled shards.
struct ShardStream {
    shards: Arc<Vec<PathBuf>>,
    cfg: StreamCfg,
    epoch: u64,
    /// Samples handed out so far, all epochs.
    position: u64,
    /// Samples handed out in the current epoch.
    epoch_samples: u64,
    receivers: Vec<Option<Receiver<Item>>>,
    turn: usize,
    buffer: Vec<RawSample>,
    rng: ChaCha8Rng,
    read_skips: SkipCounts,
    /// Epochs whose reading is over: their sample counts and read skips.
    ended: Vec<EpochReport>,
}

impl ShardStream {
    fn new(shards: Arc<Vec<PathBuf>>, cfg: StreamCfg) -> Self {
        let mut s = Self {
            shards,
            cfg,
            epoch: 0,
            position: 0,
            epoch_samples: 0,
            receivers: Vec::new(),
            turn: 0,
            buffer: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(0),
            read_skips: SkipCounts::default(),
            ended: Vec::new(),
        };
        s.start_epoch(0);
        s
    }

    /// Shuffle the shards with the epoch's seed (the same on every rank), take this rank's
    /// share and deal it to fresh worker threads.
    fn start_epoch(&mut self, epoch: u64) {
        let seed = self.cfg.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let order: Vec<usize> = order
            .into_iter()
            .skip(self.cfg.rank)
            .step_by(self.cfg.ranks.max(1))
            .collect();
        let workers = self.cfg.workers.clamp(1, order.len().max(1));
        self.receivers = (0..workers)
            .map(|w| {
                let mine: Vec<PathBuf> = order
                    .iter()
                    .skip(w)
                    .step_by(workers)
                    .map(|&i| self.shards[i].clone())
                    .collect();
                let (tx, rx) = sync_channel(CHANNEL_DEPTH);
                std::thread::spawn(move || {
                    for shard in mine {
                        let skips = stream_shard(&shard, |s| tx.send(Item::Sample(s)).is_ok());
                        if tx.send(Item::ShardDone(skips)).is_err() {
                            return; // the stream was dropped
                        }
                    }
                });
                Some(rx)
            })
            .collect();
        self.epoch = epoch;
        self.epoch_samples = 0;
        self.turn = 0;
        self.buffer.clear();
        self.rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5348_5546);
        self.read_skips = SkipCounts::default();
    }

    /// The next sample from the workers, in round-robin order; None when all are done.
    fn next_read(&mut self) -> Option<RawSample> {
        let n = self.receivers.len();
        loop {
            if self.receivers.iter().all(Option::is_none) {
                return None;
            }
            let w = self.turn % n;
            let Some(rx) = &self.receivers[w] else {
                self.turn += 1;
                continue;
            };
            match rx.recv() {
                Ok(Item::Sample(s)) => {
                    self.turn += 1;
                    return Some(s);
                }
                Ok(Item::ShardDone(k)) => self.read_skips.add(&k), // the same worker again
                Err(_) => {
                    self.receivers[w] = None; // all its shards are read
                    self.turn += 1;
                }
            }
        }
    }

    /// The next sample through the shuffle buffer, moving to the next epoch as one ends.
    fn next(&mut self) -> std::result::Result<Placed, String> {
        loop {
            while self.buffer.len() < self.cfg.shuffle_buffer.max(1) {
                match self.next_read() {
                    Some(s) => self.buffer.push(s),
                    None => break,
                }
            }
            if !self.buffer.is_empty() {
                let i = self.rng.random_range(0..self.buffer.len());
                let sample = self.buffer.swap_remove(i);
                let placed = Placed {
                    position: self.position,
                    epoch: self.epoch,
                    sample,
                };
                self.position += 1;
                self.epoch_samples += 1;
                return Ok(placed);
            }
            // The epoch is read out.
            self.ended.push(EpochReport {
                epoch: self.epoch,
                rank: (self.cfg.ranks > 1).then_some(self.cfg.rank),
                samples: self.epoch_samples,
                skipped: self.read_skips.clone(),
            });
            if self.epoch_samples == 0 {
                let whose = match self.cfg.ranks {
                    1 => String::new(),
                    n => format!(" (rank {} of {n}'s share)", self.cfg.rank),
                };
                return Err(format!(
                    "the shards{whose} yielded no usable sample in epoch {} ({} skipped)",
                    self.epoch,
                    self.read_skips.total()
                ));
            }
            self.start_epoch(self.epoch + 1);
        }
    }
}

/// Batches streamed from WebDataset shards (see the module header).
pub struct StreamBatcher {
    shards: Arc<Vec<PathBuf>>,
    cfg: StreamCfg,
    image_size: usize,
    context_length: usize,
    tokenizer: TextTokenizer,
    augment: bool,
    state: Mutex<State>,
}

struct State {
    stream: ShardStream,
    /// Images that failed to decode, by epoch, not yet reported.
    corrupt: std::collections::BTreeMap<u64, usize>,
    /// Epochs fully consumed by batches, reported.
    reports: Vec<EpochReport>,
    /// Reports not yet taken by `take_epoch_reports`.
    fresh: Vec<EpochReport>,
}

impl StreamBatcher {
    /// A stream over `shards` (at least one, and at least one per rank). Nothing is read until
    /// the first batch. With several ranks, batch positions count this rank's samples only.
    pub fn new(
        shards: Vec<PathBuf>,
        cfg: StreamCfg,
        image_size: usize,
        context_length: usize,
    ) -> Self {
        assert!(
            shards.len() >= cfg.ranks.max(1),
            "{} shards dealt to {} ranks",
            shards.len(),
            cfg.ranks
        );
        let shards = Arc::new(shards);
        Self {
            state: Mutex::new(State {
                stream: ShardStream::new(Arc::clone(&shards), cfg),
                corrupt: Default::default(),
                reports: Vec::new(),
                fresh: Vec::new(),
            }),
            shards,
            cfg,
            image_size,
            context_length,
            tokenizer: TextTokenizer::default(),
            augment: true,
        }
    }

    /// `false`: every image resized and centre-cropped as at evaluation (deterministic, so a
    /// locked image tower's features can be cached) instead of a random crop.
    pub fn with_augment(mut self, augment: bool) -> Self {
        self.augment = augment;
        self
    }

    /// Tokenize captions with `tokenizer` (a pretrained text tower's) instead of CLIP's BPE.
    pub fn with_tokenizer(mut self, tokenizer: TextTokenizer) -> Self {
        self.tokenizer = tokenizer;
        self
    }

    fn take(stream: &mut ShardStream, n: usize) -> Result<Vec<Placed>> {
        (0..n)
            .map(|_| stream.next().map_err(candle_core::Error::msg))
            .collect()
    }
}

impl State {
    /// Move epochs whose every sample has been through a batch (the stream is past them and
    /// the current batch is done) from `ended` to the reports.
    fn settle(&mut self, before_epoch: u64) {
        while self
            .stream
            .ended
            .first()
            .is_some_and(|r| r.epoch < before_epoch)
        {
            let mut r = self.stream.ended.remove(0);
            r.skipped.corrupt_image += self.corrupt.remove(&r.epoch).unwrap_or(0);
            r.samples -= r.skipped.corrupt_image as u64;
            self.reports.push(r.clone());
            self.fresh.push(r);
        }
    }
}

impl BatchSource for StreamBatcher {
    fn batch(&self, start: u64, n: usize, device: &Device) -> Result<Batch> {
        let mut st = self.state.lock().expect("stream lock");
        let placed = if start >= st.stream.position {
            // The run's own next batch, or a resumed run catching up: read past the gap.
            let gap = (start - st.stream.position) as usize;
            Self::take(&mut st.stream, gap)?;
            Self::take(&mut st.stream, n)?
        } else {
            // An earlier batch (the fixed batch the plots use): from a fresh stream.
            let mut fresh = ShardStream::new(Arc::clone(&self.shards), self.cfg);
            Self::take(&mut fresh, start as usize)?;
            let out = Self::take(&mut fresh, n)?;
            drop(st);
            let samples: Vec<&RawSample> = out.iter().map(|p| &p.sample).collect();
            let positions: Vec<u64> = out.iter().map(|p| p.position).collect();
            let size = (self.image_size, self.context_length, self.augment);
            return Ok(assemble(
                &samples,
                &positions,
                self.cfg.seed,
                size,
                &self.tokenizer,
                device,
            )?
            .0);
        };
        let samples: Vec<&RawSample> = placed.iter().map(|p| &p.sample).collect();
        let positions: Vec<u64> = placed.iter().map(|p| p.position).collect();
        let (batch, failed) = assemble(
            &samples,
            &positions,
            self.cfg.seed,
            (self.image_size, self.context_length, self.augment),
            &self.tokenizer,
            device,
        )?;
        for k in failed {
            *st.corrupt.entry(placed[k].epoch).or_insert(0) += 1;
        }
        let current = st.stream.epoch;
        st.settle(current);
        Ok(batch)
    }

    fn skipped(&self) -> Option<SkipCounts> {
        let st = self.state.lock().expect("stream lock");
        let mut total = SkipCounts::default();
        for r in &st.reports {
            total.add(&r.skipped);
        }
        // The epoch in progress: what has been read and decoded so far.
        total.add(&st.stream.read_skips);
        for r in &st.stream.ended {
            total.add(&r.skipped);
        }
        total.corrupt_image += st.corrupt.values().sum::<usize>();
        Some(total)
    }

    fn take_epoch_reports(&self) -> Vec<EpochReport> {
        std::mem::take(&mut self.state.lock().expect("stream lock").fresh)
    }

    fn per_rank(&self) -> bool {
        self.cfg.ranks > 1
    }
}

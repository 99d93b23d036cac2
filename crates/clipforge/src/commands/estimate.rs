//! `clipforge estimate`: the compute of a training run (model FLOPs from the config) and how
//! long it takes at the rate measured on this machine, or at a given device rate.

use anyhow::{Context, Result};
use clip::ClipConfig;
use clip_train::estimate::{self, Estimate};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
clipforge estimate --model ViT-B-32 --samples 12.8B                 # the paper's B/32 run\n  \
clipforge estimate --model tiny --samples 800x64 --no-measure\n  \
clipforge estimate --model ViT-B-32 --samples 400M --device-tflops 300 --json\n  \
clipforge estimate --model ViT-L-14 --samples 12.8B --device-tflops 25 --devices 256 --no-measure\n  \
clipforge estimate --model ViT-B-32 --samples 400M --batch-size 4096 --devices 8 --device-tflops 100 --link-gbytes 25 --no-measure\n\n\
FLOPs are model FLOPs: every matrix product at 2 per multiply-add, the backward pass counted\n\
as twice the forward, element-wise work left out (as in MFU figures). The rate here is\n\
measured by timing a few training steps of the model at --measure-batch pairs of built-in\n\
scenes (larger batches usually run a little faster per pair). --device-tflops is a rate you\n\
expect to sustain elsewhere, not a datasheet peak: a GPU trains CLIP at roughly 30–50% of\n\
its bf16 peak.")]
pub struct Args {
    /// Model preset or JSON config.
    #[arg(long, default_value = "ViT-B-32")]
    pub model: String,
    /// Training pairs seen in all (epochs × dataset size): 12.8B, 400M, 15k, 1.5e6, or
    /// STEPSxBATCH (800x64).
    #[arg(long, value_parser = parse_samples)]
    pub samples: f64,
    /// Pairs per step (the N of the N×N logits; the paper's 32,768).
    #[arg(long, default_value_t = 32_768)]
    pub batch_size: usize,
    /// Also give the time at this sustained rate per device, in TFLOP/s.
    #[arg(long)]
    pub device_tflops: Option<f64>,
    /// Devices training together (data parallel): with --device-tflops the time assumes
    /// perfect scaling; above 1, what each step moves between them is shown too.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// With --devices: each device's link in GB/s, to set the step's moving time beside its
    /// computing time (give --device-tflops too).
    #[arg(long, value_name = "GB/S")]
    pub link_gbytes: Option<f64>,
    /// Do not time training steps here (FLOPs and --device-tflops only).
    #[arg(long)]
    pub no_measure: bool,
    /// Pairs per timed step.
    #[arg(long, default_value_t = 8)]
    pub measure_batch: usize,
    /// Timed steps (after one untimed).
    #[arg(long, default_value_t = 2)]
    pub measure_steps: usize,
    /// Where the timed steps run: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// "12.8B" → 1.28e10; "15k", "400M", "2T", "1e6", "800x64".
fn parse_samples(s: &str) -> Result<f64, String> {
    let bad = || format!("expected a count such as 12.8B, 400M, 15k, 1e6 or 800x64, got {s:?}");
    let value = if let Some((steps, batch)) = s.split_once(['x', '×']) {
        let steps: f64 = steps.trim().parse().map_err(|_| bad())?;
        let batch: f64 = batch.trim().parse().map_err(|_| bad())?;
        steps * batch
    } else {
        let (num, mult) = match s.trim().chars().last() {
            Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
            Some('M') => (&s[..s.len() - 1], 1e6),
            Some('B' | 'G') => (&s[..s.len() - 1], 1e9),
            Some('T') => (&s[..s.len() - 1], 1e12),
            _ => (s, 1.0),
        };
        num.trim().parse::<f64>().map_err(|_| bad())? * mult
    };
    if value.is_finite() && value >= 1.0 {
        Ok(value)
    } else {
        Err(bad())
    }
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    anyhow::ensure!(args.devices >= 1, "--devices must be at least 1");
    anyhow::ensure!(
        args.measure_batch >= 2,
        "--measure-batch must be at least 2"
    );
    anyhow::ensure!(
        args.measure_steps >= 1,
        "--measure-steps must be at least 1"
    );
    if let Some(g) = args.link_gbytes {
        anyhow::ensure!(
            g > 0.0 && g.is_finite(),
            "--link-gbytes must be positive, got {g}"
        );
    }
    if let Some(t) = args.device_tflops {
        anyhow::ensure!(
            t > 0.0 && t.is_finite(),
            "--device-tflops must be positive, got {t}"
        );
    }
    let cfg = ClipConfig::resolve(&args.model)?;
    let measured = if args.no_measure {
        None
    } else {
        if !args.json {
            eprintln!(
                "timing {} training step(s) of {} at {} pairs…",
                args.measure_steps + 1,
                args.model,
                args.measure_batch
            );
        }
        let device = args.device.open()?;
        Some(
            estimate::measure(&cfg, args.measure_batch, args.measure_steps, &device)
                .with_context(|| format!("timing a training step of {}", args.model))?,
        )
    };
    let e = estimate::estimate(
        &args.model,
        &cfg,
        args.samples,
        args.batch_size,
        measured,
        args.device_tflops,
        args.devices,
        args.link_gbytes,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print_table(&e);
    }
    Ok(())
}

/// Days as the largest unit that reads well: seconds, minutes, hours, days or years.
fn duration(days: f64) -> String {
    let s = days * 86_400.0;
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7_200.0 {
        format!("{:.1} min", s / 60.0)
    } else if days < 2.0 {
        format!("{:.1} h", s / 3_600.0)
    } else if days < 730.0 {
        format!("{days:.1} days")
    } else {
        format!("{:.1} years", days / 365.25)
    }
}

fn print_table(e: &Estimate) {
    println!(
        "{} on {:.3e} pairs in batches of {}",
        e.model, e.samples, e.batch_size
    );
    println!(
        "  forward FLOPs: {:.2} G per image, {:.2} G per caption",
        e.image_forward_gflops, e.text_forward_gflops
    );
    println!(
        "  training FLOPs: {:.1} G per pair, {:.3e} in all ({:.3} petaflop/s-days)",
        e.train_gflops_per_pair, e.total_flops, e.petaflop_s_days
    );
    if let (Some(m), Some(days)) = (&e.measured, e.measured_days) {
        println!(
            "  here ({}, {} threads): {:.3} s per step of {} pairs = {:.3} TFLOP/s → {}",
            m.device,
            m.threads,
            m.step_s,
            m.batch_size,
            m.tflops,
            duration(days)
        );
    }
    if let (Some(t), Some(days)) = (e.device_tflops, e.device_days) {
        let on = match e.devices {
            1 => String::new(),
            n => format!(" on each of {n} devices"),
        };
        println!("  at {t} TFLOP/s sustained{on} → {}", duration(days));
    }
    if let Some(c) = &e.communication {
        let mb = |b: f64| b / 1e6;
        println!(
            "  each step, per device ({} pairs of the {}): {:.1} MB of features all-gathered, {:.1} MB of gradients all-reduced ({:.1} M parameters); {:.1} MB more with --local-loss",
            c.per_device_batch,
            e.batch_size,
            mb(c.feature_gather_bytes),
            mb(c.gradient_reduce_bytes),
            c.parameters / 1e6,
            mb(c.local_loss_extra_bytes)
        );
        println!(
            "  {:.3e} FLOPs per device per step: {:.0} FLOPs per byte moved",
            c.compute_flops, c.flops_per_byte
        );
        if let (Some(g), Some(comm), Some(comp)) = (c.link_gbytes, c.comm_s, c.compute_s) {
            println!(
                "  at {g} GB/s per device: {:.3} s moving against {:.3} s computing per step ({:.0}% of the step if they do not overlap)",
                comm,
                comp,
                100.0 * comm / (comm + comp)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_samples;

    #[test]
    fn sample_counts_parse_with_suffixes_and_products() {
        assert_eq!(parse_samples("12.8B").unwrap(), 12.8e9);
        assert_eq!(parse_samples("400M").unwrap(), 4e8);
        assert_eq!(parse_samples("15k").unwrap(), 15e3);
        assert_eq!(parse_samples("1.5e6").unwrap(), 1.5e6);
        assert_eq!(parse_samples("800x64").unwrap(), 51_200.0);
        assert!(parse_samples("lots").unwrap_err().contains("12.8B"));
        assert!(parse_samples("0").is_err());
    }
}

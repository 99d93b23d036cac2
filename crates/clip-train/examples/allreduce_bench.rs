//! Three ways to sum a step's gradients over an MPI launch, timed on one buffer: a reduce to
//! rank 0 and a broadcast (what `MpiComm::all_reduce_sum` does), a reduce-scatter then an
//! all-gather, and `MPI_Allreduce`. Default size: ViT-B-32's 151,277,313 parameters in f32.
//!
//!     cargo build --release -p clip-train --features mpi --example allreduce_bench
//!     mpirun -np 2 target/release/examples/allreduce_bench [FLOATS] [TRIES]
//!
//! Prints, on rank 0, each way's median seconds over the tries after the first (which pages
//! the buffers in); the buffer is cut to a multiple of the world size.

use std::time::Instant;

use clip_train::dist::mpi::MpiLaunch;
use mpi::collective::SystemOperation;
use mpi::traits::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let floats: usize = args.get(1).map_or(Ok(151_277_313), |s| s.parse())?;
    let tries: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let _launch = MpiLaunch::init()?;
    let world = mpi::topology::SimpleCommunicator::world();
    let (rank, size) = (world.rank(), world.size() as usize);
    let n = floats - floats % size;
    let mut buf = vec![0f32; n]; // [n]: this process's gradients
    let mut sum = vec![0f32; n]; // [n]: a receive buffer
    let mut block = vec![0f32; n / size]; // [n / W]: this process's block of the sum
    let ways = [
        "reduce + broadcast",
        "reduce-scatter + all-gather",
        "MPI_Allreduce",
    ];
    if rank == 0 {
        println!(
            "{n} floats ({:.0} MB), {size} processes, median of {} tries after the first",
            n as f64 * 4e-6,
            tries.saturating_sub(1)
        );
    }
    for (way, name) in ways.iter().enumerate() {
        let mut secs = Vec::new();
        for _ in 0..tries {
            buf.iter_mut().for_each(|x| *x = rank as f32 + 1.0);
            world.barrier();
            let t = Instant::now();
            match way {
                0 => {
                    let root = world.process_at_rank(0);
                    if rank == 0 {
                        root.reduce_into_root(&buf[..], &mut sum[..], SystemOperation::sum());
                        buf.copy_from_slice(&sum);
                    } else {
                        root.reduce_into(&buf[..], SystemOperation::sum());
                    }
                    root.broadcast_into(&mut buf[..]);
                }
                1 => {
                    world.reduce_scatter_block_into(
                        &buf[..],
                        &mut block[..],
                        SystemOperation::sum(),
                    );
                    world.all_gather_into(&block[..], &mut buf[..]);
                }
                _ => {
                    world.all_reduce_into(&buf[..], &mut sum[..], SystemOperation::sum());
                    buf.copy_from_slice(&sum);
                }
            }
            secs.push(t.elapsed().as_secs_f64());
            let want = (size * (size + 1) / 2) as f32; // Σ (rank + 1)
            if buf[0] != want || buf[n - 1] != want {
                return Err(
                    format!("{name}: summed {} and {}, want {want}", buf[0], buf[n - 1]).into(),
                );
            }
        }
        let mut steady = secs[1.min(secs.len() - 1)..].to_vec();
        steady.sort_by(f64::total_cmp);
        if rank == 0 {
            println!("{name:<28} {:.3} s", steady[steady.len() / 2]);
        }
    }
    Ok(())
}

//! Launching `clipforge` under a real `mpirun` for the tests: the settings a container needs,
//! one launch at a time, a time limit that kills a hung launch instead of hanging the test
//! run, and the ranks' process ids for a test that signals one.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `mpirun` as a container needs it, one thread a process: as root; 2 slots on 2 cores
/// and no binding to cores (a cgroup may hold other cores than the ones hwloc sees); the
/// processes talk over shared memory without cross-memory attach (`process_vm_readv`, which
/// a sandbox's seccomp may refuse, failing or hanging large messages), else TCP, and both
/// TCP and the bootstrap stay on loopback; an idle process yields its core.
#[cfg(feature = "mpi")]
pub fn mpirun(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "--bind-to",
        "none",
        "-np",
        &np.to_string(),
    ])
    .args(["-x", "RAYON_NUM_THREADS=1"])
    .env("OMPI_MCA_btl", "self,vader,tcp")
    .env("OMPI_MCA_btl_tcp_if_include", "lo")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env("OMPI_MCA_oob_tcp_if_include", "lo")
    .env("OMPI_MCA_mpi_yield_when_idle", "1")
    .arg(env!("CARGO_BIN_EXE_clipforge"))
    .args(args);
    c
}

/// One launch at a time: the tests share 2 cores, and a launch of 2 processes wants both.
#[cfg(feature = "mpi")]
pub static ONE_LAUNCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long any one launch may take before the test kills it and fails (a debug build of
/// 20 `tiny` steps takes well under a minute on 2 cores).
pub const LAUNCH_LIMIT: Duration = Duration::from_secs(300);

/// Starts `cmd` in a process group of its own, stdout and stderr piped and read aside.
pub fn spawn(cmd: &mut Command) -> Launch {
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the launch");
    let pipe = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    Launch {
        child,
        stdout,
        stderr,
    }
}

pub struct Launch {
    pub child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl Launch {
    /// Waits at most `limit`; past it the whole process group is killed and the test fails
    /// with what the launch printed, instead of hanging the test run.
    pub fn wait(mut self, limit: Duration, what: &str) -> Output {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let Some(status) = status else {
            let pgid = self.child.id();
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{pgid}")])
                .status();
            let _ = self.child.wait();
            let stderr = self.stderr.join().unwrap_or_default();
            panic!(
                "{what}: still running after {limit:?}, killed; its stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        };
        Output {
            status,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}

#[cfg(feature = "mpi")]
impl Launch {
    /// Once the run in `run_dir` has a checkpoint, `kill SIGNAL` (`-9`, `-STOP`) to rank 1.
    pub fn signal_rank_1_after_a_checkpoint(self, run_dir: &Path, signal: &str) -> Self {
        let t0 = Instant::now();
        while clip_train::checkpoint::resolve(run_dir).is_err() {
            if t0.elapsed() > Duration::from_secs(120) {
                let o = self.wait(Duration::ZERO, "the launch to signal a rank of");
                panic!(
                    "no checkpoint after 2 minutes; stderr: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let ranks = ranks_of(self.child.id());
        let &(victim, _) = ranks
            .iter()
            .find(|(_, r)| *r == 1)
            .expect("rank 1 among mpirun's children");
        Command::new("kill")
            .args([signal, &victim.to_string()])
            .status()
            .unwrap();
        self
    }
}

/// `cmd` run to its end within [`LAUNCH_LIMIT`].
pub fn run(cmd: &mut Command, what: &str) -> Output {
    spawn(cmd).wait(LAUNCH_LIMIT, what)
}

#[cfg(feature = "mpi")]
pub fn has_mpirun() -> bool {
    let ok = Command::new("mpirun").arg("--version").output().is_ok();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "mpirun is missing: .ci/run installs openmpi-bin"
    );
    if !ok {
        eprintln!("mpirun not found: skipped (Debian: apt-get install openmpi-bin libopenmpi-dev)");
    }
    ok
}

/// Pids of `mpirun`'s processes with their ranks (Open MPI puts the rank in each one's
/// environment).
#[cfg(feature = "mpi")]
pub fn ranks_of(launcher: u32) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent: Option<u32> = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if parent != Some(launcher) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for var in env.split(|&b| b == 0) {
            if let Some(r) = var.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                out.push((pid, String::from_utf8_lossy(r).parse().unwrap()));
            }
        }
    }
    out
}

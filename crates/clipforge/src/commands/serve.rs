//! `clipforge serve`: the search page and JSON API over an index, on localhost by default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::Device;
use clip_search::Index;
use clip_serve::{AppState, Limits};

use super::index::ModelArgs;

#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
clipforge index --checkpoint runs/quickstart ~/Pictures --out photos.idx\n  \
clipforge serve --index photos.idx --checkpoint runs/quickstart      # then open http://127.0.0.1:8080\n\n\
The page: a search box (text → images), an image upload or drop (image → images), a labels\n\
box (comma-separated labels scored zero-shot on the results), a grid of thumbnails with their\n\
scores; click one for the full image and its nearest neighbours.\n\n\
JSON API: GET /api/search?q=TEXT&k=K, POST /api/search (multipart, field `image`),\n\
POST /api/zeroshot {\"labels\": [...], \"ids\": [...]}, GET /api/neighbors/ID?k=K,\n\
GET /api/image/ID, GET /api/thumb/ID, GET /api/health. Images are named by id only; only\n\
indexed files are ever read. Errors are {\"error\": ...} with a 4xx status.")]
pub struct Args {
    /// The index (made by clipforge index).
    #[arg(long)]
    pub index: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port, printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Largest upload, in MiB.
    #[arg(long, default_value_t = 10)]
    pub max_upload_mib: usize,
}

pub fn run(args: Args) -> Result<()> {
    let index = Index::load(&args.index)?;
    let device = Device::Cpu;
    let model = args.model.load_for(&index, &device)?;
    let limits = Limits {
        max_upload_bytes: args.max_upload_mib << 20,
        ..Limits::default()
    };
    let images = index.len();
    let state = Arc::new(AppState::new(index, model, device, limits)?);
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .with_context(|| format!("--host {} --port {}: not an address", args.host, args.port))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        // The line a script (or a test) waits for.
        println!("serving {images} images on http://{bound}/");
        axum::serve(listener, clip_serve::router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("server stopped")
    })
}

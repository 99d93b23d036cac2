//! Write a grid of built-in scenes to a PNG: `cargo run -p clip-data --example preview -- out.png [size]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map(String::as_str).unwrap_or("scenes.png");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let ds = clip_data::Shapes::new(0, clip_data::Split::Train);
    let caps = clip_data::batch::preview_png(&ds, size, 8, 4, std::path::Path::new(path))
        .expect("write preview");
    for (i, c) in caps.iter().enumerate() {
        println!("{i:2}: {c}");
    }
}

//! PNG plots of a run: the loss curve, and the N×N similarity matrix of a fixed batch (the
//! picture of the paper's key paragraph: the diagonal pairs happened, the rest did not).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Result, TrainError};

fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .ok();
    });
}

fn err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Loss against step, with ln(N) (chance) as a dashed line.
pub fn loss_curve(path: &Path, points: &[(u64, f64)], chance: f64) -> Result<()> {
    register_fonts();
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let max_step = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    let max_loss = points.iter().map(|p| p.1).fold(chance, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("contrastive loss", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0u64..max_step, 0f64..max_loss)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|e| err(path, e))?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|&(s, l)| (s, l)), &BLUE))
        .map_err(|e| err(path, e))?
        .label("training loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(DashedLineSeries::new(
            [(0, chance), (max_step, chance)],
            6,
            4,
            RED.into(),
        ))
        .map_err(|e| err(path, e))?
        .label(format!("ln N = {chance:.2} (chance)"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))?;
    Ok(())
}

/// Heat map of cosine similarities `sims[i][j]` (image i, caption j), captions listed below.
pub fn similarity_matrix(
    path: &Path,
    sims: &[Vec<f32>],
    title: &str,
    captions: &[String],
) -> Result<()> {
    register_fonts();
    let n = sims.len();
    let cell = 34u32;
    let grid = cell * n as u32;
    let (w, h) = (grid + 140, grid + 110 + 16 * n as u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (x0, y0) = (60i32, 50i32);
    root.draw(&Text::new(title.to_string(), (10, 12), ("sans-serif", 20)))
        .map_err(|e| err(path, e))?;
    let (lo, hi) = sims
        .iter()
        .flatten()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-6);
    for (i, row) in sims.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let t = ((v - lo) / span) as f64;
            let colour = ViridisRGB::get_color(t);
            let (x, y) = (x0 + j as i32 * cell as i32, y0 + i as i32 * cell as i32);
            root.draw(&Rectangle::new(
                [(x, y), (x + cell as i32, y + cell as i32)],
                colour.filled(),
            ))
            .map_err(|e| err(path, e))?;
            let fg = if t > 0.6 { BLACK } else { WHITE };
            root.draw(&Text::new(
                format!("{:.2}", v),
                (x + 3, y + 12),
                ("sans-serif", 10).into_font().color(&fg),
            ))
            .map_err(|e| err(path, e))?;
        }
        root.draw(&Text::new(
            format!("I{i}"),
            (x0 - 28, y0 + i as i32 * cell as i32 + 12),
            ("sans-serif", 12),
        ))
        .map_err(|e| err(path, e))?;
        root.draw(&Text::new(
            format!("T{i}"),
            (x0 + i as i32 * cell as i32 + 8, y0 - 14),
            ("sans-serif", 12),
        ))
        .map_err(|e| err(path, e))?;
    }
    root.draw(&Text::new(
        format!("rows: images, columns: captions; cosine {lo:.2} … {hi:.2}"),
        (x0, y0 + grid as i32 + 8),
        ("sans-serif", 13),
    ))
    .map_err(|e| err(path, e))?;
    for (j, c) in captions.iter().enumerate() {
        root.draw(&Text::new(
            format!("T{j}: {c}"),
            (x0, y0 + grid as i32 + 28 + 16 * j as i32),
            ("sans-serif", 12),
        ))
        .map_err(|e| err(path, e))?;
    }
    root.present().map_err(|e| err(path, e))?;
    Ok(())
}

/// Confusion matrix `counts[true][predicted]` as a heat map of row-normalised rates (each
/// true class sums to 1), the count written in each cell, class names along both axes.
pub fn confusion_matrix(
    path: &Path,
    counts: &[Vec<usize>],
    classes: &[String],
    title: &str,
) -> Result<()> {
    register_fonts();
    let n = counts.len();
    let cell = 44u32;
    let label_w = 120i32;
    let (x0, y0) = (label_w + 10, 50i32);
    let (w, h) = (
        x0 as u32 + cell * n as u32 + 20,
        y0 as u32 + cell * n as u32 + 130,
    );
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    root.draw(&Text::new(title.to_string(), (10, 12), ("sans-serif", 18)))
        .map_err(|e| err(path, e))?;
    for (i, row) in counts.iter().enumerate() {
        let total = row.iter().sum::<usize>().max(1) as f64;
        for (j, &c) in row.iter().enumerate() {
            let t = c as f64 / total;
            let (x, y) = (x0 + j as i32 * cell as i32, y0 + i as i32 * cell as i32);
            root.draw(&Rectangle::new(
                [(x, y), (x + cell as i32, y + cell as i32)],
                ViridisRGB::get_color(t).filled(),
            ))
            .map_err(|e| err(path, e))?;
            let fg = if t > 0.6 { BLACK } else { WHITE };
            root.draw(&Text::new(
                c.to_string(),
                (x + 4, y + cell as i32 / 2 - 6),
                ("sans-serif", 12).into_font().color(&fg),
            ))
            .map_err(|e| err(path, e))?;
        }
        let name = classes.get(i).cloned().unwrap_or_else(|| i.to_string());
        root.draw(&Text::new(
            name.clone(),
            (6, y0 + i as i32 * cell as i32 + cell as i32 / 2 - 6),
            ("sans-serif", 13),
        ))
        .map_err(|e| err(path, e))?;
        let bottom = y0 + n as i32 * cell as i32 + 6;
        root.draw(&Text::new(
            name,
            (x0 + i as i32 * cell as i32 + 4, bottom),
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        ))
        .map_err(|e| err(path, e))?;
    }
    root.draw(&Text::new(
        "rows: true class; columns: predicted (count in each cell, colour = row share)".to_string(),
        (10, h as i32 - 18),
        ("sans-serif", 12),
    ))
    .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))?;
    Ok(())
}

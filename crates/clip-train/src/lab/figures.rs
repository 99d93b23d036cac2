//! The lab's pictures: heat maps of an N×N batch with its images along the rows, grouped bars
//! and curves. Drawn with plotters into PNG files.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, TrainError};

fn err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .ok();
    });
}

/// One heat map of a batch: `values[i][j]` for image i (row) and caption j (column).
pub struct Heatmap<'a> {
    pub title: String,
    pub values: &'a [Vec<f32>],
    /// The values the colour scale spans.
    pub range: (f32, f32),
    /// Each row's image, `[S, S, 3]` RGB in [0, 1] (S = `CELL` − 4), drawn left of the row.
    pub thumbs: &'a [Vec<f32>],
    /// A note right of each row (its cross-entropy), and below each column.
    pub row_notes: Vec<String>,
    pub col_notes: Vec<String>,
}

/// Side of a heat map cell in pixels; thumbnails are rendered at `CELL - 4`.
pub const CELL: i32 = 52;
const TOP: i32 = 56;

impl Heatmap<'_> {
    fn size(&self) -> (i32, i32) {
        let n = self.values.first().map_or(0, Vec::len) as i32;
        let rows = self.values.len() as i32;
        (CELL + 30 + n * CELL + 90, TOP + rows * CELL + 40)
    }

    fn draw(&self, area: &DrawingArea<BitMapBackend, Shift>, path: &Path) -> Result<()> {
        let e = |x| err(path, x);
        area.draw(&Text::new(self.title.clone(), (8, 8), ("sans-serif", 17)))
            .map_err(e)?;
        let (x0, y0) = (CELL + 30, TOP);
        let (lo, hi) = self.range;
        let span = (hi - lo).max(1e-6);
        let cols = self.values.first().map_or(0, Vec::len);
        for (i, row) in self.values.iter().enumerate() {
            let y = y0 + i as i32 * CELL;
            if let Some(img) = self.thumbs.get(i) {
                let s = (CELL - 4) as usize;
                for py in 0..s {
                    for px in 0..s {
                        let p = &img[(py * s + px) * 3..(py * s + px) * 3 + 3];
                        let c = RGBColor(
                            (p[0] * 255.0) as u8,
                            (p[1] * 255.0) as u8,
                            (p[2] * 255.0) as u8,
                        );
                        area.draw_pixel((2 + px as i32, y + 2 + py as i32), &c)
                            .map_err(e)?;
                    }
                }
            }
            area.draw(&Text::new(
                format!("I{i}"),
                (CELL + 6, y + CELL / 2 - 6),
                ("sans-serif", 12),
            ))
            .map_err(e)?;
            for (j, &v) in row.iter().enumerate() {
                let t = (((v - lo) / span) as f64).clamp(0.0, 1.0);
                let x = x0 + j as i32 * CELL;
                area.draw(&Rectangle::new(
                    [(x, y), (x + CELL, y + CELL)],
                    ViridisRGB::get_color(t).filled(),
                ))
                .map_err(e)?;
                if i == j {
                    area.draw(&Rectangle::new(
                        [(x + 1, y + 1), (x + CELL - 1, y + CELL - 1)],
                        RED.stroke_width(2),
                    ))
                    .map_err(e)?;
                }
                let fg = if t > 0.6 { BLACK } else { WHITE };
                area.draw(&Text::new(
                    format!("{v:.2}"),
                    (x + 9, y + CELL / 2 - 6),
                    ("sans-serif", 13).into_font().color(&fg),
                ))
                .map_err(e)?;
            }
            if let Some(note) = self.row_notes.get(i) {
                let x = x0 + cols as i32 * CELL + 6;
                area.draw(&Text::new(
                    note.clone(),
                    (x, y + CELL / 2 - 6),
                    ("sans-serif", 13),
                ))
                .map_err(e)?;
            }
        }
        for j in 0..cols {
            let x = x0 + j as i32 * CELL;
            area.draw(&Text::new(
                format!("T{j}"),
                (x + CELL / 2 - 8, TOP - 18),
                ("sans-serif", 12),
            ))
            .map_err(e)?;
            if let Some(note) = self.col_notes.get(j) {
                let y = y0 + self.values.len() as i32 * CELL + 6;
                area.draw(&Text::new(note.clone(), (x + 6, y), ("sans-serif", 13)))
                    .map_err(e)?;
            }
        }
        Ok(())
    }
}

/// Heat maps side by side in one PNG, with the captions listed below them.
pub fn heatmaps(path: &Path, maps: &[Heatmap], captions: &[String]) -> Result<()> {
    fonts();
    let (w, h) = maps.iter().fold((0, 0), |(w, h), m| {
        let (mw, mh) = m.size();
        (w + mw, h.max(mh))
    });
    let legend = 18 * captions.len() as i32 + 16;
    let root = BitMapBackend::new(path, ((w + 10) as u32, (h + legend) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut x = 0;
    for m in maps {
        let (mw, _) = m.size();
        let area = root.clone().shrink((x, 0), (mw as u32, h as u32));
        m.draw(&area, path)?;
        x += mw;
    }
    for (j, c) in captions.iter().enumerate() {
        root.draw(&Text::new(
            format!("T{j}: {c}"),
            (CELL + 30, h + 4 + 18 * j as i32),
            ("sans-serif", 14),
        ))
        .map_err(|e| err(path, e))?;
    }
    root.present().map_err(|e| err(path, e))?;
    Ok(())
}

/// Grouped bars: for each group (x label), one bar per series; values in [0, `max`].
pub fn bars(
    path: &Path,
    title: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
    y_desc: &str,
    max: f64,
) -> Result<()> {
    fonts();
    let e = |x| err(path, x);
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let n = series.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..max)
        .map_err(e)?;
    let labels = groups.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let k = x.floor() as usize;
            if (x - k as f64 - 0.5).abs() < 0.01 {
                labels.get(k).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(e)?;
    for (s, (name, values)) in series.iter().enumerate() {
        let colour = Palette99::pick(s).mix(0.9);
        let w = 0.8 / n;
        chart
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                let x = g as f64 + 0.1 + s as f64 * w;
                Rectangle::new([(x, 0.0), (x + w * 0.95, v)], colour.filled())
            }))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
        for (g, &v) in values.iter().enumerate() {
            let x = g as f64 + 0.1 + s as f64 * w;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{:.0}", v),
                    (x, v + max * 0.01),
                    ("sans-serif", 12),
                )))
                .map_err(e)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Curves y against x, one per series, with markers.
pub fn curves(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    fonts();
    let e = |x| err(path, x);
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (x0, x1, y0, y1) = pts.fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |a, &(x, y)| {
        (a.0.min(x), a.1.max(x), a.2.min(y), a.3.max(y))
    });
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(e)?;
    for (s, (name, points)) in series.iter().enumerate() {
        let colour = Palette99::pick(s).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// What a point of a scatter plot stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// An image (a filled dot).
    Image,
    /// An image of a combination never seen in training (a ring).
    HeldOut,
    /// A text (a square with a black edge).
    Text,
}

/// One point: where, its colour (RGB in [0, 1]) and what it is.
#[derive(Debug, Clone)]
pub struct Point {
    pub xy: (f64, f64),
    pub rgb: [f32; 3],
    pub marker: Marker,
}

fn rgb(c: [f32; 3]) -> RGBColor {
    RGBColor(
        (c[0] * 255.0) as u8,
        (c[1] * 255.0) as u8,
        (c[2] * 255.0) as u8,
    )
}

/// Scatter plots side by side, one per `(title, points)`, each on its own axes.
pub fn scatters(path: &Path, panels: &[(String, Vec<Point>)], note: &str) -> Result<()> {
    fonts();
    let e = |x| err(path, x);
    let root = BitMapBackend::new(path, (560 * panels.len() as u32, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let (body, foot) = root.split_vertically(570);
    foot.draw(&Text::new(note.to_string(), (10, 6), ("sans-serif", 14)))
        .map_err(e)?;
    for (area, (title, points)) in body.split_evenly((1, panels.len())).iter().zip(panels) {
        let (x0, x1, y0, y1) =
            points
                .iter()
                .fold((f64::MAX, f64::MIN, f64::MAX, f64::MIN), |a, p| {
                    (
                        a.0.min(p.xy.0),
                        a.1.max(p.xy.0),
                        a.2.min(p.xy.1),
                        a.3.max(p.xy.1),
                    )
                });
        let (px, py) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("PC 1")
            .y_desc("PC 2")
            .draw()
            .map_err(e)?;
        for marker in [Marker::Image, Marker::HeldOut, Marker::Text] {
            let pts = points.iter().filter(|p| p.marker == marker);
            match marker {
                Marker::Image => chart
                    .draw_series(pts.map(|p| Circle::new(p.xy, 3, rgb(p.rgb).filled())))
                    .map_err(e)?,
                Marker::HeldOut => chart
                    .draw_series(pts.map(|p| Circle::new(p.xy, 5, rgb(p.rgb).stroke_width(2))))
                    .map_err(e)?,
                Marker::Text => chart
                    .draw_series(pts.flat_map(|p| {
                        [
                            EmptyElement::at(p.xy)
                                + Rectangle::new([(-5, -5), (5, 5)], rgb(p.rgb).filled()),
                            EmptyElement::at(p.xy)
                                + Rectangle::new([(-5, -5), (5, 5)], BLACK.stroke_width(1)),
                        ]
                    }))
                    .map_err(e)?,
            };
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// A row of thumbnails: its name, and each image (`[S, S, 3]`) with its label.
pub type ThumbnailRow = (String, Vec<(Vec<f32>, String)>);

/// Rows of thumbnails (`[S, S, 3]`, S = `CELL` − 4) with a short label under each; each row
/// starts with its name.
pub fn thumbnail_rows(path: &Path, title: &str, rows: &[ThumbnailRow]) -> Result<()> {
    fonts();
    let e = |x| err(path, x);
    let name_w = 150;
    let cols = rows.iter().map(|r| r.1.len()).max().unwrap_or(0) as i32;
    let row_h = CELL + 22;
    let w = (name_w + cols * (CELL + 8) + 10).max(20 + 9 * title.chars().count() as i32);
    let h = 40 + rows.len() as i32 * row_h;
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    root.draw(&Text::new(title.to_string(), (8, 8), ("sans-serif", 17)))
        .map_err(e)?;
    let s = (CELL - 4) as usize;
    for (r, (name, cells)) in rows.iter().enumerate() {
        let y = 40 + r as i32 * row_h;
        root.draw(&Text::new(
            name.clone(),
            (8, y + CELL / 2 - 6),
            ("sans-serif", 13),
        ))
        .map_err(e)?;
        for (c, (img, label)) in cells.iter().enumerate() {
            let x = name_w + c as i32 * (CELL + 8);
            for py in 0..s {
                for px in 0..s {
                    let p = &img[(py * s + px) * 3..(py * s + px) * 3 + 3];
                    root.draw_pixel(
                        (x + 2 + px as i32, y + 2 + py as i32),
                        &rgb([p[0], p[1], p[2]]),
                    )
                    .map_err(e)?;
                }
            }
            root.draw(&Text::new(
                label.clone(),
                (x + 2, y + CELL + 2),
                ("sans-serif", 12),
            ))
            .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

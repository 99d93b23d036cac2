//! The built-in scenes' geometry: signed distances to the eight shapes, for rendering.

use crate::synthetic::{object_radius, Object, SHAPES};

/// Signed distance (scene units, negative inside) from (u, v) to the object.
pub(crate) fn sdf(o: &Object, u: f32, v: f32) -> f32 {
    let r = object_radius(o.size);
    let (s, c) = o.angle.sin_cos();
    let (dx, dy) = (u - o.centre.0, v - o.centre.1);
    // Rotate into the object's frame; y up.
    let (x, y) = (c * dx + s * dy, -(-s * dx + c * dy));
    match SHAPES[o.shape] {
        "circle" => (x * x + y * y).sqrt() - r,
        "ring" => ((x * x + y * y).sqrt() - 0.75 * r).abs() - 0.25 * r,
        "square" => {
            let h = 0.8 * r;
            let (qx, qy) = (x.abs() - h, y.abs() - h);
            (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt() + qx.max(qy).min(0.0)
        }
        "triangle" => polygon(
            &regular(3, r * 1.1, std::f32::consts::FRAC_PI_2),
            x,
            y + 0.2 * r,
        ),
        "diamond" => polygon(&regular(4, r, std::f32::consts::FRAC_PI_2), x, y),
        "hexagon" => polygon(&regular(6, r, 0.0), x, y),
        "star" => polygon(&star(r), x, y),
        "cross" => {
            let (a, b) = (r, 0.33 * r);
            let arm = |px: f32, py: f32| {
                let (qx, qy) = (px.abs() - a, py.abs() - b);
                (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt() + qx.max(qy).min(0.0)
            };
            arm(x, y).min(arm(y, x))
        }
        other => unreachable!("unknown shape {other}"),
    }
}

fn regular(n: usize, r: f32, start: f32) -> Vec<(f32, f32)> {
    (0..n)
        .map(|k| {
            let t = start + k as f32 * std::f32::consts::TAU / n as f32;
            (r * t.cos(), r * t.sin())
        })
        .collect()
}

fn star(r: f32) -> Vec<(f32, f32)> {
    (0..10)
        .map(|k| {
            let t = std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::TAU / 10.0;
            let rr = if k % 2 == 0 { r * 1.1 } else { r * 0.45 };
            (rr * t.cos(), rr * t.sin())
        })
        .collect()
}

/// Signed distance to a simple polygon (negative inside).
fn polygon(pts: &[(f32, f32)], x: f32, y: f32) -> f32 {
    let mut d = f32::INFINITY;
    let mut inside = false;
    let n = pts.len();
    for i in 0..n {
        let (ax, ay) = pts[i];
        let (bx, by) = pts[(i + 1) % n];
        let (ex, ey) = (bx - ax, by - ay);
        let (wx, wy) = (x - ax, y - ay);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (qx, qy) = (wx - ex * t, wy - ey * t);
        d = d.min((qx * qx + qy * qy).sqrt());
        if (ay > y) != (by > y) && x < ax + (y - ay) * ex / ey {
            inside = !inside;
        }
    }
    if inside {
        -d
    } else {
        d
    }
}

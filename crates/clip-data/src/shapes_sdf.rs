//! The built-in scenes' geometry: signed distances to the eight shapes, each scaled so that
//! every shape of a given radius covers the area of the circle of that radius.

use std::f32::consts::{FRAC_PI_2, PI, TAU};
use std::sync::OnceLock;

use crate::synthetic::{Object, SHAPES};

/// Signed distance (scene units, negative inside) from (u, v) to the object.
pub(crate) fn sdf(o: &Object, u: f32, v: f32) -> f32 {
    let k = o.radius * geometry()[o.shape].scale;
    let (s, c) = o.angle.sin_cos();
    let (dx, dy) = (u - o.centre.0, v - o.centre.1);
    // Rotate into the object's frame (y up), then into the unit shape's.
    let (x, y) = (c * dx + s * dy, -(-s * dx + c * dy));
    k * unit_sdf(o.shape, x / k, y / k)
}

/// How far the object reaches from its centre (scene units): what placement keeps inside the
/// frame.
pub(crate) fn extent(shape: usize, radius: f32) -> f32 {
    radius * geometry()[shape].extent
}

#[derive(Clone, Copy)]
struct Geometry {
    /// Scale of the unit shape that gives it the area of the unit circle (π).
    scale: f32,
    /// Farthest inside point of the scaled shape from its centre, at radius 1.
    extent: f32,
}

/// Each shape's area and reach, measured once on a grid over the unit shape.
fn geometry() -> &'static [Geometry; SHAPES.len()] {
    static G: OnceLock<[Geometry; SHAPES.len()]> = OnceLock::new();
    G.get_or_init(|| {
        std::array::from_fn(|shape| {
            const N: usize = 400; // grid points per side over [-2, 2]²
            let step = 4.0 / N as f32;
            let (mut inside, mut reach) = (0usize, 0f32);
            for i in 0..N {
                for j in 0..N {
                    let (x, y) = (
                        -2.0 + (i as f32 + 0.5) * step,
                        -2.0 + (j as f32 + 0.5) * step,
                    );
                    if unit_sdf(shape, x, y) < 0.0 {
                        inside += 1;
                        reach = reach.max((x * x + y * y).sqrt());
                    }
                }
            }
            let area = inside as f32 * step * step;
            let scale = (PI / area).sqrt();
            Geometry {
                scale,
                extent: reach * scale,
            }
        })
    })
}

/// Signed distance to shape number `shape` drawn at unit size, in its own frame.
fn unit_sdf(shape: usize, x: f32, y: f32) -> f32 {
    match SHAPES[shape] {
        "circle" => (x * x + y * y).sqrt() - 1.0,
        "ring" => ((x * x + y * y).sqrt() - 0.75).abs() - 0.25,
        "square" => boxed(x, y, 0.8, 0.8),
        "triangle" => polygon(&regular(3, 1.1, FRAC_PI_2), x, y + 0.2),
        // A crescent: the unit disc less a disc of radius 0.8 shifted right.
        "moon" => ((x * x + y * y).sqrt() - 1.0).max(0.8 - ((x - 0.5).powi(2) + y * y).sqrt()),
        "heart" => polygon(heart(), x, y),
        "star" => polygon(&star(), x, y),
        "cross" => boxed(x, y, 1.0, 0.33).min(boxed(y, x, 1.0, 0.33)),
        other => unreachable!("unknown shape {other}"),
    }
}

/// Signed distance to the box of half-sides (a, b).
fn boxed(x: f32, y: f32, a: f32, b: f32) -> f32 {
    let (qx, qy) = (x.abs() - a, y.abs() - b);
    (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt() + qx.max(qy).min(0.0)
}

fn regular(n: usize, r: f32, start: f32) -> Vec<(f32, f32)> {
    (0..n)
        .map(|k| {
            let t = start + k as f32 * TAU / n as f32;
            (r * t.cos(), r * t.sin())
        })
        .collect()
}

/// The classic heart curve (x = 16 sin³ s, y = 13 cos s − 5 cos 2s − 2 cos 3s − cos 4s), as a
/// polygon of 48 points scaled to about the unit circle's size.
fn heart() -> &'static [(f32, f32)] {
    static H: OnceLock<Vec<(f32, f32)>> = OnceLock::new();
    H.get_or_init(|| {
        (0..48)
            .map(|k| {
                let s = k as f32 * TAU / 48.0;
                let x = 16.0 * s.sin().powi(3);
                let y = 13.0 * s.cos()
                    - 5.0 * (2.0 * s).cos()
                    - 2.0 * (3.0 * s).cos()
                    - (4.0 * s).cos();
                (x / 16.0, (y + 3.0) / 16.0)
            })
            .collect()
    })
}

fn star() -> Vec<(f32, f32)> {
    (0..10)
        .map(|k| {
            let t = FRAC_PI_2 + k as f32 * TAU / 10.0;
            let r = if k % 2 == 0 { 1.1 } else { 0.5 };
            (r * t.cos(), r * t.sin())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape at a radius covers the circle's area (counted on a fine grid).
    #[test]
    fn shapes_of_one_radius_cover_one_area() {
        for (shape, name) in SHAPES.iter().enumerate() {
            let o = Object {
                shape,
                colour: 0,
                size: 0,
                radius: 0.2,
                centre: (0.5, 0.5),
                angle: 0.1,
            };
            let n = 500;
            let inside = (0..n * n)
                .filter(|k| {
                    let (u, v) = ((k % n) as f32 + 0.5, (k / n) as f32 + 0.5);
                    sdf(&o, u / n as f32, v / n as f32) < 0.0
                })
                .count() as f32;
            let area = inside / (n * n) as f32;
            let circle = PI * 0.2 * 0.2;
            assert!(
                (area / circle - 1.0).abs() < 0.02,
                "{name}: area {area} against {circle}"
            );
            assert!(extent(shape, 0.2) >= 0.2 * 0.99 && extent(shape, 0.2) < 0.2 * 1.8);
        }
    }
}

//! Multinomial logistic regression with an L2 penalty, fitted by L-BFGS (as the linear probes
//! of the CLIP paper, which used scikit-learn's L-BFGS solver): the linear probe's classifier.
//! The objective is convex; the fit runs until the gradient vanishes or the iterations run out.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// Gradient size (largest component) at which the fit is converged.
const GRAD_TOL: f64 = 1e-5;
/// Iterations at most (scikit-learn's CLIP probes used 1,000; weak L2 on separable data
/// would otherwise grow the weights for ever).
const MAX_ITER: usize = 500;
/// Curvature pairs kept.
const MEMORY: usize = 10;

/// A fitted classifier and how the fit ended.
#[derive(Debug, Clone)]
pub struct Fit {
    /// `[D, C]`.
    pub w: Tensor,
    /// `[C]`.
    pub b: Tensor,
    pub iterations: usize,
    /// Largest gradient component at the end.
    pub grad_max: f64,
    /// Final objective: mean cross-entropy + l2/2 · ‖W‖².
    pub loss: f64,
}

/// The problem: features, their transpose, one-hot labels, penalty.
struct Problem {
    x: Tensor,      // [N, D]
    xt: Tensor,     // [D, N]
    onehot: Tensor, // [N, C]
    n: usize,
    d: usize,
    c: usize,
    l2: f64,
}

impl Problem {
    /// θ = [W row-major (D·C), b (C)] → (objective, gradient).
    fn eval(&self, theta: &[f64]) -> Result<(f64, Vec<f64>)> {
        let dev = self.x.device();
        let dc = self.d * self.c;
        let as_f32: Vec<f32> = theta.iter().map(|&v| v as f32).collect();
        let w = Tensor::from_slice(&as_f32[..dc], (self.d, self.c), dev)?; // [D, C]
        let b = Tensor::from_slice(&as_f32[dc..], self.c, dev)?; // [C]
        let z = self.x.matmul(&w)?.broadcast_add(&b)?; // [N, C]
        let logp = candle_nn::ops::log_softmax(&z, 1)?; // [N, C]
        let nll = -(logp.mul(&self.onehot)?.sum_all()?.to_scalar::<f32>()? as f64) / self.n as f64;
        let penalty: f64 = theta[..dc].iter().map(|v| v * v).sum::<f64>() * self.l2 / 2.0;
        let g = ((logp.exp()? - &self.onehot)? / self.n as f64)?; // [N, C]
        let gw = self.xt.matmul(&g)?.flatten_all()?.to_vec1::<f32>()?; // D·C
        let gb = g.sum(0)?.to_vec1::<f32>()?; // C
        let grad = gw
            .iter()
            .zip(&theta[..dc])
            .map(|(&g, &t)| g as f64 + self.l2 * t)
            .chain(gb.iter().map(|&g| g as f64))
            .collect();
        Ok((nll + penalty, grad))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Fit `x` `[N, D]` → `classes` labels `y` with penalty `l2` (on W, not b).
pub fn fit(x: &Tensor, y: &[usize], classes: usize, l2: f64) -> Result<Fit> {
    let (n, d) = x.dims2()?;
    let x = x.to_dtype(DType::F32)?;
    let mut onehot = vec![0f32; n * classes];
    for (i, &c) in y.iter().enumerate() {
        onehot[i * classes + c] = 1.0;
    }
    let p = Problem {
        xt: x.t()?.contiguous()?,
        onehot: Tensor::from_vec(onehot, (n, classes), x.device())?,
        x,
        n,
        d,
        c: classes,
        l2,
    };
    let mut theta = vec![0f64; d * classes + classes];
    let (mut f, mut g) = p.eval(&theta)?;
    let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> = Default::default();
    let mut iterations = 0;
    while iterations < MAX_ITER && max_abs(&g) > GRAD_TOL {
        iterations += 1;
        // Two-loop recursion: dir = −H·g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, yv, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = match pairs.back() {
            Some((s, yv, _)) => dot(s, yv) / dot(yv, yv),
            None => 1.0 / dot(&g, &g).sqrt().max(1.0),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in pairs.iter().zip(alphas.into_iter().rev()) {
            let bta = rho * dot(yv, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (a - bta) * si);
        }
        let mut dir: Vec<f64> = q.into_iter().map(|v| -v).collect();
        let mut slope = dot(&g, &dir);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            pairs.clear();
            dir = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
        }
        // Backtracking line search (Armijo).
        let mut t = 1.0;
        let (new_theta, new_f, new_g) = loop {
            let cand: Vec<f64> = theta.iter().zip(&dir).map(|(a, d)| a + t * d).collect();
            let (fc, gc) = p.eval(&cand)?;
            if fc <= f + 1e-4 * t * slope {
                break (cand, fc, gc);
            }
            t *= 0.5;
            if t < 1e-12 {
                return finish(&p, theta, iterations, max_abs(&g), f);
            }
        };
        let s: Vec<f64> = new_theta.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = new_g.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            if pairs.len() == MEMORY {
                pairs.pop_front();
            }
            pairs.push_back((s, yv, 1.0 / sy));
        }
        let stalled = (f - new_f).abs() <= 1e-12 * f.abs().max(1.0);
        (theta, f, g) = (new_theta, new_f, new_g);
        if stalled {
            break;
        }
    }
    finish(&p, theta, iterations, max_abs(&g), f)
}

fn finish(
    p: &Problem,
    theta: Vec<f64>,
    iterations: usize,
    grad_max: f64,
    loss: f64,
) -> Result<Fit> {
    let dc = p.d * p.c;
    let as_f32: Vec<f32> = theta.iter().map(|&v| v as f32).collect();
    Ok(Fit {
        w: Tensor::from_slice(&as_f32[..dc], (p.d, p.c), p.x.device())?,
        b: Tensor::from_slice(&as_f32[dc..], p.c, p.x.device())?,
        iterations,
        grad_max,
        loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The gradient the fit follows is the objective's: central differences agree.
    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(
            vec![
                0.5f32, -1.0, 2.0, 0.3, -0.7, 1.1, 0.0, 0.9, -1.5, 0.4, 1.2, -0.2,
            ],
            (4, 3),
            &dev,
        )
        .unwrap();
        let p = Problem {
            xt: x.t().unwrap().contiguous().unwrap(),
            onehot: Tensor::from_vec(
                vec![1f32, 0., 0., 0., 1., 0., 0., 0., 1., 0., 1., 0.],
                (4, 3),
                &dev,
            )
            .unwrap()
            .reshape((4, 3))
            .unwrap(),
            x,
            n: 4,
            d: 3,
            c: 3,
            l2: 0.1,
        };
        let theta: Vec<f64> = (0..12).map(|i| (i as f64 * 0.37).sin() * 0.5).collect();
        let (_, g) = p.eval(&theta).unwrap();
        for i in 0..12 {
            let h = 1e-3;
            let mut a = theta.clone();
            let mut b = theta.clone();
            a[i] += h;
            b[i] -= h;
            let num = (p.eval(&a).unwrap().0 - p.eval(&b).unwrap().0) / (2.0 * h);
            assert!((num - g[i]).abs() < 1e-3, "θ[{i}]: {num} vs {}", g[i]);
        }
    }

    /// With a strong penalty the optimum is interior: the fit reaches a vanishing gradient.
    #[test]
    fn converges_on_a_regularised_problem() {
        let dev = Device::Cpu;
        let n = 200;
        let xs: Vec<f32> = (0..n * 5)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let y: Vec<usize> = (0..n)
            .map(|i| (xs[i * 5] + xs[i * 5 + 1] > 0.0) as usize + (xs[i * 5 + 2] > 0.5) as usize)
            .collect();
        let x = Tensor::from_vec(xs, (n, 5), &dev).unwrap();
        let f = fit(&x, &y, 3, 1e-2).unwrap();
        assert!(f.grad_max < GRAD_TOL, "{f:?}");
        assert!(f.iterations < MAX_ITER);
    }

    /// Against scikit-learn's L-BFGS on the same problem (scripts/logistic_fixture.py): the
    /// same minimum, the same weights. b is compared centred: the unpenalised intercepts are
    /// defined up to a common shift.
    #[test]
    fn matches_scikit_learn() {
        let fx: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/logistic.json")).unwrap();
        let rows = |v: &serde_json::Value| -> Vec<Vec<f64>> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect()
                })
                .collect()
        };
        let x = rows(&fx["x"]);
        let (n, d) = (x.len(), x[0].len());
        let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
        let y: Vec<usize> = fx["y"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let c = fx["classes"].as_u64().unwrap() as usize;
        let l2 = fx["l2"].as_f64().unwrap();
        let f = fit(
            &Tensor::from_vec(flat, (n, d), &Device::Cpu).unwrap(),
            &y,
            c,
            l2,
        )
        .unwrap();
        let want = fx["objective"].as_f64().unwrap();
        assert!(
            (f.loss - want).abs() < 1e-5,
            "objective {} vs scikit-learn {want}",
            f.loss
        );
        let w = f.w.to_vec2::<f32>().unwrap();
        for (i, row) in rows(&fx["w"]).iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert!(
                    (w[i][j] as f64 - v).abs() < 1e-3,
                    "W[{i}][{j}] {} vs {v}",
                    w[i][j]
                );
            }
        }
        let b: Vec<f64> =
            f.b.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
        let want_b: Vec<f64> = fx["b"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let (mb, mw) = (
            b.iter().sum::<f64>() / c as f64,
            want_b.iter().sum::<f64>() / c as f64,
        );
        for (got, want) in b.iter().zip(&want_b) {
            assert!(
                ((got - mb) - (want - mw)).abs() < 1e-3,
                "b {b:?} vs {want_b:?}"
            );
        }
    }
}

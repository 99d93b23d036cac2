//! The built-in dataset: procedurally rendered, captioned scenes (the seed's "cat sitting on
//! sofa" in miniature). One or two coloured shapes placed by a relation ("a red circle to the
//! left of a large blue square"), anti-aliased at any resolution on a noisy background, with
//! several phrasings per caption. Deterministic by (seed, split, index).
//!
//! Size is drawn apart from shape: every shape of a size class covers the same area range (a
//! star is not smaller than a circle), and captions name the size only some of the time, so
//! a class name without a size ("red star") is what a caption usually says.
//!
//! Some (colour, shape) combinations never appear in training: the `heldout` split is made of
//! them, to test compositional zero-shot ("a green triangle" never seen, yet recognised).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::shapes_sdf::{extent, sdf};

mod captions;

pub use captions::TEMPLATES;

pub const SHAPES: [&str; 8] = [
    "circle", "square", "triangle", "star", "cross", "ring", "moon", "heart",
];
pub const COLOURS: [&str; 8] = [
    "red", "green", "blue", "yellow", "purple", "orange", "pink", "cyan",
];
/// Each colour's RGB in [0, 1], in `COLOURS` order.
pub const RGB: [[f32; 3]; 8] = [
    [0.90, 0.12, 0.12],
    [0.15, 0.75, 0.20],
    [0.15, 0.30, 0.95],
    [0.95, 0.90, 0.15],
    [0.60, 0.20, 0.80],
    [1.00, 0.55, 0.05],
    [1.00, 0.55, 0.75],
    [0.20, 0.90, 0.90],
];
pub const SIZES: [&str; 2] = ["small", "large"];
/// Each size class's range of circle-equivalent radius (scene units; the frame is 1 wide):
/// an object of radius r covers π r² whatever its shape.
const RADIUS: [(f32, f32); 2] = [(0.15, 0.2), (0.23, 0.29)];
/// How often a training scene holds two objects rather than one.
const TWO_OBJECTS: f64 = 0.25;
/// How often a caption names its objects' sizes.
const SIZE_NAMED: f64 = 0.35;

/// Which scenes a split holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Any scene whose objects avoid the held-out combinations.
    Train,
    /// Single objects of seen combinations (in-distribution check).
    Test,
    /// Single objects of held-out combinations only.
    Heldout,
}

impl Split {
    fn salt(self) -> u64 {
        match self {
            Split::Train => 0x7261_696e,
            Split::Test => 0x7465_7374,
            Split::Heldout => 0x6865_6c64,
        }
    }
}

/// One object: indices into SHAPES, COLOURS, SIZES, its circle-equivalent radius (within its
/// size class's range) and its centre in [0, 1]².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub shape: usize,
    pub colour: usize,
    pub size: usize,
    pub radius: f32,
    pub centre: (f32, f32),
    pub angle: f32,
}

impl Object {
    /// The (colour, shape) class id in 0..64: colour · 8 + shape.
    pub fn class(&self) -> usize {
        self.colour * SHAPES.len() + self.shape
    }
    /// "red circle", or with its size "small red circle".
    pub fn phrase(&self, size_named: bool) -> String {
        let name = format!("{} {}", COLOURS[self.colour], SHAPES[self.shape]);
        if size_named {
            format!("{} {name}", SIZES[self.size])
        } else {
            name
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    LeftOf,
    Above,
}

/// A scene: one object, or two related by `relation` (first is left of / above the second).
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub relation: Option<Relation>,
    pub background: [f32; 3],
    pub noise_seed: u64,
    /// Which phrasing of the caption to use.
    pub phrasing: usize,
    /// Whether the caption names the objects' sizes.
    pub size_named: bool,
}

/// Class names of the label view: "red circle", …, colour-major (class = colour · 8 + shape).
pub fn class_names() -> Vec<String> {
    COLOURS
        .iter()
        .flat_map(|c| SHAPES.iter().map(move |s| format!("{c} {s}")))
        .collect()
}

/// Is this (colour, shape) combination held out of training? One shape per colour, 8 of 64.
pub fn is_heldout(colour: usize, shape: usize) -> bool {
    shape == (colour * 3 + 1) % SHAPES.len()
}

/// The dataset: scenes by index, rendered at any resolution.
#[derive(Debug, Clone)]
pub struct Shapes {
    pub seed: u64,
    pub split: Split,
}

impl Shapes {
    pub fn new(seed: u64, split: Split) -> Self {
        Self { seed, split }
    }

    fn rng(&self, index: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(
            self.seed
                ^ self.split.salt().wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
        )
    }

    fn draw_object(&self, rng: &mut ChaCha8Rng, region: ((f32, f32), (f32, f32))) -> Object {
        loop {
            let colour = rng.random_range(0..COLOURS.len());
            let shape = rng.random_range(0..SHAPES.len());
            let ok = match self.split {
                Split::Train | Split::Test => !is_heldout(colour, shape),
                Split::Heldout => is_heldout(colour, shape),
            };
            if !ok {
                continue;
            }
            let size = rng.random_range(0..SIZES.len());
            let (lo, hi) = RADIUS[size];
            let radius = rng.random_range(lo..=hi);
            let r = extent(shape, radius);
            let ((x0, x1), (y0, y1)) = region;
            let cx = rng.random_range((x0 + r).min(x1 - r)..=(x1 - r).max(x0 + r));
            let cy = rng.random_range((y0 + r).min(y1 - r)..=(y1 - r).max(y0 + r));
            let angle = rng.random_range(-0.25f32..0.25);
            return Object {
                shape,
                colour,
                size,
                radius,
                centre: (cx, cy),
                angle,
            };
        }
    }

    /// Scene number `index` of this split.
    pub fn scene(&self, index: u64) -> Scene {
        let mut rng = self.rng(index);
        let two = self.split == Split::Train && rng.random_bool(TWO_OBJECTS);
        let (objects, relation) = if two {
            let relation = if rng.random_bool(0.5) {
                Relation::LeftOf
            } else {
                Relation::Above
            };
            let (a_region, b_region) = match relation {
                Relation::LeftOf => (((0.0, 0.5), (0.0, 1.0)), ((0.5, 1.0), (0.0, 1.0))),
                Relation::Above => (((0.0, 1.0), (0.0, 0.5)), ((0.0, 1.0), (0.5, 1.0))),
            };
            let a = self.draw_object(&mut rng, a_region);
            let mut b = self.draw_object(&mut rng, b_region);
            while (b.colour, b.shape) == (a.colour, a.shape) {
                b = self.draw_object(&mut rng, b_region);
            }
            (vec![a, b], Some(relation))
        } else {
            (
                vec![self.draw_object(&mut rng, ((0.0, 1.0), (0.0, 1.0)))],
                None,
            )
        };
        let grey = rng.random_range(0.05f32..0.35);
        let tint = [
            rng.random_range(-0.04f32..0.04),
            rng.random_range(-0.04f32..0.04),
            rng.random_range(-0.04f32..0.04),
        ];
        Scene {
            objects,
            relation,
            background: [grey + tint[0], grey + tint[1], grey + tint[2]],
            noise_seed: rng.random(),
            phrasing: rng.random_range(0..1000),
            size_named: rng.random_bool(SIZE_NAMED),
        }
    }
}

impl Shapes {
    /// Scene `index` of a dataset whose scenes come in groups of `group` consecutive indices
    /// that differ only in their shapes (and in noise and phrasing): same colours, sizes,
    /// places and relation. Hard negatives: within a group, only shape tells the captions apart,
    /// so the contrastive loss cannot be lowered by colour and size alone. `group` 1 (or 0) is
    /// [`Shapes::scene`]. Held-out combinations stay out of the Train split.
    pub fn grouped_scene(&self, index: u64, group: usize) -> Scene {
        if group <= 1 {
            return self.scene(index);
        }
        let (base, j) = (index / group as u64, (index % group as u64) as usize);
        // The group's shared scene, from its own stream (salted so it is not scene(base)).
        let mut scene = self.scene(base ^ 0x6772_6f75_7000_0000);
        // One permutation of the allowed shapes per object, shared by the group.
        let mut grng = self.rng(base.wrapping_add(0x5a5a_0000_0000));
        let allowed = |colour: usize| -> Vec<usize> {
            (0..SHAPES.len())
                .filter(|&s| match self.split {
                    Split::Train | Split::Test => !is_heldout(colour, s),
                    Split::Heldout => is_heldout(colour, s),
                })
                .collect()
        };
        let mut taken: Option<(usize, usize)> = None;
        for o in scene.objects.iter_mut() {
            let mut shapes = allowed(o.colour);
            for k in (1..shapes.len()).rev() {
                shapes.swap(k, grng.random_range(0..=k));
            }
            let mut k = j % shapes.len();
            if taken == Some((o.colour, shapes[k])) {
                k = (k + 1) % shapes.len();
            }
            o.shape = shapes[k];
            taken = Some((o.colour, o.shape));
        }
        let mut rng = self.rng(index);
        scene.noise_seed = rng.random();
        scene.phrasing = rng.random_range(0..1000);
        scene
    }
}

impl Scene {
    /// Render to `[size, size, 3]` RGB floats in [0, 1], row-major (y, x, channel).
    pub fn render(&self, size: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.noise_seed);
        let gx: f32 = rng.random_range(-0.08..0.08);
        let gy: f32 = rng.random_range(-0.08..0.08);
        let noise = rng.random_range(0.01f32..0.05);
        let mut img = vec![0f32; size * size * 3];
        let px = 1.0 / size as f32; // one pixel in scene units
        for y in 0..size {
            for x in 0..size {
                let (u, v) = ((x as f32 + 0.5) * px, (y as f32 + 0.5) * px);
                let shade = gx * (u - 0.5) + gy * (v - 0.5);
                let mut rgb = self
                    .background
                    .map(|b| b + shade + noise * (rng.random::<f32>() - 0.5) * 2.0);
                for o in &self.objects {
                    let d = sdf(o, u, v);
                    // Anti-aliasing: coverage from the signed distance over one pixel.
                    let cover = (0.5 - d / px).clamp(0.0, 1.0);
                    if cover > 0.0 {
                        for c in 0..3 {
                            rgb[c] = rgb[c] * (1.0 - cover) + RGB[o.colour][c] * cover;
                        }
                    }
                }
                let i = (y * size + x) * 3;
                for c in 0..3 {
                    img[i + c] = rgb[c].clamp(0.0, 1.0);
                }
            }
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_by_seed_and_index() {
        let ds = Shapes::new(7, Split::Train);
        assert_eq!(ds.scene(3), ds.scene(3));
        assert_eq!(ds.scene(3).render(16), ds.scene(3).render(16));
        assert_ne!(ds.scene(3), ds.scene(4));
        assert_ne!(Shapes::new(8, Split::Train).scene(3), ds.scene(3));
    }

    #[test]
    fn grouped_scenes_differ_only_in_shape() {
        let ds = Shapes::new(3, Split::Train);
        for g in 0..50u64 {
            let scenes: Vec<Scene> = (0..4).map(|j| ds.grouped_scene(g * 4 + j, 4)).collect();
            for s in &scenes {
                assert_eq!(s.objects.len(), scenes[0].objects.len());
                assert_eq!(s.relation, scenes[0].relation);
                for (o, o0) in s.objects.iter().zip(&scenes[0].objects) {
                    assert_eq!(
                        (o.colour, o.size, o.centre),
                        (o0.colour, o0.size, o0.centre)
                    );
                    assert!(!is_heldout(o.colour, o.shape));
                }
                if let [a, b] = s.objects.as_slice() {
                    assert_ne!((a.colour, a.shape), (b.colour, b.shape));
                }
            }
            // Within a group, every first object has a different shape.
            let mut shapes: Vec<usize> = scenes.iter().map(|s| s.objects[0].shape).collect();
            shapes.sort();
            shapes.dedup();
            assert_eq!(shapes.len(), 4, "group {g}");
        }
        assert_eq!(ds.grouped_scene(5, 1), ds.scene(5));
    }

    #[test]
    fn heldout_combinations_never_appear_in_training() {
        let train = Shapes::new(1, Split::Train);
        let mut two = 0;
        for i in 0..3000 {
            let s = train.scene(i);
            two += (s.objects.len() == 2) as usize;
            for o in &s.objects {
                assert!(!is_heldout(o.colour, o.shape), "scene {i}: {}", s.caption());
            }
        }
        let expected = 3000.0 * TWO_OBJECTS;
        assert!(
            (two as f64 - expected).abs() < 150.0,
            "{two} two-object scenes of 3000"
        );
        let held = Shapes::new(1, Split::Heldout);
        for i in 0..500 {
            let s = held.scene(i);
            assert_eq!(s.objects.len(), 1);
            assert!(is_heldout(s.objects[0].colour, s.objects[0].shape));
        }
        // Every colour and every shape is held out exactly once.
        let held: Vec<(usize, usize)> = (0..8)
            .flat_map(|c| (0..8).map(move |s| (c, s)))
            .filter(|&(c, s)| is_heldout(c, s))
            .collect();
        assert_eq!(held.len(), 8);
        for k in 0..8 {
            assert_eq!(held.iter().filter(|(c, _)| *c == k).count(), 1);
            assert_eq!(held.iter().filter(|(_, s)| *s == k).count(), 1);
        }
    }

    #[test]
    fn captions_name_what_is_drawn() {
        let ds = Shapes::new(2, Split::Train);
        for i in 0..200 {
            let s = ds.scene(i);
            let cap = s.caption();
            for o in &s.objects {
                let phrase = o.phrase(s.size_named);
                assert!(cap.contains(&phrase), "{cap} lacks {phrase}");
            }
        }
    }

    #[test]
    fn bags_of_words_and_swapped_captions() {
        let ds = Shapes::new(4, Split::Train);
        let mut two = 0;
        for i in 0..100 {
            let s = ds.scene(i);
            let (mut a, mut b): (Vec<String>, Vec<String>) = (
                s.caption().split_whitespace().map(String::from).collect(),
                s.bag_of_words()
                    .split_whitespace()
                    .map(String::from)
                    .collect(),
            );
            a.sort();
            b.sort();
            assert_eq!(a, b, "scene {i}");
            match s.swapped_caption(0) {
                None => assert_eq!(s.objects.len(), 1),
                Some((truth, swapped)) => {
                    two += 1;
                    let (x, y) = (s.objects[0].phrase(false), s.objects[1].phrase(false));
                    assert!(truth.find(&x) < truth.find(&y), "{truth}");
                    assert!(swapped.find(&y) < swapped.find(&x), "{swapped}");
                    assert_ne!(truth, swapped);
                }
            }
        }
        assert!(two > 10);
    }

    #[test]
    fn sizes_are_named_sometimes_and_jittered() {
        let ds = Shapes::new(5, Split::Train);
        let scenes: Vec<Scene> = (0..400).map(|i| ds.scene(i)).collect();
        let named = scenes.iter().filter(|s| s.size_named).count();
        assert!(
            named > 80 && named < 220,
            "{named} of 400 captions name sizes"
        );
        for (size, &(lo, hi)) in RADIUS.iter().enumerate() {
            let radii: Vec<f32> = scenes
                .iter()
                .flat_map(|s| s.objects.iter())
                .filter(|o| o.size == size)
                .map(|o| o.radius)
                .collect();
            assert!(radii.iter().all(|r| (lo..=hi).contains(r)));
            let spread = radii.iter().cloned().fold(f32::MIN, f32::max)
                - radii.iter().cloned().fold(f32::MAX, f32::min);
            assert!(spread > 0.8 * (hi - lo), "size {size}: radii barely vary");
        }
    }

    #[test]
    fn objects_are_drawn_in_their_colour() {
        let ds = Shapes::new(3, Split::Test);
        for i in 0..50 {
            let s = ds.scene(i);
            let o = s.objects[0];
            let img = s.render(32);
            let (x, y) = ((o.centre.0 * 32.0) as usize, (o.centre.1 * 32.0) as usize);
            // The centre of every shape but the ring and the moon is inside it.
            if !["ring", "moon"].contains(&SHAPES[o.shape]) {
                let p = &img[(y * 32 + x) * 3..(y * 32 + x) * 3 + 3];
                for c in 0..3 {
                    assert!(
                        (p[c] - RGB[o.colour][c]).abs() < 0.2,
                        "scene {i} {}: pixel {p:?}",
                        s.caption()
                    );
                }
            }
        }
    }
}

//! The text side of the built-in scenes: the one-object phrasings (also the zero-shot
//! templates), a scene's caption in one of several phrasings, its bag-of-words and
//! objects-swapped views, and its label.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Relation, Scene, COLOURS, SHAPES};

/// The phrasings of a one-object caption, `{}` the object ("red circle"); also the zero-shot
/// prompt templates of the built-in scenes, as CLIP's are phrasings of web captions.
pub const TEMPLATES: [&str; 6] = [
    "a {}",
    "a picture of a {}",
    "there is a {}",
    "a {} on a dark background",
    "the {}",
    "one {}",
];

impl Scene {
    /// The caption, in one of several phrasings.
    pub fn caption(&self) -> String {
        let p = self.phrasing;
        let named = self.size_named;
        match (self.objects.as_slice(), self.relation) {
            ([a], _) => TEMPLATES[p % TEMPLATES.len()].replace("{}", &a.phrase(named)),
            ([a, b], Some(Relation::LeftOf)) => {
                let (pa, pb) = (a.phrase(named), b.phrase(named));
                match p % 4 {
                    0 => format!("a {pa} to the left of a {pb}"),
                    1 => format!("a {pb} to the right of a {pa}"),
                    2 => format!("a {pa} left of a {pb}"),
                    _ => format!(
                        "a {pa} and a {pb}, the {} {} on the left",
                        COLOURS[a.colour], SHAPES[a.shape]
                    ),
                }
            }
            ([a, b], _) => {
                let (pa, pb) = (a.phrase(named), b.phrase(named));
                match p % 4 {
                    0 => format!("a {pa} above a {pb}"),
                    1 => format!("a {pb} below a {pa}"),
                    2 => format!("a {pa} on top of a {pb}"),
                    _ => format!(
                        "a {pa} and a {pb}, the {} {} at the bottom",
                        COLOURS[b.colour], SHAPES[b.shape]
                    ),
                }
            }
            _ => unreachable!("scenes hold one or two objects"),
        }
    }

    /// The bag-of-words view: the caption's words in an order shuffled by the scene's own
    /// seed ("circle a red the left of ..."): what a sentence says without its structure.
    pub fn bag_of_words(&self) -> String {
        let caption = self.caption();
        let mut words: Vec<&str> = caption.split_whitespace().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.noise_seed ^ 0x626f_7773);
        for k in (1..words.len()).rev() {
            words.swap(k, rng.random_range(0..=k));
        }
        words.join(" ")
    }

    /// The same scene with its two objects' places swapped in the caption (a red circle left
    /// of a blue square → a blue square left of a red circle), in phrasing `phrasing`, sizes
    /// unnamed; `None` for a one-object scene.
    pub fn swapped_caption(&self, phrasing: usize) -> Option<(String, String)> {
        let [a, b] = self.objects.as_slice() else {
            return None;
        };
        let canonical = Scene {
            phrasing,
            size_named: false,
            ..self.clone()
        };
        let swapped = Scene {
            objects: vec![*b, *a],
            ..canonical.clone()
        };
        Some((canonical.caption(), swapped.caption()))
    }

    /// The label view: the class id of the first object (colour · 8 + shape).
    pub fn label(&self) -> usize {
        self.objects[0].class()
    }
}

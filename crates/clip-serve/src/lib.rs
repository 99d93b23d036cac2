//! `clipforge serve`: a web page and a JSON API over an image index. Search by text or by an
//! uploaded image, label the results zero-shot, open an image and its nearest neighbours.
//!
//! Requests name images by id only; the only files served are the index's own (its
//! thumbnails, the indexed images by the path the index holds) and the page compiled into the
//! binary, so no part of a request ever becomes a path. Uploads have a size limit (413),
//! content types are checked (415), work on the model runs a few requests at a time, and every
//! error is a JSON object with a 4xx status.

mod api;
mod errors;

pub use api::{router, AppState, Limits};

//! Ringway's load generator and benchmark origin, thread-per-core like the engine: each runs its
//! own pinned glommio executors and moves every socket byte through the transport seam
//! (`ringway_protocols::l4`). The `ringway` binary's `load` and `origin` subcommands are thin
//! wrappers over [`load::run`] and [`origin::start`].

mod fnv;
mod framing;
pub mod load;
pub mod origin;
mod runtime;

pub use fnv::fnv1a64;

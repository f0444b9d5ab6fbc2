//! Ringway's wire protocols: the owned-buffer transport seam (`l4`) and the sans-IO, strict
//! HTTP/1.1 codec (`http::v1`). Nothing here knows about the engine, its phases or its config.

pub mod http;
pub mod l4;
pub mod rt;

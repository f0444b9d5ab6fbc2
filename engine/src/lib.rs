//! Ringway: a thread-per-core, io_uring HTTP proxy engine (being written).

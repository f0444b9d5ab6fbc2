//! The completion-based io_uring backend (being written).

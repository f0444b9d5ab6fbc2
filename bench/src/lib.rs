//! Ringway's load generator and benchmark origin (being written).

//! Ringway's side-by-side comparisons and micro-benchmarks.

//! Shared helpers for Ringway's end-to-end suites over real loopback sockets.

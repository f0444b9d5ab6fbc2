//! HTTP codecs. Only HTTP/1.1 today, in [`v1`]: sans-IO, so it knows nothing of sockets.

pub mod v1;

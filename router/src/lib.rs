//! The Weft host daemon as a library: the `weft` binary is a thin CLI over these modules.

pub mod lab;

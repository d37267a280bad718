//! Weft control plane (stub).

//! The weft daemon library (stub).

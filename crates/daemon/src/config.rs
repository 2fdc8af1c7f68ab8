//! Configuration loading (being written).

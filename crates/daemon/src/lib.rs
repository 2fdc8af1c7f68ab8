//! The Herald daemon (`herald serve`) and the dispatcher it shares with in-process mode.
//!
//! (Being written: see ARCHITECTURE.md.)

pub mod builtins;
pub mod config;

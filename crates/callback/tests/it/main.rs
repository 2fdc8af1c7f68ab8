//! Integration tests of herald-callback: a simulated training loop ([`sim::Sim`], a scripted [`Step`] with no
//! framework) driven by the real `fit`, checking the firing order, the flag rules, errors, the recorder and
//! table, schedules, the stock callbacks, the event emitter and the stop handle.

mod callbacks;
mod emitter;
mod errors;
mod flags;
mod order;
mod recorder;
mod schedule;
mod sim;

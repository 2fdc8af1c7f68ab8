//! herald-tch's integration tests: real libtorch training on small data, one module per topic.

mod failures;
mod schedule;
mod support;
mod training;

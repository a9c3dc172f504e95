//! Workspace-level tests for kubecert.
//!
//! `tests/workspace.rs` checks the rules every crate must keep (crate docs, workspace lints, one
//! crypto provider, the README's quick start). End-to-end tests of the built `signer` and
//! `node-agent` binaries join it as those binaries land. This library holds what those tests
//! share.

use std::path::{Path, PathBuf};

/// The workspace root (the directory of the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

//! Rules the whole workspace keeps; a crate that breaks one fails here, with its name.

use std::fs;
use std::path::{Path, PathBuf};

use kubecert_tests::workspace_root;

/// Every package directory under `crates/` and `bins/`, and `examples/`.
fn packages() -> Vec<PathBuf> {
    let mut dirs = vec![workspace_root().join("examples")];
    for group in ["crates", "bins"] {
        let Ok(entries) = fs::read_dir(workspace_root().join(group)) else { continue };
        for entry in entries.flatten() {
            if entry.path().join("Cargo.toml").is_file() {
                dirs.push(entry.path());
            }
        }
    }
    dirs.sort();
    dirs
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_crate_inherits_the_workspace_lints_and_is_named_kubecert() {
    let packages = packages();
    assert!(packages.iter().any(|p| p.ends_with("crates/csr")), "found {packages:?}");
    assert!(packages.iter().all(|p| p.join("Cargo.toml").is_file()), "found {packages:?}");
    for dir in packages {
        let manifest = read(&dir.join("Cargo.toml"));
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{}: no `[lints] workspace = true`",
            dir.display()
        );
        assert!(manifest.contains("\ndescription = "), "{}: no description", dir.display());
        let is_bin = dir.parent().is_some_and(|p| p.ends_with("bins"));
        let name_ok = if is_bin {
            manifest.contains("name = \"node-agent\"") || manifest.contains("name = \"signer\"")
        } else {
            manifest.contains("name = \"kubecert-")
        };
        assert!(name_ok, "{}: package name breaks the naming rule", dir.display());
    }
}

#[test]
fn every_crate_root_starts_with_a_crate_doc() {
    for dir in packages() {
        let root = ["src/lib.rs", "src/main.rs"].iter().map(|f| dir.join(f)).find(|p| p.is_file());
        let root = root.unwrap_or_else(|| panic!("{}: no src/lib.rs or src/main.rs", dir.display()));
        let text = read(&root);
        let doc_lines = text.lines().take_while(|l| l.starts_with("//!")).count();
        assert!(doc_lines >= 2, "{}: the crate doc should say what the crate owns", root.display());
    }
}

#[test]
fn one_crypto_provider_and_no_unmaintained_pem_crate() {
    let deny = read(&workspace_root().join("deny.toml"));
    for banned in ["ring", "openssl-sys", "rustls-pemfile"] {
        assert!(deny.contains(&format!("{{ name = \"{banned}\" }}")), "deny.toml must ban {banned}");
    }
    let manifest = read(&workspace_root().join("Cargo.toml"));
    for line in manifest.lines().filter(|l| l.starts_with("rustls =") || l.starts_with("tokio-rustls =")) {
        assert!(line.contains("default-features = false"), "{line}: must not pull the default provider");
    }
}

#[test]
fn readme_quick_start_is_the_two_commands() {
    let readme = read(&workspace_root().join("README.md"));
    let start = readme.find("## Quick start").expect("README has a Quick start section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let commands: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands, ["cargo xtask e2e", "cargo test --workspace"]);
    let ci = read(&workspace_root().join(".ci/run"));
    assert!(ci.contains("cargo test --workspace"), ".ci/run must call the README's test command");
}

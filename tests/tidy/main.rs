//! The tidy test: it reads every `Cargo.toml` and the Rust sources of the tree and fails when one of
//! ARCHITECTURE.md's invariants about the code's shape is broken, with a message naming the file and what to
//! do (rust-analyzer's `xtask/src/tidy.rs` is the model).
//!
//! One `#[test]` per rule, so a failure names the rule: plugins and the plugin host never depend on the daemon;
//! only herald-train links libtorch; the SDK and the event vocabulary pull in no HTTP client and no async
//! runtime; the `use crate::` edges between a crate's modules form no cycle; every `.rs` file starts with its
//! `//!` paragraph.
//! Each check is a function over text already read ([`manifests`], [`cycles`], [`docs`]) with unit tests on
//! small in-memory examples that show it failing; [`tree`] reads the files. It checks only what it reads: it
//! does not build anything, resolve `cargo metadata`, or follow `#[path]` attributes.

mod cycles;
mod docs;
mod manifests;
mod tree;

use manifests::Manifest;

/// Fails with every problem, one per line, under a heading that says which rule they break.
fn fail_on(rule: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{rule} ({} found):\n- {}\n", problems.len(), problems.join("\n- "));
}

/// Every manifest of the tree, parsed against the root's `[workspace.dependencies]`; an unreadable one fails
/// the test that asked.
fn all_manifests() -> Vec<Manifest> {
    let root = tree::root();
    let workspace = manifests::workspace_deps(&tree::read(&root.join("Cargo.toml")))
        .unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for path in tree::manifests(&root) {
        let rel = tree::relative(&root, &path);
        match Manifest::parse(&rel, &tree::read(&path), &workspace) {
            Ok(m) => out.push(m),
            Err(e) => problems.push(e),
        }
    }
    fail_on("manifests that cannot be read", problems);
    assert!(
        out.iter().any(|m| m.package.as_deref() == Some("herald-plugin")),
        "found no herald-plugin manifest"
    );
    out
}

#[test]
fn plugins_never_depend_on_the_daemon() {
    let problems = all_manifests().iter().flat_map(manifests::plugin_depends_on_daemon).collect();
    fail_on("plugins and the plugin host never depend on the daemon", problems);
}

#[test]
fn only_herald_train_links_libtorch() {
    let problems = all_manifests().iter().flat_map(manifests::links_libtorch).collect();
    fail_on("only herald-train links libtorch", problems);
}

#[test]
fn sdk_and_event_have_no_http_client_or_runtime() {
    let problems = all_manifests().iter().flat_map(manifests::sdk_pulls_in_io).collect();
    fail_on("herald-plugin and herald-event have no HTTP client and no async runtime", problems);
}

#[test]
fn no_module_cycles() {
    let root = tree::root();
    let mut problems = Vec::new();
    let mut crates = 0;
    for manifest in tree::manifests(&root) {
        let dir = manifest.parent().expect("a manifest path has a folder");
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        crates += 1;
        let files: Vec<cycles::Source> = tree::rust_files(&src)
            .into_iter()
            .map(|p| cycles::Source { rel: tree::relative(&src, &p), text: tree::read(&p) })
            .collect();
        problems.extend(cycles::cycles(&tree::relative(&root, dir), &files));
    }
    assert!(crates > 10, "found only {crates} crates with a src/ folder under {}", root.display());
    fail_on("the `use crate::` edges between a crate's modules form no cycle", problems);
}

#[test]
fn every_rust_file_has_a_doc_head() {
    let root = tree::root();
    let mut problems = Vec::new();
    let mut files = 0;
    for dir in docs::CHECKED_DIRS {
        for path in tree::rust_files(&root.join(dir)) {
            files += 1;
            problems.extend(docs::doc_head_problem(&tree::relative(&root, &path), &tree::read(&path)));
        }
    }
    assert!(files > 50, "found only {files} .rs files under {:?}", docs::CHECKED_DIRS);
    fail_on("every .rs file starts with a `//!` paragraph", problems);
}

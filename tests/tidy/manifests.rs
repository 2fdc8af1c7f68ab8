//! The dependency rules, read from `Cargo.toml` text: plugins never depend on the daemon, only herald-train
//! links libtorch, and herald-plugin and herald-event pull in no HTTP client and no async runtime.
//!
//! A [`Manifest`] lists each dependency with its table (`[dependencies]`, `[dev-dependencies]`,
//! `[build-dependencies]`, and their `[target.*]` forms), the package it names (a `package = ...` rename is
//! followed) and its features, those of `[workspace.dependencies]` included when it says `workspace = true`.
//! It does not resolve transitive dependencies or optional features; `cargo tree` would, at the cost of a
//! resolver run.

use std::collections::{BTreeMap, BTreeSet};

use toml::{Table, Value};

/// Where the rules come from, for the messages.
const SEE: &str = "see ARCHITECTURE.md, Invariants";

/// The tokio features that bring in its runtime.
const TOKIO_RUNTIME: &[&str] = &["rt", "rt-multi-thread", "full"];

/// The kind of a dependency table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Dev,
    Build,
}

/// One dependency as a manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// The table it is in, as written (`dependencies`, `target.'cfg(unix)'.dev-dependencies`).
    pub table: String,
    pub kind: Kind,
    /// The key in the table.
    pub key: String,
    /// The package it names: `package = ...` if given, else the key.
    pub package: String,
    /// Its features, the workspace entry's included.
    pub features: BTreeSet<String>,
}

/// What the rules need of one `Cargo.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The path relative to the workspace root, with `/` (`plugins/ntfy/Cargo.toml`).
    pub path: String,
    /// `[package] name`; None for the virtual root manifest.
    pub package: Option<String>,
    pub deps: Vec<Dep>,
}

/// A `[workspace.dependencies]` entry: the package it names and its features.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceDep {
    package: Option<String>,
    features: BTreeSet<String>,
}

/// The root manifest's `[workspace.dependencies]`, by key.
pub fn workspace_deps(root_manifest: &str) -> Result<BTreeMap<String, WorkspaceDep>, String> {
    let table: Table = root_manifest.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let mut out = BTreeMap::new();
    let deps = table.get("workspace").and_then(|w| w.get("dependencies")).and_then(Value::as_table);
    for (key, spec) in deps.into_iter().flatten() {
        out.insert(
            key.clone(),
            WorkspaceDep {
                package: spec.get("package").and_then(Value::as_str).map(str::to_owned),
                features: features(spec),
            },
        );
    }
    Ok(out)
}

fn features(spec: &Value) -> BTreeSet<String> {
    let list = spec.get("features").and_then(Value::as_array);
    list.into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

impl Manifest {
    /// Reads `text`, the manifest at `path`, against the workspace's dependencies.
    pub fn parse(
        path: &str,
        text: &str,
        workspace: &BTreeMap<String, WorkspaceDep>,
    ) -> Result<Manifest, String> {
        let table: Table = text.parse().map_err(|e| format!("{path}: not valid TOML: {e}"))?;
        let package = table.get("package").and_then(|p| p.get("name")).and_then(Value::as_str);
        let mut deps = Vec::new();
        let mut read_tables = |prefix: &str, t: &Table| {
            for (name, kind) in [
                ("dependencies", Kind::Normal),
                ("dev-dependencies", Kind::Dev),
                ("build-dependencies", Kind::Build),
            ] {
                let Some(entries) = t.get(name).and_then(Value::as_table) else {
                    continue;
                };
                for (key, spec) in entries {
                    let inherited = if spec.get("workspace").and_then(Value::as_bool) == Some(true) {
                        workspace.get(key).cloned().unwrap_or_default()
                    } else {
                        WorkspaceDep::default()
                    };
                    let package = spec
                        .get("package")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or(inherited.package)
                        .unwrap_or_else(|| key.clone());
                    let mut features = features(spec);
                    features.extend(inherited.features);
                    deps.push(Dep {
                        table: format!("{prefix}{name}"),
                        kind,
                        key: key.clone(),
                        package,
                        features,
                    });
                }
            }
        };
        read_tables("", &table);
        if let Some(targets) = table.get("target").and_then(Value::as_table) {
            for (cfg, t) in targets {
                if let Some(t) = t.as_table() {
                    read_tables(&format!("target.'{cfg}'."), t);
                }
            }
        }
        Ok(Manifest { path: path.to_owned(), package: package.map(str::to_owned), deps })
    }

    /// "a plugin" for `plugins/*`, "the plugin host" for herald-plugin-host: what must not depend on the daemon.
    fn plugin_role(&self) -> Option<&'static str> {
        let parts: Vec<&str> = self.path.split('/').collect();
        if matches!(parts.as_slice(), ["plugins", _, "Cargo.toml"]) {
            Some("a plugin")
        } else if self.package.as_deref() == Some("herald-plugin-host") {
            Some("the plugin host")
        } else {
            None
        }
    }

    fn name(&self) -> &str {
        self.package.as_deref().unwrap_or("the workspace")
    }

    fn problem(&self, dep: &Dep, what: &str, fix: &str) -> String {
        format!("{}: [{}] {}: {} {what}; {fix} ({SEE})", self.path, dep.table, dep.key, self.name())
    }
}

/// A plugin (`plugins/*`) or the plugin host (herald-plugin-host) that depends on herald-daemon, in any table.
pub fn plugin_depends_on_daemon(m: &Manifest) -> Vec<String> {
    let Some(role) = m.plugin_role() else {
        return Vec::new();
    };
    m.deps
        .iter()
        .filter(|d| d.package == "herald-daemon")
        .map(|d| {
            m.problem(
                d,
                &format!("is {role} and depends on the daemon"),
                "depend on herald-plugin (the SDK), and herald-http for HTTP, instead; move what you need from \
                 the daemon into the SDK",
            )
        })
        .collect()
}

/// A crate other than herald-tch and herald-train that depends on `tch`, or one other than herald-train that
/// depends on herald-tch (which links libtorch), in any table.
pub fn links_libtorch(m: &Manifest) -> Vec<String> {
    let name = m.package.as_deref();
    let allowed = |package: &str| match package {
        "tch" => matches!(name, Some("herald-tch" | "herald-train")),
        "herald-tch" => name == Some("herald-train"),
        _ => true,
    };
    m.deps
        .iter()
        .filter(|d| !allowed(&d.package))
        .map(|d| {
            m.problem(
                d,
                "links libtorch",
                "only herald-train links libtorch (so `herald serve` stays small); take what you need from \
                 herald-callback or herald-plot, which do not depend on tch",
            )
        })
        .collect()
}

/// herald-plugin or herald-event depending on reqwest, or on tokio with its runtime (`rt`, `rt-multi-thread`,
/// `full`), outside `[dev-dependencies]`: tests may run a runtime, the library does not.
pub fn sdk_pulls_in_io(m: &Manifest) -> Vec<String> {
    if !matches!(m.package.as_deref(), Some("herald-plugin" | "herald-event")) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for d in m.deps.iter().filter(|d| d.kind != Kind::Dev) {
        if d.package == "reqwest" {
            out.push(m.problem(
                d,
                "depends on reqwest",
                "HTTP belongs in herald-http, which the HTTP notifiers depend on",
            ));
        }
        let runtime: Vec<&str> = TOKIO_RUNTIME.iter().copied().filter(|f| d.features.contains(*f)).collect();
        if d.package == "tokio" && !runtime.is_empty() {
            out.push(m.problem(
                d,
                &format!("depends on tokio's runtime (features {})", runtime.join(", ")),
                "keep the SDK free of a runtime (`sync`, `time`, `io-util` are fine): move the code that builds \
                 one to the host or the plugin binary, or into [dev-dependencies] if only tests need it",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = r#"
        [workspace]
        members = ["crates/*", "plugins/*"]
        [workspace.dependencies]
        herald-daemon = { path = "crates/daemon" }
        daemon-renamed = { path = "crates/daemon", package = "herald-daemon" }
        tokio = { version = "1", features = ["sync"] }
        tokio-rt = { version = "1", package = "tokio", features = ["rt"] }
        tch = "0.26"
    "#;

    fn manifest(path: &str, text: &str) -> Manifest {
        let ws = workspace_deps(WORKSPACE).expect("the example workspace parses");
        Manifest::parse(path, text, &ws).expect("the example manifest parses")
    }

    #[test]
    fn a_plugin_that_depends_on_the_daemon_fails() {
        let m = manifest(
            "plugins/foo/Cargo.toml",
            r#"
            [package]
            name = "herald-foo"
            [dependencies]
            herald-plugin = { path = "../../crates/plugin" }
            [target.'cfg(unix)'.dev-dependencies]
            daemon-renamed.workspace = true
            "#,
        );
        let problems = plugin_depends_on_daemon(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "plugins/foo/Cargo.toml: [target.'cfg(unix)'.dev-dependencies] daemon-renamed: herald-foo is a \
                 plugin and depends on the daemon; depend on herald-plugin"
            ),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_crate_outside_plugins_may_depend_on_the_daemon() {
        let m = manifest(
            "crates/herald/Cargo.toml",
            "[package]\nname = \"herald\"\n[dependencies]\nherald-daemon.workspace = true\n",
        );
        assert_eq!(plugin_depends_on_daemon(&m), Vec::<String>::new());
    }

    #[test]
    fn the_plugin_host_that_depends_on_the_daemon_fails() {
        let m = manifest(
            "crates/plugin-host/Cargo.toml",
            "[package]\nname = \"herald-plugin-host\"\n[dependencies]\nherald-daemon.workspace = true\n",
        );
        let problems = plugin_depends_on_daemon(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("herald-plugin-host is the plugin host and depends on the daemon"));
    }

    #[test]
    fn only_herald_tch_and_herald_train_may_depend_on_tch() {
        let text =
            |name: &str| format!("[package]\nname = \"{name}\"\n[dev-dependencies]\ntch.workspace = true\n");
        for (name, bad) in [("herald-plot", true), ("herald-tch", false), ("herald-train", false)] {
            let problems = links_libtorch(&manifest("crates/x/Cargo.toml", &text(name)));
            assert_eq!(problems.len(), usize::from(bad), "{name}: {problems:?}");
        }
        let uses_herald_tch = manifest(
            "crates/herald/Cargo.toml",
            "[package]\nname = \"herald\"\n[dependencies]\nherald-tch = { path = \"../tch\" }\n",
        );
        let problems = links_libtorch(&uses_herald_tch);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("[dependencies] herald-tch: herald links libtorch"), "{}", problems[0]);
    }

    #[test]
    fn the_sdk_with_reqwest_or_a_tokio_runtime_fails() {
        let m = manifest(
            "crates/plugin/Cargo.toml",
            r#"
            [package]
            name = "herald-plugin"
            [dependencies]
            tokio = { workspace = true, features = ["time", "rt-multi-thread"] }
            reqwest = "0.12"
            [build-dependencies]
            tokio-rt.workspace = true
            [dev-dependencies]
            tokio = { version = "1", features = ["full"] }
            "#,
        );
        let problems = sdk_pulls_in_io(&m);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains(
            "[dependencies] tokio: herald-plugin depends on tokio's runtime (features rt-multi-thread)"
        )));
        assert!(
            problems.iter().any(|p| p.contains("[dependencies] reqwest: herald-plugin depends on reqwest"))
        );
        // The renamed workspace entry carries `rt` from [workspace.dependencies].
        assert!(problems.iter().any(|p| p.contains(
            "[build-dependencies] tokio-rt: herald-plugin depends on tokio's runtime (features rt)"
        )));
    }

    #[test]
    fn the_event_crate_with_tokio_sync_only_passes() {
        let m = manifest(
            "crates/event/Cargo.toml",
            "[package]\nname = \"herald-event\"\n[dependencies]\ntokio.workspace = true\n\
             [dev-dependencies]\ntokio = { workspace = true, features = [\"rt\"] }\n",
        );
        assert_eq!(sdk_pulls_in_io(&m), Vec::<String>::new());
    }

    #[test]
    fn a_manifest_that_is_not_toml_names_its_path() {
        let ws = workspace_deps(WORKSPACE).expect("the example workspace parses");
        let err = Manifest::parse("plugins/bad/Cargo.toml", "[package", &ws).expect_err("not TOML");
        assert!(err.starts_with("plugins/bad/Cargo.toml: not valid TOML"), "{err}");
    }
}

//! Module cycles: within one crate, the `crate::` paths each module's files name must form no cycle between
//! modules, so every dependency points one way and shared state sits in a module that imports nothing else.
//!
//! The rules are those of `shared/tools/modcycles.py`: a module is `src/<m>.rs` or a folder `src/<m>/`;
//! `lib.rs`, `main.rs` and `src/bin/` are the root and do not count; a file depends on module `a` when,
//! outside `//` comments, it names `crate::a` (`use crate::a::X`, a path `crate::a::f()`) or lists `a` at the
//! top level of a group `crate::{a, b::C}`. Items the root re-exports (`crate::Handle`) and `super::` paths are
//! not followed, as in the Python tool.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One `.rs` file of a crate: its path under `src/` (`/` separators) and its text.
pub struct Source {
    pub rel: String,
    pub text: String,
}

/// The top-level module a file under `src/` belongs to; None for the crate root and `src/bin/`.
pub fn module_of(rel: &str) -> Option<String> {
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["lib.rs" | "main.rs"] | ["bin", ..] | [] => None,
        [file] => file.strip_suffix(".rs").map(str::to_owned),
        [dir, ..] => Some((*dir).to_owned()),
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`, if any.
fn ident(s: &str) -> Option<&str> {
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The names `text` reaches through `crate::`, each with the 1-based line it appears on.
pub fn references(text: &str) -> Vec<(String, usize)> {
    // Drop `//` comments (doc comments included) and keep the line breaks, so offsets still give lines.
    let code: String =
        text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n");
    let line_at = |offset: usize| code[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `my_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(name) = ident(rest) {
            out.push((name.to_owned(), line_at(at)));
        } else if rest.starts_with('{') {
            // The first identifier of each item at the group's top level: `{a::{b, c}, d}` gives a and d.
            let start = at + "crate::".len();
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 1 => {
                        item_start = false;
                        if let Some(name) = ident(&rest[i..]) {
                            out.push((name.to_owned(), line_at(start + i)));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// Where module `from` first names module `to`: file and line.
type Edges = BTreeMap<String, BTreeMap<String, (String, usize)>>;

fn edges(files: &[Source]) -> Edges {
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&f.rel)).collect();
    let mut graph: Edges = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for file in files {
        let Some(from) = module_of(&file.rel) else { continue };
        for (to, line) in references(&file.text) {
            if to != from && modules.contains(&to) {
                let out = graph.entry(from.clone()).or_default();
                let here = (file.rel.clone(), line);
                let first = out.entry(to).or_insert_with(|| here.clone());
                if here < *first {
                    *first = here;
                }
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn components(graph: &Edges) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Edges,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited above");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited above");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// A shortest cycle through the first module of `comp`, staying inside `comp`: the modules in order, the first
/// repeated at the end.
fn one_cycle(graph: &Edges, comp: &[String]) -> Vec<String> {
    let start = &comp[0];
    let inside: BTreeSet<&String> = comp.iter().collect();
    let mut parent: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().filter(|w| inside.contains(w)) {
            if w == start {
                let mut path = vec![start.clone(), v.clone()];
                let mut at = v;
                while let Some(p) = parent.get(at) {
                    path.push((*p).clone());
                    at = p;
                }
                path.reverse();
                return path;
            }
            if !parent.contains_key(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component of two or more modules has a cycle through each of them")
}

/// One message per cycle among the modules of the crate in `crate_dir` (`crates/daemon`), naming the modules,
/// one cycle with the file and line of each step, and what to do.
pub fn cycles(crate_dir: &str, files: &[Source]) -> Vec<String> {
    let graph = edges(files);
    components(&graph)
        .iter()
        .map(|comp| {
            let cycle = one_cycle(&graph, comp);
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| {
                    let (file, line) = &graph[&w[0]][&w[1]];
                    format!("{} -> {} ({crate_dir}/src/{file}:{line})", w[0], w[1])
                })
                .collect();
            format!(
                "{crate_dir}: modules in a cycle: {}; for example {}; make the edges one-way: move what they \
                 share into a module that imports none of them, or let one side stop naming the other",
                comp.join(", "),
                steps.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(rel: &str, text: &str) -> Source {
        Source { rel: rel.to_owned(), text: text.to_owned() }
    }

    #[test]
    fn modules_are_top_level_files_and_folders() {
        for (rel, module) in [
            ("lib.rs", None),
            ("main.rs", None),
            ("bin/tool.rs", None),
            ("worker.rs", Some("worker")),
            ("exec/conformance.rs", Some("exec")),
            ("exec/mod.rs", Some("exec")),
        ] {
            assert_eq!(module_of(rel).as_deref(), module, "{rel}");
        }
    }

    #[test]
    fn references_read_paths_and_groups_but_not_comments() {
        let text = "//! See [`crate::docs_only`].\n\
                    use crate::a::{X, Y};\n\
                    use crate::{b, c::{d, e}, f::G};\n\
                    fn g() { crate::h::run(); my_crate::i::j(); } // crate::k\n\
                    use crate::{\n    l,\n    m::N,\n};\n";
        let found = references(text);
        let got: Vec<(&str, usize)> = found.iter().map(|(n, l)| (n.as_str(), *l)).collect();
        assert_eq!(got, [("a", 2), ("b", 3), ("c", 3), ("f", 3), ("h", 4), ("l", 6), ("m", 7)]);
    }

    #[test]
    fn two_modules_that_import_each_other_fail_with_file_and_line() {
        let files = [
            src("lib.rs", "mod callback;\nmod recorder;\nmod state;\n"),
            src(
                "callback.rs",
                "//! The trait.\n\nuse crate::recorder::Recorder;\nuse crate::state::State;\n",
            ),
            src("recorder.rs", "//! The recorder.\nuse crate::{callback::Callback, state};\n"),
            src("state.rs", "//! Shared state, importing nothing.\n"),
        ];
        let problems = cycles("crates/callback", &files);
        assert_eq!(
            problems,
            ["crates/callback: modules in a cycle: callback, recorder; for example callback -> recorder \
                 (crates/callback/src/callback.rs:3), recorder -> callback (crates/callback/src/recorder.rs:2); \
                 make the edges one-way: move what they share into a module that imports none of them, or let \
                 one side stop naming the other"]
        );
    }

    #[test]
    fn a_longer_cycle_through_a_folder_module_is_found_and_one_way_edges_pass() {
        let files = [
            src("dispatcher.rs", "use crate::worker::Worker;\nuse crate::shared::Shared;\n"),
            src("worker.rs", "use crate::shared::Shared;\nfn f() { crate::host::loss_plot(); }\n"),
            src("host/mod.rs", "mod plot;\n"),
            src("host/plot.rs", "use crate::dispatcher::Handle;\n"),
            src("shared.rs", "//! Imports nothing of its crate.\n"),
        ];
        let problems = cycles("crates/daemon", &files);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0]
                .starts_with("crates/daemon: modules in a cycle: dispatcher, host, worker; for example")
        );
        assert!(
            problems[0].contains("host -> dispatcher (crates/daemon/src/host/plot.rs:1)"),
            "{}",
            problems[0]
        );

        let one_way = [
            src("dispatcher.rs", "use crate::worker::Worker;\nuse crate::shared::Shared;\n"),
            src("worker.rs", "use crate::{shared::Shared, host};\n"),
            src("host.rs", "use crate::shared::Shared;\n"),
            src("shared.rs", "//! Imports nothing of its crate.\n"),
        ];
        assert_eq!(cycles("crates/daemon", &one_way), Vec::<String>::new());
    }
}

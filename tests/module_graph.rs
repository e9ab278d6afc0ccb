//! The module graph read from the source: imports point down the layers, so no two modules (at
//! the top level, or inside one folder) import each other, directly or around a circle.
//!
//! A module is a file under `src/` (`src/a/b.rs` is `a::b`), folded to its first one or two path
//! segments. An edge A -> B is a `crate::B…` path (or a `super::`/`self::` path that resolves to
//! B) in A, outside `#[cfg(test)]` modules and comment lines. A cycle fails the test and names
//! its modules and the edges inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn the_top_level_modules_import_each_other_in_no_cycle() {
    assert_no_cycle(1);
}

#[test]
fn the_modules_inside_each_folder_import_each_other_in_no_cycle() {
    assert_no_cycle(2);
}

fn assert_no_cycle(depth: usize) {
    let graph = module_graph(depth);
    assert!(
        graph.len() > 10,
        "the module graph was read from src/ ({} modules)",
        graph.len()
    );
    let cycles: Vec<String> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m]
                        .iter()
                        .filter(|t| c.contains(*t))
                        .map(String::as_str)
                        .collect();
                    format!("  {m} -> {}", inside.join(", "))
                })
                .collect();
            format!("cycle of {} modules:\n{}", c.len(), edges.join("\n"))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "imports must point down the layers (depth {depth}):\n{}",
        cycles.join("\n")
    );
}

fn module_graph(depth: usize) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files: Vec<(Vec<String>, PathBuf)> = rust_files(&src)
        .into_iter()
        .map(|f| (module_path(&src, &f), f))
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (path, file) in &files {
        let from = fold(path, depth);
        let text = fs::read_to_string(file).expect("a source file is readable");
        let targets = graph.entry(from.clone()).or_default();
        for target in imports(&strip_tests_and_comments(&text), path) {
            // The module a path names is its longest prefix that is a file; the rest is an item.
            let Some(module) = (1..=target.len())
                .rev()
                .map(|n| &target[..n])
                .find(|prefix| modules.contains(*prefix))
            else {
                continue;
            };
            let to = fold(module, depth);
            if !to.is_empty() && to != from {
                targets.insert(to);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are `["a", "b"]`; `lib.rs` and `main.rs` are the crate.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file
        .strip_prefix(src)
        .expect("under src/")
        .with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn fold(path: &[String], depth: usize) -> String {
    path.iter()
        .take(depth)
        .cloned()
        .collect::<Vec<_>>()
        .join("::")
}

/// Every module path named by `crate::…`, `super::…` or `self::…`, with `{a, b::c}` groups
/// expanded one level.
fn imports(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (start, prefix) in ["crate::", "super::", "self::"]
        .iter()
        .flat_map(|p| text.match_indices(p).map(move |(i, _)| (i, *p)))
    {
        let before = text[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let base: Vec<String> = match prefix {
            "crate::" => Vec::new(),
            "super::" => module[..module.len().saturating_sub(1)].to_vec(),
            _ => module.to_vec(),
        };
        let rest = &text[start + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let mut path = base.clone();
                path.extend(segments(item.trim()));
                found.push(path);
            }
        } else {
            let mut path = base;
            path.extend(segments(rest));
            found.push(path);
        }
    }
    found
}

/// The leading `a::b::c` of `rest`, as segments.
fn segments(rest: &str) -> Vec<String> {
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Drops `#[cfg(test)] mod … { … }` blocks (by brace counting) and comment lines.
fn strip_tests_and_comments(text: &str) -> String {
    let mut kept = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_module = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        match (is_module, after.find('{')) {
            (true, Some(open)) if !after[..open].contains(';') => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    kept.push_str(rest);
    kept.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Strongly connected components (Tarjan).
fn components(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            s.found.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

//! The layering that docs/architecture.md describes, checked on the source text: no import
//! circle among the library's modules, and a core with no Lua in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The first-level module a source file belongs to (`engine/cycle.rs` is `engine`).
fn top_module(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The identifiers that follow `prefix` in `text` (where `prefix` starts a path).
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut names = Vec::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            names.push(&rest[..end]);
        }
    }
    names
}

/// Which first-level module names which other, by `crate::x` paths (in code or docs) and by
/// `super::super::x` from a submodule.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = src();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| top_module(&src, f))
        .filter(|m| m != "lib")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let here = top_module(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let nested = file.parent() != Some(src.as_path());
        let mut named = names_after(&text, "crate::");
        if nested {
            named.extend(names_after(&text, "super::super::"));
        }
        for name in named {
            if name != here && modules.contains(name) {
                edges
                    .entry(here.clone())
                    .or_default()
                    .insert(name.to_string());
            }
        }
    }
    edges
}

/// A circle through `from`, if the graph has one reachable from it.
fn circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|m| m == from) {
        let mut found = path[at..].to_vec();
        found.push(from.to_string());
        return Some(found);
    }
    if done.contains(from) {
        return None;
    }
    path.push(from.to_string());
    for next in graph.get(from).into_iter().flatten() {
        if let Some(found) = circle(graph, next, path, done) {
            return Some(found);
        }
    }
    path.pop();
    done.insert(from.to_string());
    None
}

#[test]
fn no_module_of_the_library_imports_itself_through_others() {
    let graph = module_graph();
    // The layers depend downward: the engine on the edge and the core, never back.
    assert!(graph["engine"].contains("core"), "{graph:?}");
    assert!(graph["scheduler"].contains("engine"), "{graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(found) = circle(&graph, module, &mut Vec::new(), &mut done) {
            panic!("an import circle: {}", found.join(" -> "));
        }
    }
}

#[test]
fn the_circle_check_finds_a_circle_when_there_is_one() {
    // The check itself, on a made-up graph with a circle of three.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph.entry(from.into()).or_default().insert(to.into());
    }
    let found = circle(&graph, "a", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(found.unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(
        circle(&graph, "a", &mut Vec::new(), &mut BTreeSet::new()),
        None
    );
}

#[test]
fn the_core_uses_nothing_of_mlua() {
    let mut files = Vec::new();
    sources(&src().join("core"), &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for forbidden in [
            "mlua::",
            "use mlua",
            "crate::vm",
            "crate::engine",
            "crate::scheduler",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} names {forbidden}",
                file.display()
            );
        }
    }
}

//! The layout's floors, checked on the source: arrows point down and no two top-level modules
//! import each other, directly or through others. The map is `src/lib.rs`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules its code names (`crate::x`), comments left out.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    let mut rust: Vec<PathBuf> = Vec::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            rust.push(p);
        }
    }
    for file in rust {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let names = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    names.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `from`, if any, as the path of modules.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_owned(), vec![from.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == from {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_two_top_level_modules_import_each_other() {
    let graph = imports();
    assert!(graph.len() > 10, "the source was found: {graph:?}");
    for module in graph.keys() {
        assert_eq!(cycle(&graph, module), None, "an import cycle");
    }
}

/// The modules in the order of `src/lib.rs`'s map.
fn map_order() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn every_module_imports_only_modules_above_it_in_the_map() {
    let graph = imports();
    let order = map_order();
    let mut listed: Vec<&String> = order.iter().collect();
    listed.sort();
    let mut modules: Vec<&String> = graph.keys().collect();
    modules.sort();
    assert_eq!(listed, modules, "the map lists every top-level module once");
    for (at, module) in order.iter().enumerate() {
        let below: Vec<&String> = graph[module]
            .iter()
            .filter(|n| !order[..at].contains(n))
            .collect();
        assert!(
            below.is_empty(),
            "{module} imports {below:?}, listed after it in the map"
        );
    }
}

#[test]
fn arrows_point_down_from_serving_to_delivery_to_capture_to_the_store() {
    let graph = imports();
    let floors: &[(&[&str], &[&str])] = &[
        // the ground floor imports nothing but the other ground-floor modules
        (
            &["store", "lsn", "secret", "fields"],
            &["lsn", "secret", "fields"],
        ),
    ];
    for (modules, allowed) in floors {
        for m in *modules {
            let above: Vec<&String> = graph[*m]
                .iter()
                .filter(|n| !allowed.contains(&n.as_str()))
                .collect();
            assert!(above.is_empty(), "{m} imports {above:?}");
        }
    }
    let never: &[(&str, &[&str])] = &[
        ("capture", &["dispatch", "adapters", "ops", "serve", "cli", "app"]),
        (
            "events",
            &[
                "dispatch", "adapters", "ops", "serve", "cli", "app", "capture", "source",
            ],
        ),
        ("source", &["dispatch", "adapters", "ops", "serve", "cli", "app"]),
        (
            "pgoutput",
            &["dispatch", "adapters", "ops", "serve", "cli", "app", "store"],
        ),
        ("adapters", &["dispatch", "ops", "serve", "cli", "app"]),
        ("dispatch", &["ops", "serve", "cli", "app"]),
        ("ops", &["serve", "cli", "app"]),
        (
            "telemetry",
            &["dispatch", "adapters", "ops", "serve", "cli", "app"],
        ),
        (
            "config",
            &["dispatch", "adapters", "ops", "serve", "cli", "app", "store"],
        ),
    ];
    for (module, forbidden) in never {
        let bad: Vec<&String> = graph[*module]
            .iter()
            .filter(|n| forbidden.contains(&n.as_str()))
            .collect();
        assert!(bad.is_empty(), "{module} imports {bad:?}, which sit above it");
    }
}

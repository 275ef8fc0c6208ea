//! The binary's modules import only downward: leaves import leaves,
//! services import services and leaves, a command imports services and
//! leaves but never another command, and no import circle joins the
//! top-level modules. Read off the source, so a new `use` that breaks it
//! fails here with the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer.
const LAYERS: &[(&str, Layer)] = &[
    ("cli", Layer::Leaf),
    ("config", Layer::Leaf),
    ("dirs", Layer::Leaf),
    ("exit", Layer::Leaf),
    ("files", Layer::Leaf),
    ("secret", Layer::Leaf),
    ("text", Layer::Leaf),
    ("cdr", Layer::Service),
    ("cms_api", Layer::Service),
    ("drain", Layer::Service),
    ("guard", Layer::Service),
    ("ingest", Layer::Service),
    ("logs", Layer::Service),
    ("mmp", Layer::Service),
    ("restarter", Layer::Service),
    ("store", Layer::Service),
    ("commands", Layer::Command),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Leaf,
    Service,
    Command,
}

fn layer(module: &str) -> Option<Layer> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, layer)| *layer)
}

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

/// The module a file belongs to: (top-level module, command if under `commands/`).
fn owner(src: &Path, file: &Path) -> (String, Option<String>) {
    let parts: Vec<String> =
        file.strip_prefix(src).unwrap().with_extension("").iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let command = (parts[0] == "commands" && parts.len() > 1 && parts[1] != "mod").then(|| parts[1].clone());
    (parts[0].clone(), command)
}

/// Every `crate::a::b` path in code (not in comments), with its line:
/// (top-level module, the next segment).
fn crate_paths(text: &str) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let segment = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
            let top = segment(after);
            let advance = top.len().max(1);
            let next = after[top.len()..].strip_prefix("::").map(segment).unwrap_or_default();
            // `use crate::{a, b}` names several at once.
            if let Some(group) = after.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                for name in group.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let top = segment(name);
                    let next = name[top.len()..].strip_prefix("::").map(segment).unwrap_or_default();
                    found.push((number + 1, top, next));
                }
            } else {
                found.push((number + 1, top, next));
            }
            rest = &after[advance..];
        }
    }
    found
}

#[test]
fn modules_import_only_downward_and_commands_never_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let (module, command) = owner(&src, file);
        if module == "main" {
            continue;
        }
        let Some(own) = layer(&module) else {
            problems.push(format!("{}: top-level module '{module}' has no layer in LAYERS", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target, next) in crate_paths(&text) {
            let at = format!("{}:{line}", file.strip_prefix(&src).unwrap().display());
            let Some(theirs) = layer(&target) else {
                problems.push(format!("{at}: crate::{target} is not a known module"));
                continue;
            };
            if theirs > own {
                problems.push(format!("{at}: {module} ({own:?}) imports {target} ({theirs:?}), a layer above"));
            }
            if let (Some(command), "commands") = (&command, target.as_str()) {
                if &next != command {
                    problems.push(format!("{at}: the command {command} imports the command {next}"));
                }
            }
            if target != module {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    // No circle: repeatedly remove modules that import nothing left.
    let mut left = edges.clone();
    loop {
        let leaves: Vec<String> = left
            .iter()
            .filter(|(_, targets)| targets.iter().all(|t| !left.contains_key(t)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for m in leaves {
            left.remove(&m);
        }
    }
    if !left.is_empty() {
        problems.push(format!("an import circle joins: {:?}", left.keys().collect::<Vec<_>>()));
    }
    assert!(problems.is_empty(), "layering:\n{}", problems.join("\n"));
    // The check must have something to check.
    assert!(edges.get("commands").is_some_and(|t| t.contains("guard") && t.contains("restarter")), "{edges:?}");
}

#[test]
fn the_reader_finds_paths_in_code_only() {
    let text =
        "use crate::{config, secret::Token};\n// crate::commands in a comment\nlet x = crate::guard::api::Status;";
    let found: Vec<(usize, String, String)> = crate_paths(text);
    let names: Vec<(&str, &str)> = found.iter().map(|(_, t, n)| (t.as_str(), n.as_str())).collect();
    assert_eq!(names, [("config", ""), ("secret", "Token"), ("guard", "api")]);
}

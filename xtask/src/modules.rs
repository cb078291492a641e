//! The module dependency graph of each crate, read from its sources, and
//! the cycles in it: `cargo xtask test` fails when two sibling modules
//! (or a longer ring of them) depend on each other.
//!
//! A module depends on another when its code (comments and its
//! `#[cfg(test)]` module left out) names a path into it: `crate::a::b::…`,
//! `super::…`, or an entry of `crate::{…}` / `super::{…}`. A dependency
//! between a module and its own ancestor is not a cycle (a child uses its
//! parent's items); every other dependency counts between the two
//! siblings under the deepest common parent. The test module is left out
//! because clippy's `items_after_test_module` keeps it last in its file.

use crate::util::Step;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

/// The crates' source folders the check reads.
const CRATES: &[&str] = &[
    "kernel/src",
    "host/src",
    "gpu/src",
    "gpu/cpu-runtime/src",
    "mcu/src",
    "xtask/src",
    "firmware-examples/common/src",
];

/// The `cargo xtask test` step: fails naming every cycle.
pub fn check() -> Result<Step, String> {
    let t = Instant::now();
    let root = crate::util::root();
    let mut all = vec![];
    for c in CRATES {
        for cycle in cycles(&root.join(c))? {
            all.push(format!("{c}: {}", cycle.join(" <-> ")));
        }
    }
    if !all.is_empty() {
        return Err(format!("module dependency cycles:\n{}", all.join("\n")));
    }
    println!("module cycles: none in {} crates", CRATES.len());
    Ok(Step {
        name: "module dependency cycles".into(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// A module path inside its crate (`[]` is the crate root).
type Module = Vec<String>;

/// The modules of the crate whose sources are under `src`, with their
/// code.
fn modules(src: &Path) -> Result<BTreeMap<Module, String>, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        for e in entries {
            let p = e.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).map_err(|e| e.to_string())?;
            let mut m: Module = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if m.last()
                .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
            {
                m.pop();
            }
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            out.insert(m, code_of(&text));
        }
    }
    Ok(out)
}

/// The text without comment lines and without the test module.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if t == "#[cfg(test)]" && lines.peek().is_some_and(|n| n.starts_with("mod ")) {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// The paths `code` names after `prefix` (`crate::` or `super::`), each
/// as its segments; a `{…}` group gives one path per entry.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for entry in group[..end].split(',') {
                out.push(segments(entry.trim()));
            }
        } else {
            out.push(segments(rest));
        }
    }
    out
}

/// The leading `a::b::c` identifiers of `s`.
fn segments(s: &str) -> Vec<String> {
    let mut segs = vec![];
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

/// The deepest module of `mods` that `path` (from the crate root) names.
fn resolve(mods: &BTreeMap<Module, String>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|i| path[..i].to_vec())
        .find(|m| mods.contains_key(m))
}

/// The cycles among sibling modules of the crate under `src`, each as its
/// modules' paths (`a::b`), sorted.
pub fn cycles(src: &Path) -> Result<Vec<Vec<String>>, String> {
    let mods = modules(src)?;
    // sibling graph: parent → (child → children it depends on)
    let mut graph: BTreeMap<Module, BTreeMap<Module, BTreeSet<Module>>> = BTreeMap::new();
    for (m, code) in &mods {
        let parent: Module = m[..m.len().saturating_sub(1)].to_vec();
        let mut targets = vec![];
        for p in paths_after(code, "crate::") {
            targets.extend(resolve(&mods, &p));
        }
        for p in paths_after(code, "super::") {
            let mut full = parent.clone();
            full.extend(p);
            targets.extend(resolve(&mods, &full));
        }
        for t in targets {
            let k = m.iter().zip(&t).take_while(|(a, b)| a == b).count();
            if k == m.len() || k == t.len() {
                continue; // ancestor or descendant
            }
            graph
                .entry(m[..k].to_vec())
                .or_default()
                .entry(m[..=k].to_vec())
                .or_default()
                .insert(t[..=k].to_vec());
        }
    }
    let mut found = vec![];
    for g in graph.values() {
        for c in strongly_connected(g) {
            if c.len() > 1 {
                let mut names: Vec<String> = c.iter().map(|m| m.join("::")).collect();
                names.sort();
                found.push(names);
            }
        }
    }
    Ok(found)
}

/// The strongly connected components of `g` (Tarjan's algorithm).
fn strongly_connected(g: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        g: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(s: &mut State<'_>, v: &Module) {
        let i = s.index.len();
        s.index.insert(v.clone(), i);
        s.low.insert(v.clone(), i);
        s.stack.push(v.clone());
        s.on.insert(v.clone());
        let next: Vec<Module> =
            s.g.get(v)
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default();
        for w in &next {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = vec![];
            while let Some(w) = s.stack.pop() {
                s.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker finds a cycle between siblings, through `super::{…}`
    /// groups and `crate::` paths, and ignores comments, parents and the
    /// test module.
    #[test]
    fn finds_sibling_cycles_only() {
        let d = std::env::temp_dir().join(format!("fdgr-modules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("m")).expect("temp dir");
        let write = |p: &str, t: &str| std::fs::write(d.join(p), t).expect("write");
        write("lib.rs", "mod a;\nmod b;\nmod m;\nuse crate::a::X;\n");
        write("a.rs", "use crate::b::Y;\n");
        write(
            "b.rs",
            "use crate::m::{inner::Z, W};\n#[cfg(test)]\nmod tests {\n use crate::a::X;\n}\n",
        );
        write(
            "m/mod.rs",
            "mod inner;\nuse super::{b};\n    // see crate::a::X\n",
        );
        write("m/inner.rs", "use super::W;\nuse crate::m::W as V;\n");
        let found = cycles(&d).expect("readable");
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(found, vec![vec!["b".to_string(), "m".to_string()]]);
    }
}

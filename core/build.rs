//! Embeds every `rules/*.yaml` file of the repository (the top-level `rules/`, beside this
//! crate) and every `rules/workloads/*.yaml` in the core, so the rules and the kinds that run
//! pods ship with every build and stay data.

use std::fmt::Write;
use std::path::Path;

fn embed(dir: &Path, out_name: &str) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("the directory {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut out = String::from("&[\n");
    for name in &names {
        println!("cargo:rerun-if-changed={}/{name}", dir.display());
        let path = std::fs::canonicalize(dir.join(name)).expect("embedded file path");
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("]\n");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out_dir).join(out_name), out)
        .unwrap_or_else(|e| panic!("write {out_name}: {e}"));
}

fn main() {
    embed(Path::new("../rules"), "builtin_rules.rs");
    embed(Path::new("../rules/workloads"), "builtin_workloads.rs");
}

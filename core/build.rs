//! Embeds every `rules/*.yaml` file of the repository (the top-level `rules/`, beside this
//! crate) in the core, so the rules ship with every build and stay data.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let dir = Path::new("../rules");
    println!("cargo:rerun-if-changed=../rules");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the top-level rules/ directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    let mut out = String::from("&[\n");
    for name in &names {
        println!("cargo:rerun-if-changed=../rules/{name}");
        let path = std::fs::canonicalize(dir.join(name)).expect("rule path");
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("]\n");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("builtin_rules.rs"), out)
        .expect("write builtin_rules.rs");
}

//! `kubeharden rules` and `kubeharden explain`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::registry;

#[derive(clap::Args)]
pub struct RulesArgs {
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Print the rules as JSON.
    #[arg(long)]
    json: bool,
    /// List the kinds that run pods (Kind.group) and the file that says where their pods are.
    #[arg(long)]
    workloads: bool,
    /// Write each rule's documentation page to DIR/<rule-id>.md.
    #[arg(long, value_name = "DIR")]
    write_docs: Option<PathBuf>,
}

pub fn list(args: RulesArgs) -> Result<ExitCode> {
    let registry = registry(args.rules.as_deref())?;
    if let Some(dir) = &args.write_docs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for rule in registry.iter() {
            let path = dir.join(format!("{}.md", rule.id));
            std::fs::write(&path, rule.doc_page())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!(
            "wrote {} rule pages to {}",
            registry.iter().count(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    if args.workloads {
        use std::fmt::Write;
        for (kind, origin) in registry.workloads().summary() {
            let _ = writeln!(out, "{kind:<45} {origin}");
        }
    } else if args.json {
        let rules: Vec<_> = registry.iter().collect();
        out = serde_json::to_string_pretty(&rules)? + "\n";
    } else {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "{:<30} {:<10} {:<8} {:<7} TITLE",
            "RULE", "PROFILE", "SEVERITY", "FIX"
        );
        for r in registry.iter() {
            let fix = match (&r.fix, r.is_fixable()) {
                (Some(f), true) => format!("{:?}", f.applicability).to_lowercase(),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<30} {:<10} {:<8} {:<7} {}",
                r.id,
                r.profile.as_str(),
                r.severity.as_str(),
                fix,
                r.title
            );
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

pub fn explain(id: &str, dir: Option<&Path>) -> Result<ExitCode> {
    let registry = registry(dir)?;
    let Some(rule) = registry.get(id) else {
        bail!("unknown rule `{id}`; `kubeharden rules` lists them");
    };
    let mut out = format!("# {} ({})\n\n", rule.title, rule.id);
    out += &format!(
        "Profile: {}. Default severity: {}.",
        rule.profile.as_str(),
        rule.severity
    );
    if let Some(c) = &rule.pss_control {
        out += &format!(" Pod Security Standards control: {c}.");
    }
    if let Some(n) = &rule.nsa_section {
        out += &format!(" NSA/CISA guidance: {n}.");
    }
    if let Some(v) = rule.since {
        out += &format!(" Applies from Kubernetes {v}.");
    }
    out += "\n\n";
    out += &rule.docs;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

//! `kubeharden lint`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::ValueEnum;

use kubeharden_core::lint::Linter;
use kubeharden_core::render;

use super::inputs::collect_inputs;
use super::{CommonArgs, Setup, setup};

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
    Github,
}

#[derive(clap::Args)]
pub struct LintArgs {
    /// Files or directories (searched for *.yaml and *.yml); `-` reads standard input.
    #[arg(default_value = ".")]
    paths: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    #[command(flatten)]
    common: CommonArgs,
    /// Also list the documents that were skipped and why.
    #[arg(long, short)]
    verbose: bool,
    /// Scan every container image with a vulnerability scanner (Trivy by default) and report
    /// what it finds as `image-vulnerable` on the image's line.
    #[arg(long)]
    scan_images: bool,
    #[cfg(feature = "images")]
    #[command(flatten)]
    scanner: super::images::ScannerArgs,
    #[command(flatten)]
    inspect: super::InspectArgs,
    #[command(flatten)]
    render: super::render::RenderArgs,
}

#[cfg(feature = "images")]
fn scan_images(
    args: &LintArgs,
    files: &[kubeharden_core::source::SourceFile],
    settings: &kubeharden_core::lint::Settings,
    kinds: &kubeharden_core::workloads::WorkloadKinds,
) -> Result<std::collections::BTreeMap<String, kubeharden_core::vuln::ScanOutcome>> {
    super::images::scan(&args.scanner, files, settings, kinds)
}

#[cfg(not(feature = "images"))]
fn scan_images(
    _: &LintArgs,
    _: &[kubeharden_core::source::SourceFile],
    _: &kubeharden_core::lint::Settings,
    _: &kubeharden_core::workloads::WorkloadKinds,
) -> Result<std::collections::BTreeMap<String, kubeharden_core::vuln::ScanOutcome>> {
    Err(super::not_built(
        "images",
        "registry and scanner access (`--scan-images`)",
    ))
}

pub fn run(args: LintArgs) -> Result<ExitCode> {
    let Setup {
        registry,
        config,
        config_root,
        settings,
    } = setup(&args.common)?;
    let plan = super::render::plan(&args.paths, &args.render, &config.render);
    let (mut files, io_errors) = collect_inputs(&args.paths, &config, config_root.as_deref());
    // What a render reads is linted through the render, once.
    files.retain(|f| !plan.consumed.contains(&f.path));
    let renders = super::render::render(&plan, &args.render, settings.kube_version);
    // Rendered images are scanned like written ones.
    files.extend(renders.files.iter().cloned());
    let mut images = kubeharden_core::facts::ImageFacts::default();
    if args.scan_images {
        let kinds = registry.workloads_with(&settings.workloads);
        images.scans = scan_images(&args, &files, &settings, &kinds)?;
    }
    args.inspect
        .read_into(&files, &settings, &registry, &mut images)?;
    let linter = Linter::new(&registry, settings).with_facts(kubeharden_core::facts::Facts {
        images: std::sync::Arc::new(images),
    });
    let mut report = linter.lint_files(&files);
    super::render::place(&mut report, &plan, &renders, &linter);
    let output = match args.format {
        Format::Text => {
            let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            render::text(&report, color, args.verbose)
        }
        Format::Json => render::json(&report),
        Format::Sarif => render::sarif(&report, linter.active_rules()),
        Format::Github => render::github(&report),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout.write_all(output.as_bytes());
    let _ = stdout.flush();
    for e in &io_errors {
        eprintln!("kubeharden: {e:#}");
    }
    Ok(if !io_errors.is_empty() {
        ExitCode::from(2)
    } else if report.failed(linter.settings.fail_on) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

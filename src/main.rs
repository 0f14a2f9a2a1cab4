//! `kubeharden`: the command line; each subcommand lives in `cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}

//! `causeway`: one binary for every Causeway component and the user CLI.
//!
//! The binary only parses arguments and wires libraries together; each subcommand's logic lives
//! in its crate (`causeway-crds`, `causeway-controller`, `causeway-gateway`, `causeway-l4lb`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod crds;
mod validate;

/// Causeway: a multi-cluster federation gateway.
#[derive(Debug, Parser)]
#[command(name = "causeway", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check resource files (multi-document YAML) without applying them.
    ///
    /// Prints one line per problem, `FILE: KIND/NAME: FIELD-PATH: message`, and exits 1 when any
    /// object has an error (warnings alone exit 0). Directories are read like `kubectl apply -f`:
    /// their *.yaml, *.yml and *.json files, not subdirectories unless --recursive.
    Validate {
        /// Files or directories to check; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Descend into subdirectories of the directories given.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Do not print warnings.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Print the CRD manifests of the causeway.io kinds, or write them to a directory.
    Crds {
        /// Write one file per CRD (`causeway.io_PLURAL.yaml`) into this directory instead of
        /// printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Print the Markdown API reference generated from the same schemas instead.
        #[arg(long, conflicts_with = "out_dir")]
        reference: bool,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate {
            files,
            recursive,
            quiet,
        } => validate::run(&files, recursive, quiet),
        Command::Crds { out_dir, reference } => crds::run(out_dir.as_deref(), reference),
        Command::Version => {
            println!("causeway {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

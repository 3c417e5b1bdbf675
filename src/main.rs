//! The `postdesk` binary: parse the command line and hand it to
//! [`postdesk::cli`], which runs the daemon or the operator's command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    postdesk::cli::main(postdesk::cli::Cli::parse())
}

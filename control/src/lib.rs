//! `ktx`, as a library: the CLI's types, the cluster objects it builds and the orchestration of
//! `mesh`, `exchange`, `preview`, `clean`, `recover` and `status`. `main.rs` only parses the
//! command line, starts logging and calls [`run`]; tests call the same functions in-process.

pub mod cli;
pub mod error;
pub mod expose;
pub mod ports;

pub use error::{Error, Result};

use cli::{Cli, Command};

/// Runs one parsed command to its end.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "ktx", &mut std::io::stdout());
            Ok(())
        }
        _ => Err(Error::Tunnel("not built yet".into())),
    }
}

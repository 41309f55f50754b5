//! The `velourfog` binary: parses the command line, runs it, turns the outcome into an exit
//! code (see the library's docs).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit 1 (not clap's 2), so that 2 only ever means a --wait gave up.
    let cli = velourfog::Cli::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { 1 } else { 0 })
    });
    common::shutdown::init_logging(&std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()));
    match velourfog::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `velourfog status | head` closed the pipe: nothing left to tell anyone.
        Err(velourfog::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

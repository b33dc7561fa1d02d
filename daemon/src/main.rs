//! `scriptd`: parses flags, calls [`scriptd::run`], and alone decides the exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // The hidden process-group shim mode runs before anything else: no runtime, no threads
    // but its own.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == scriptd::shim::ARG) {
        return scriptd::shim::main(args.collect());
    }
    let cli = <scriptd::Cli as clap::Parser>::parse();
    match scriptd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("scriptd: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `ctl`: parses flags, calls [`ctl::run`], and alone decides the exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = <ctl::Cli as clap::Parser>::parse();
    match ctl::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS, // `ctl logs -f x | head`
        Err(e) => {
            eprintln!("ctl: {e}");
            ExitCode::from(e.code)
        }
    }
}

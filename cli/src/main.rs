//! `ctl`: parses flags, calls [`ctl::run`], and alone decides the exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A TAB in a shell whose completion script calls ctl back (`COMPLETE=bash ctl -- ...`).
    match ctl::completion::complete_if_asked() {
        Ok(true) => return ExitCode::SUCCESS,
        Ok(false) => {}
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    }
    let matches = <ctl::Cli as clap::CommandFactory>::command().get_matches();
    let cli = match ctl::Cli::from_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match ctl::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS, // `ctl logs -f x | head`
        Err(e) => {
            eprintln!("ctl: {e}");
            ExitCode::from(e.code)
        }
    }
}

//! `scriptd-shim`: the process-group shim of [`scriptd::shim`] as an executable of its own.
//! The daemon starts one per running script; being small (none of the daemon's gRPC,
//! SQLite or YAML code), each costs a fraction of the memory the daemon's own binary would.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    match args.nth(1) {
        Some(a) if a == scriptd::shim::ARG => scriptd::shim::main(args.collect()),
        _ => {
            eprintln!("scriptd-shim: started by scriptd for each run of a script, not by hand");
            ExitCode::from(2)
        }
    }
}

//! `vmd`, the virtual machine daemon: parses the command line and runs the
//! parent, or — re-executed with the hidden `-P role` — one of its
//! children (vmd's `main` in `vmd.c` and `proc_init` in `proc.c`).

use std::ffi::OsString;
use std::process::ExitCode;

use privsep::Role;
use vmd::args::{Args, USAGE};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = match Args::parse(&argv, std::env::var_os(proto::SOCKET_ENV)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vmd: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    let code = match args.role {
        None => vmd::parent::main(args),
        Some(role) => child(role, &args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs a re-executed child. Its channel to the parent is descriptor 3;
/// the control process also gets the listening socket as descriptor 4.
fn child(role: Role, args: &Args) -> i32 {
    let name = role.as_str();
    vmd::log::init(name, args.debug, args.verbose);
    // ^C at a foreground vmd reaches the whole process group; the parent
    // alone decides how the children end.
    vmd::ignore_terminal_signals();
    match vmd::run_child(role, args) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{name}: {e:#}");
            1
        }
    }
}

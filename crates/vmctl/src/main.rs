//! The `vmctl` binary: see the library for everything it does.

use std::path::PathBuf;

fn main() {
    let mut argv = Vec::new();
    for arg in std::env::args_os() {
        match arg.into_string() {
            Ok(arg) => argv.push(arg),
            Err(bad) => {
                eprintln!(
                    "vmctl: argument is not valid UTF-8: {}",
                    bad.to_string_lossy()
                );
                std::process::exit(1);
            }
        }
    }
    let socket = std::env::var_os(vmctl::SOCKET_ENV).map(PathBuf::from);
    std::process::exit(vmctl::run(&argv, socket));
}

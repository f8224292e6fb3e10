//! The `vmctl` binary: see the library for everything it does.

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let socket = std::env::var(vmctl::SOCKET_ENV).ok();
    std::process::exit(vmctl::run(&argv, socket));
}

//! vmctl(8): the control tool of vmd (OpenBSD's `usr.sbin/vmctl`: `main.c`
//! for the command table and argument parsing, `vmctl.c` for the requests
//! and their messages). The binary is a thin wrapper around [`run`].

pub mod actions;
pub mod args;
pub mod client;
pub mod commands;
pub mod console;
pub mod errno;
pub mod getopt;
pub mod scaled;
pub mod start;
pub mod status;

use std::io::Write;
use std::path::PathBuf;

use actions::{execute, Io, Outcome};
use client::{Client, ClientError, Transport, DEFAULT_SOCKET};
use commands::{CommandError, PROG};
use proto::{Request, Response};

/// The environment variable naming the control socket.
pub const SOCKET_ENV: &str = "VMD_SOCKET";

/// A transport that reports each exchange on stderr (`vmctl -v`).
struct Verbose<'a> {
    inner: &'a mut dyn Transport,
}

impl Transport for Verbose<'_> {
    fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        eprintln!("{PROG}: sending {} request", request.name());
        let response = self.inner.call(request);
        match &response {
            Ok(r) => eprintln!("{PROG}: received {r:?}"),
            Err(e) => eprintln!("{PROG}: no response: {e}"),
        }
        response
    }
}

/// Runs vmctl with `argv` (program name first) and returns the exit
/// status. `socket_env` is the value of `VMD_SOCKET`, if set.
pub fn run(argv: &[String], socket_env: Option<PathBuf>) -> i32 {
    let stderr = std::io::stderr();
    let args = argv.get(1..).unwrap_or_default();
    let (opts, rest) = match getopt::getopt(args, "s:v") {
        Ok(found) => found,
        Err(err) => {
            let _ = write!(
                stderr.lock(),
                "{PROG}: {err}\n{}",
                CommandError::Usage.report()
            );
            return 1;
        }
    };
    let mut verbose = false;
    let mut socket = socket_env
        .filter(|s| !s.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    for opt in opts {
        match (opt.letter, opt.arg) {
            ('v', _) => verbose = true,
            ('s', Some(path)) => socket = PathBuf::from(path),
            _ => {}
        }
    }

    let parsed = match commands::parse(&rest) {
        Ok(parsed) => parsed,
        Err(err) => {
            let _ = stderr.lock().write_all(err.report().as_bytes());
            return 1;
        }
    };
    for warning in &parsed.warnings {
        let _ = writeln!(stderr.lock(), "{PROG}: {warning}");
    }

    let stdout = std::io::stdout();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
    };
    let outcome = if parsed.action.needs_daemon() {
        let mut client = match Client::connect(&socket) {
            Ok(client) => client,
            Err(e) => {
                let _ = writeln!(io.err, "{PROG}: {e}");
                return 1;
            }
        };
        if verbose {
            execute(&parsed.action, &mut Verbose { inner: &mut client }, &mut io)
        } else {
            execute(&parsed.action, &mut client, &mut io)
        }
    } else {
        execute(&parsed.action, &mut NoDaemon, &mut io)
    };
    match outcome {
        Ok(Outcome::Exit(code)) => code,
        Ok(Outcome::Console(tty)) => {
            drop(out);
            drop(err);
            match console::run(std::path::Path::new(&tty)) {
                Ok(_) => 0,
                Err(e) => {
                    eprintln!("{PROG}: {e}");
                    1
                }
            }
        }
        Err(e) => {
            let _ = writeln!(io.err, "{PROG}: {e}");
            1
        }
    }
}

/// The transport of commands that never talk to the daemon.
struct NoDaemon;

impl Transport for NoDaemon {
    fn call(&mut self, _request: &Request) -> Result<Response, ClientError> {
        Err(ClientError::Closed)
    }
}

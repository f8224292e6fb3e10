//! vm.conf(5) for vmd on Linux: tokenizer, grammar, validation and the
//! configuration types the daemon and vmctl share (vmd's parse.y).
//!
//! [`load`] reads a file into a validated [`Config`]; [`check`] produces
//! exactly what `vmd -n` prints.

pub mod diag;
pub mod lex;
pub mod owner;
pub mod parse;
pub mod types;
pub mod util;
pub mod validate;

use std::path::Path;

pub use diag::{ConfigError, Diag, Diagnostic, Errors, Location, Warning, WarningKind};
pub use types::*;

/// Guess a disk image's format from its first bytes: qcow2 if it starts
/// with the `QFI\xfb` magic, raw otherwise (also when it cannot be read).
///
/// Only regular files are read, and without blocking, so a FIFO or device
/// named as a disk cannot stall the caller.
pub fn sniff_disk_format(path: &Path) -> DiskFormat {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return DiskFormat::Raw;
    }
    let mut magic = [0u8; 4];
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .and_then(|mut f| f.read_exact(&mut magic));
    match read {
        Ok(()) if magic == *b"QFI\xfb" => DiskFormat::Qcow2,
        _ => DiskFormat::Raw,
    }
}

/// Split a `-D name=value` argument at its last `=` (as vmd's
/// `cmdline_symset`); `None` without one.
pub fn parse_define(arg: &str) -> Option<(String, String)> {
    let (name, value) = arg.rsplit_once('=')?;
    Some((name.to_string(), value.to_string()))
}

/// Parse and validate `text` as if read from the file `name`. Relative
/// paths (disks, kernels, includes) resolve against the current directory,
/// as vmd does.
pub fn load_str(
    name: &str,
    text: &str,
    macros: &[(String, String)],
) -> Result<(Config, Vec<Warning>), Errors> {
    finish(run(name, text.as_bytes().to_vec(), macros))
}

/// Read, parse and validate the configuration file `path` with `-D`
/// `macros` (which file definitions cannot override).
///
/// A missing file is an error for which [`Errors::is_not_found`] is true:
/// vmd then runs with an empty configuration.
pub fn load(path: &Path, macros: &[(String, String)]) -> Result<(Config, Vec<Warning>), Errors> {
    finish(run_file(path, macros))
}

/// What `vmd -n` reports for a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The text vmd prints on stderr: warnings and errors as found, one per
    /// line, then `configuration OK` if there was no error.
    pub output: String,
    /// The configuration is usable.
    pub ok: bool,
}

impl Check {
    /// vmd's exit status for `-n`: 0 if OK, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ok {
            0
        } else {
            1
        }
    }
}

/// `vmd -n -f path`: check the file and say what vmd says.
pub fn check(path: &Path, macros: &[(String, String)]) -> Check {
    let (_, diags) = run_file(path, macros);
    let ok = !diags.iter().any(|d| matches!(d, Diag::Error(_)));
    let mut output = String::new();
    for d in &diags {
        output.push_str(&d.to_string());
        output.push('\n');
    }
    if ok {
        output.push_str("configuration OK\n");
    }
    Check { output, ok }
}

fn run_file(path: &Path, macros: &[(String, String)]) -> (Config, Vec<Diag>) {
    let name = path.display().to_string();
    match util::read_config_file(path) {
        Ok(text) => run(&name, text, macros),
        Err(e) => {
            let error = ConfigError::Open {
                path: name,
                reason: util::io_reason(&e),
                not_found: e.kind() == std::io::ErrorKind::NotFound,
            };
            let d = Diag::Error(Diagnostic {
                location: None,
                error,
            });
            (Config::default(), vec![d])
        }
    }
}

/// Parse, validate, then report unused macros, as vmd does at the end.
fn run(name: &str, text: Vec<u8>, macros: &[(String, String)]) -> (Config, Vec<Diag>) {
    let parsed = parse::parse(name, text, macros);
    let mut diags = parsed.diags;
    diags.extend(validate::validate(
        &parsed.config,
        &parsed.vm_locs,
        &parsed.switch_locs,
    ));
    diags.extend(
        parsed
            .unused_macros
            .into_iter()
            .map(|m| Diag::Warning(Warning::MacroNotUsed(m))),
    );
    (parsed.config, diags)
}

fn finish((config, diags): (Config, Vec<Diag>)) -> Result<(Config, Vec<Warning>), Errors> {
    if diags.iter().any(|d| matches!(d, Diag::Error(_))) {
        return Err(Errors { diags });
    }
    let warnings = diags
        .into_iter()
        .filter_map(|d| match d {
            Diag::Warning(w) => Some(w),
            Diag::Error(_) => None,
        })
        .collect();
    Ok((config, warnings))
}

//! Reading vm.conf for the daemon (vmd's `parse_config` call sites): the
//! `-n` configuration test and loading with warnings logged.

use std::path::Path;

use vmconf::Config;

/// `vmd -n`: prints what vmconf finds (errors and warnings, then
/// `configuration OK`) on stderr; returns the exit status.
pub fn configtest(path: &Path, macros: &[(String, String)]) -> i32 {
    let check = vmconf::check(path, macros);
    eprint!("{}", check.output);
    check.exit_code()
}

/// Loads a configuration file, logging its warnings. A missing file is an
/// empty configuration, as for vmd; any other problem is the text of the
/// errors, one `file:line: message` per line.
pub fn load(path: &Path, macros: &[(String, String)]) -> Result<Config, String> {
    match vmconf::load(path, macros) {
        Ok((config, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Ok(config)
        }
        Err(e) if e.is_not_found() => {
            tracing::warn!(
                "failed to open {}: no such file, no VMs configured",
                path.display()
            );
            Ok(Config::default())
        }
        Err(e) => Err(format!("{e}\n")),
    }
}

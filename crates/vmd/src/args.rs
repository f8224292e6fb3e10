//! vmd's command line (`main` in vmd's `vmd.c`):
//! `vmd [-dnv] [-D macro=value] [-f file] [-s socket]`, plus the hidden
//! `-P role` of a re-executed child.

use std::ffi::OsString;
use std::path::PathBuf;

use privsep::Role;

/// The usage line printed for a bad command line.
pub const USAGE: &str = "usage: vmd [-dnv] [-D macro=value] [-f file] [-s socket]";

/// Why the command line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// An option that vmd does not have
    #[error("unknown option -- {0}")]
    Unknown(char),
    /// An option that needs an argument came last
    #[error("option requires an argument -- {0}")]
    MissingValue(char),
    /// A `-D` that is not `macro=value`
    #[error("could not parse macro definition {0}")]
    BadMacro(String),
    /// A `-P` naming no role
    #[error("invalid process name {0}")]
    BadRole(String),
    /// Words after the options
    #[error("unexpected argument {0}")]
    Extra(String),
    /// An argument that is not valid UTF-8 where text is needed
    #[error("invalid argument")]
    NotUtf8,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `-d`: stay in the foreground and log to stderr.
    pub debug: bool,
    /// `-n`: check the configuration and exit.
    pub noaction: bool,
    /// `-v` (repeatable): more verbose logging.
    pub verbose: u8,
    /// `-D macro=value`, in order.
    pub macros: Vec<(String, String)>,
    /// `-f file`.
    pub conf: PathBuf,
    /// `-s socket` (else `VMD_SOCKET`, else the default).
    pub socket: PathBuf,
    /// `-P role`: this process is a re-executed child.
    pub role: Option<Role>,
}

impl Args {
    /// Parses `argv` without the program name; `env_socket` is the value of
    /// `VMD_SOCKET`.
    pub fn parse(argv: &[OsString], env_socket: Option<OsString>) -> Result<Args, ArgsError> {
        let mut args = Args {
            debug: false,
            noaction: false,
            verbose: 0,
            macros: Vec::new(),
            conf: PathBuf::from(proto::CONF_PATH),
            socket: env_socket
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(proto::SOCKET_PATH), PathBuf::from),
            role: None,
        };
        let mut i = 0;
        while i < argv.len() {
            let word = argv[i].to_str().ok_or(ArgsError::NotUtf8)?;
            i += 1;
            if word == "--" {
                break;
            }
            let Some(flags) = word.strip_prefix('-').filter(|f| !f.is_empty()) else {
                return Err(ArgsError::Extra(word.to_string()));
            };
            for (at, c) in flags.char_indices() {
                match c {
                    'd' => args.debug = true,
                    'n' => args.noaction = true,
                    'v' => args.verbose = args.verbose.saturating_add(1),
                    'D' | 'f' | 's' | 'P' => {
                        let rest = &flags[at + c.len_utf8()..];
                        let value = if !rest.is_empty() {
                            OsString::from(rest)
                        } else {
                            let v = argv.get(i).ok_or(ArgsError::MissingValue(c))?.clone();
                            i += 1;
                            v
                        };
                        args.set(c, value)?;
                        break;
                    }
                    other => return Err(ArgsError::Unknown(other)),
                }
            }
        }
        if let Some(extra) = argv.get(i) {
            return Err(ArgsError::Extra(extra.to_string_lossy().into_owned()));
        }
        Ok(args)
    }

    fn set(&mut self, opt: char, value: OsString) -> Result<(), ArgsError> {
        match opt {
            'D' => {
                let text = value.to_str().ok_or(ArgsError::NotUtf8)?;
                match vmconf::parse_define(text) {
                    Some((name, val)) if !name.is_empty() => self.macros.push((name, val)),
                    _ => return Err(ArgsError::BadMacro(text.to_string())),
                }
            }
            'f' => self.conf = PathBuf::from(value),
            's' => self.socket = PathBuf::from(value),
            'P' => {
                let text = value.to_str().ok_or(ArgsError::NotUtf8)?;
                self.role =
                    Some(Role::parse(text).ok_or_else(|| ArgsError::BadRole(text.to_string()))?);
            }
            _ => unreachable!("only value options reach set"),
        }
        Ok(())
    }

    /// The flags a child is started with so it logs like its parent.
    pub fn child_flags(&self) -> Vec<OsString> {
        let mut v = Vec::new();
        if self.debug {
            v.push("-d".into());
        }
        for _ in 0..self.verbose {
            v.push("-v".into());
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Args, ArgsError> {
        let argv: Vec<OsString> = words.iter().map(OsString::from).collect();
        Args::parse(&argv, None)
    }

    #[test]
    fn defaults_are_vmds_paths() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.conf, PathBuf::from("/etc/vm.conf"));
        assert_eq!(a.socket, PathBuf::from("/var/run/vmd.sock"));
        assert!(!a.debug && !a.noaction && a.verbose == 0 && a.role.is_none());
    }

    #[test]
    fn clustered_flags_and_attached_values() {
        let a = parse(&["-dvv", "-ffoo.conf", "-s", "/tmp/s", "-D", "a=b", "-Dc=d=e"]).unwrap();
        assert!(a.debug);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.conf, PathBuf::from("foo.conf"));
        assert_eq!(a.socket, PathBuf::from("/tmp/s"));
        assert_eq!(
            a.macros,
            vec![("a".into(), "b".into()), ("c=d".into(), "e".into())]
        );
    }

    #[test]
    fn socket_from_the_environment_unless_given() {
        let a = Args::parse(&[], Some("/run/x.sock".into())).unwrap();
        assert_eq!(a.socket, PathBuf::from("/run/x.sock"));
        let a = Args::parse(&["-s".into(), "/y".into()], Some("/run/x.sock".into())).unwrap();
        assert_eq!(a.socket, PathBuf::from("/y"));
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert_eq!(parse(&["-x"]), Err(ArgsError::Unknown('x')));
        assert_eq!(parse(&["-f"]), Err(ArgsError::MissingValue('f')));
        assert_eq!(
            parse(&["-D", "novalue"]),
            Err(ArgsError::BadMacro("novalue".into()))
        );
        assert_eq!(
            parse(&["-P", "priv2"]),
            Err(ArgsError::BadRole("priv2".into()))
        );
        assert_eq!(parse(&["extra"]), Err(ArgsError::Extra("extra".into())));
    }

    #[test]
    fn hidden_role_flag() {
        assert_eq!(parse(&["-P", "vmm", "-d"]).unwrap().role, Some(Role::Vmm));
        let a = parse(&["-dvv"]).unwrap();
        assert_eq!(
            a.child_flags(),
            vec![OsString::from("-d"), "-v".into(), "-v".into()]
        );
    }
}

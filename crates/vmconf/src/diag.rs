//! Diagnostics: errors and warnings with their `file:line` (parse.y's
//! `yyerror` and the warnings vmd prints while loading a file).

use std::fmt;

use thiserror::Error;

use crate::lex::LexError;
use crate::parse::ParseError;
use crate::validate::ValidateError;

/// Where in which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given or as written in `include`.
    pub file: String,
    /// 1-based line number.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Anything that makes a configuration unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The top file cannot be read.
    #[error("failed to open {path}: {reason}")]
    Open {
        /// The file name as given.
        path: String,
        /// strerror text.
        reason: String,
        /// The file does not exist (vmd runs with an empty configuration).
        not_found: bool,
    },
    /// A lexical error.
    #[error(transparent)]
    Lex(#[from] LexError),
    /// A grammar or value error.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// A consistency error across statements.
    #[error(transparent)]
    Validate(#[from] ValidateError),
}

/// One error, printed as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where, if the error belongs to a line.
    pub location: Option<Location>,
    /// What.
    pub error: ConfigError,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// Something suspicious that does not stop the configuration from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A macro that was defined but never expanded (vmd's wording).
    MacroNotUsed(String),
    /// A located warning.
    At(Location, WarningKind),
}

/// The located warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// A memory size that was not a whole number of MiB.
    SizeRounded(u64),
    /// An interface names a switch no `switch` block defines (it is ignored).
    UnknownSwitch {
        /// The VM.
        vm: String,
        /// The switch it names.
        switch: String,
    },
    /// An instance's parent is not defined before it in this configuration:
    /// it must already be known to the daemon.
    UnknownParent {
        /// The instance.
        vm: String,
        /// Its parent.
        parent: String,
    },
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::SizeRounded(mib) => write!(f, "size rounded to {mib} megabytes"),
            WarningKind::UnknownSwitch { vm, switch } => {
                write!(f, "vm \"{vm}\": switch \"{switch}\" is not defined")
            }
            WarningKind::UnknownParent { vm, parent } => write!(
                f,
                "vm \"{vm}\": instance parent \"{parent}\" is not defined before it"
            ),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::MacroNotUsed(name) => write!(f, "warning: macro '{name}' not used"),
            Warning::At(loc, kind) => write!(f, "{loc}: warning: {kind}"),
        }
    }
}

/// An error or a warning, in the order they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diag {
    /// Makes the configuration fail.
    Error(Diagnostic),
    /// Reported only.
    Warning(Warning),
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diag::Error(e) => e.fmt(f),
            Diag::Warning(w) => w.fmt(f),
        }
    }
}

/// A configuration that failed: every error found (and the warnings), in
/// order. Displays one `file:line: message` per error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors {
    /// Errors and warnings in the order they were found.
    pub diags: Vec<Diag>,
}

impl Errors {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diags.iter().filter_map(|d| match d {
            Diag::Error(e) => Some(e),
            Diag::Warning(_) => None,
        })
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Warning> {
        self.diags.iter().filter_map(|d| match d {
            Diag::Warning(w) => Some(w),
            Diag::Error(_) => None,
        })
    }

    /// True if the only problem is that the top file does not exist; vmd
    /// then runs with an empty configuration.
    pub fn is_not_found(&self) -> bool {
        let mut errors = self.errors();
        matches!(
            (errors.next(), errors.next()),
            (
                Some(Diagnostic {
                    error: ConfigError::Open {
                        not_found: true,
                        ..
                    },
                    ..
                }),
                None
            )
        )
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in self.errors() {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

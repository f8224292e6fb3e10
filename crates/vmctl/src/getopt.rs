//! POSIX `getopt(3)` for one command's arguments, as vmctl's `main.c` uses
//! it: clustered flags (`-cL`), attached or separate option arguments
//! (`-m1G`, `-m 1G`), `--` ends the options, and the first operand ends
//! them too (no permutation: `vmctl stop web -f` is a usage error, as on
//! OpenBSD).

/// What went wrong while scanning options; the messages are libc's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetoptError {
    /// An option letter that is not in the option string
    #[error("unknown option -- {0}")]
    Unknown(char),
    /// An option that takes an argument came last
    #[error("option requires an argument -- {0}")]
    MissingArgument(char),
}

/// One option found on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The option letter.
    pub letter: char,
    /// Its argument, for letters followed by `:` in the option string.
    pub arg: Option<String>,
}

/// Scans `args` (the command's arguments, without the command name) for
/// the options of `optstring` (`"b:cd:"`: `b` and `d` take an argument).
/// Returns the options in order and the operands left after them.
pub fn getopt(args: &[String], optstring: &str) -> Result<(Vec<Opt>, Vec<String>), GetoptError> {
    let mut opts = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let letters: Vec<char> = arg.chars().skip(1).collect();
        let mut j = 0;
        while j < letters.len() {
            let letter = letters[j];
            let takes_arg = match optstring.find(letter) {
                Some(pos) if letter != ':' => optstring[pos + letter.len_utf8()..].starts_with(':'),
                _ => return Err(GetoptError::Unknown(letter)),
            };
            if !takes_arg {
                opts.push(Opt { letter, arg: None });
                j += 1;
                continue;
            }
            let rest: String = letters[j + 1..].iter().collect();
            let value = if !rest.is_empty() {
                rest
            } else {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or(GetoptError::MissingArgument(letter))?
            };
            opts.push(Opt {
                letter,
                arg: Some(value),
            });
            break;
        }
        i += 1;
    }
    Ok((opts, args[i.min(args.len())..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn letters(opts: &[Opt]) -> String {
        opts.iter().map(|o| o.letter).collect()
    }

    #[test]
    fn clustered_flags_and_separate_argument() {
        let (opts, rest) = getopt(&args(&["-cL", "-m", "1G", "web"]), "cLm:").unwrap();
        assert_eq!(letters(&opts), "cLm");
        assert_eq!(opts[2].arg.as_deref(), Some("1G"));
        assert_eq!(rest, args(&["web"]));
    }

    #[test]
    fn attached_argument_ends_the_cluster() {
        let (opts, rest) = getopt(&args(&["-cm512M", "x"]), "cm:").unwrap();
        assert_eq!(letters(&opts), "cm");
        assert_eq!(opts[1].arg.as_deref(), Some("512M"));
        assert_eq!(rest, args(&["x"]));
    }

    #[test]
    fn first_operand_stops_scanning() {
        let (opts, rest) = getopt(&args(&["web", "-f"]), "fw").unwrap();
        assert!(opts.is_empty());
        assert_eq!(rest, args(&["web", "-f"]));
    }

    #[test]
    fn double_dash_ends_options_and_is_dropped() {
        let (opts, rest) = getopt(&args(&["-f", "--", "-a"]), "afw").unwrap();
        assert_eq!(letters(&opts), "f");
        assert_eq!(rest, args(&["-a"]));
    }

    #[test]
    fn lone_dash_is_an_operand() {
        let (opts, rest) = getopt(&args(&["-"]), "f").unwrap();
        assert!(opts.is_empty());
        assert_eq!(rest, args(&["-"]));
    }

    #[test]
    fn unknown_letter_is_reported_like_libc() {
        let err = getopt(&args(&["-x"]), "fw").unwrap_err();
        assert_eq!(err.to_string(), "unknown option -- x");
        // ':' is never an option letter even though it is in the string.
        assert_eq!(
            getopt(&args(&["-:"]), "m:").unwrap_err(),
            GetoptError::Unknown(':')
        );
    }

    #[test]
    fn missing_argument_is_reported_like_libc() {
        let err = getopt(&args(&["-c", "-m"]), "cm:").unwrap_err();
        assert_eq!(err.to_string(), "option requires an argument -- m");
    }

    #[test]
    fn option_argument_may_look_like_an_option() {
        let (opts, rest) = getopt(&args(&["-k", "-x", "vm"]), "k:").unwrap();
        assert_eq!(opts[0].arg.as_deref(), Some("-x"));
        assert_eq!(rest, args(&["vm"]));
    }
}

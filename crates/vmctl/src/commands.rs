//! The command table and each command's argument parsing (vmctl's
//! `main.c`): names matched by unambiguous prefix, usage lines, and what
//! every command asks of the daemon.

use std::path::{Path, PathBuf};

use proto::{LogLevel, ResetKind, VmTarget};

use crate::args::{parse_vmid, ArgError};
use crate::getopt::{getopt, GetoptError, Opt};
use crate::start::{parse_start, StartError, StartSpec};

/// The program name used in messages.
pub const PROG: &str = "vmctl";

/// One row of the command table.
pub struct Command {
    /// The full command name; any unambiguous prefix selects it.
    pub name: &'static str,
    /// The usage text after `vmctl [-v] NAME`.
    pub usage: &'static str,
    /// Reads the command's arguments (the words after its name).
    pub parse: fn(&'static Command, &[String]) -> Result<Parsed, CommandError>,
    /// Only root may run it (the daemon enforces this; the flag documents
    /// the table and is checked against the protocol in the tests).
    pub root_only: bool,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command").field("name", &self.name).finish()
    }
}

/// Every command, alphabetically, as vmctl lists them.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "console",
        usage: "id",
        parse: parse_console,
        root_only: false,
    },
    Command {
        name: "create",
        usage: "[-b base | -i disk] [-s size] disk",
        parse: parse_unsupported,
        root_only: false,
    },
    Command {
        name: "load",
        usage: "filename",
        parse: parse_load,
        root_only: true,
    },
    Command {
        name: "log",
        usage: "[brief | verbose]",
        parse: parse_log,
        root_only: true,
    },
    Command {
        name: "pause",
        usage: "id",
        parse: parse_pause,
        root_only: false,
    },
    Command {
        name: "receive",
        usage: "name",
        parse: parse_unsupported,
        root_only: false,
    },
    Command {
        name: "reload",
        usage: "",
        parse: parse_reload,
        root_only: true,
    },
    Command {
        name: "reset",
        usage: "[all | switches | vms]",
        parse: parse_reset,
        root_only: true,
    },
    Command {
        name: "send",
        usage: "id",
        parse: parse_unsupported,
        root_only: false,
    },
    Command {
        name: "show",
        usage: "[-jr] [id]",
        parse: parse_status,
        root_only: false,
    },
    Command {
        name: "start",
        usage: "[-cL] [-B device] [-b path] [-d disk] [-i count]\n\
                \t\t[-m size] [-n switch] [-r path] [-t name] [-C cpus]\n\
                \t\t[-I initrd] [-k cmdline] id | name",
        parse: parse_start_command,
        root_only: false,
    },
    Command {
        name: "status",
        usage: "[-jr] [id]",
        parse: parse_status,
        root_only: false,
    },
    Command {
        name: "stop",
        usage: "[-fw] [id | -a]",
        parse: parse_stop,
        root_only: false,
    },
    Command {
        name: "unpause",
        usage: "id",
        parse: parse_unpause,
        root_only: false,
    },
    Command {
        name: "wait",
        usage: "id",
        parse: parse_wait,
        root_only: false,
    },
];

/// What a command asks for once its arguments are read.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a VM, then perhaps attach to its console.
    Start(Box<StartSpec>),
    /// Stop one VM, or every running VM when `target` is `None`.
    Stop {
        /// The VM; `None` is `-a`.
        target: Option<VmTarget>,
        /// `-f`: end it without asking the guest.
        force: bool,
        /// `-w`: wait until it has stopped.
        wait: bool,
    },
    /// Wait until a VM has stopped.
    Wait(VmTarget),
    /// Pause a VM.
    Pause(VmTarget),
    /// Resume a VM.
    Unpause(VmTarget),
    /// List VMs.
    Status {
        /// Only this VM.
        target: Option<VmTarget>,
        /// `-r`: running VMs only.
        running_only: bool,
        /// `-j` / `--json`: JSON instead of columns.
        json: bool,
    },
    /// Attach to a VM's console.
    Console(VmTarget),
    /// Load a configuration file.
    Load(PathBuf),
    /// Reload the configuration.
    Reload,
    /// Purge switches and/or VMs.
    Reset(ResetKind),
    /// Change the daemon's log level.
    Log(LogLevel),
    /// A command of vmctl this port does not have yet.
    NotSupported(&'static str),
}

impl Action {
    /// Whether the action talks to the daemon.
    pub fn needs_daemon(&self) -> bool {
        !matches!(self, Action::NotSupported(_))
    }
}

/// A parsed command: its action and the warnings vmctl prints on the way
/// (`size rounded to 1 megabytes`).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// What to do.
    pub action: Action,
    /// Lines to print (after `vmctl: `) before doing it.
    pub warnings: Vec<String>,
}

impl Parsed {
    fn new(action: Action) -> Self {
        Parsed {
            action,
            warnings: Vec::new(),
        }
    }
}

/// Why a command line was refused. [`CommandError::report`] gives the
/// exact text vmctl prints on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No command, or a bad global option: the general usage
    #[error("usage")]
    Usage,
    /// A prefix that matches several commands
    #[error("ambiguous argument: {0}")]
    Ambiguous(String),
    /// A word that matches no command
    #[error("unknown argument: {0}")]
    Unknown(String),
    /// Wrong arguments for a command: its usage
    #[error("usage of {}", .0.name)]
    CommandUsage(&'static Command),
    /// A bad option letter or a missing option argument, then the usage
    #[error("{err}")]
    Getopt {
        /// The command.
        command: &'static Command,
        /// What getopt found.
        err: GetoptError,
    },
    /// An operand that is not a VM id or name
    #[error("invalid id: {word}")]
    InvalidId {
        /// The operand.
        word: String,
        /// Why, if vmctl says it first.
        reason: ArgError,
    },
    /// A bad `start` argument
    #[error(transparent)]
    Start(Box<StartError>),
}

impl CommandError {
    /// Everything vmctl writes to stderr for this error, newline ended.
    pub fn report(&self) -> String {
        match self {
            CommandError::Usage => general_usage(),
            CommandError::Ambiguous(_) | CommandError::Unknown(_) => {
                format!("{self}\n{}", general_usage())
            }
            CommandError::CommandUsage(command) => command_usage(command),
            CommandError::Getopt { command, err } => {
                format!("{PROG}: {err}\n{}", command_usage(command))
            }
            CommandError::InvalidId { reason, .. } if !reason.is_silent() => {
                format!("{PROG}: {reason}\n{PROG}: {self}\n")
            }
            CommandError::InvalidId { .. } => format!("{PROG}: {self}\n"),
            CommandError::Start(err) => err.report(),
        }
    }
}

/// The general usage: the synopsis, then every command.
pub fn general_usage() -> String {
    let mut text = format!("usage:\t{PROG} [-v] [-s socket] command [arg ...]\n");
    for command in COMMANDS {
        text.push_str(&format!("\t{PROG} {} {}\n", command.name, command.usage));
    }
    text
}

/// One command's usage.
pub fn command_usage(command: &Command) -> String {
    format!("usage:\t{PROG} [-v] {} {}\n", command.name, command.usage)
}

/// Finds a command by name or unambiguous prefix.
pub fn lookup(word: &str) -> Result<&'static Command, CommandError> {
    let mut found: Option<&'static Command> = None;
    for command in COMMANDS {
        if command.name.starts_with(word) {
            if found.is_some() {
                return Err(CommandError::Ambiguous(word.to_string()));
            }
            found = Some(command);
        }
    }
    found.ok_or_else(|| CommandError::Unknown(word.to_string()))
}

/// Finds the command named by `argv[0]` and reads its arguments.
pub fn parse(argv: &[String]) -> Result<Parsed, CommandError> {
    let (word, args) = argv.split_first().ok_or(CommandError::Usage)?;
    let command = lookup(word)?;
    (command.parse)(command, args)
}

/// getopt with vmctl's reaction to errors (message, then usage).
pub(crate) fn options(
    command: &'static Command,
    args: &[String],
    optstring: &str,
) -> Result<(Vec<Opt>, Vec<String>), CommandError> {
    getopt(args, optstring).map_err(|err| CommandError::Getopt { command, err })
}

/// The single VM operand of `console`, `pause`, `unpause`, `wait`.
fn single_id(command: &'static Command, args: &[String]) -> Result<VmTarget, CommandError> {
    match args {
        [word] => parse_vmid(word).map_err(|reason| CommandError::InvalidId {
            word: word.clone(),
            reason,
        }),
        _ => Err(CommandError::CommandUsage(command)),
    }
}

fn parse_console(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    single_id(command, args).map(|t| Parsed::new(Action::Console(t)))
}

fn parse_pause(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    single_id(command, args).map(|t| Parsed::new(Action::Pause(t)))
}

fn parse_unpause(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    single_id(command, args).map(|t| Parsed::new(Action::Unpause(t)))
}

fn parse_wait(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    single_id(command, args).map(|t| Parsed::new(Action::Wait(t)))
}

fn parse_unsupported(command: &'static Command, _args: &[String]) -> Result<Parsed, CommandError> {
    Ok(Parsed::new(Action::NotSupported(command.name)))
}

fn parse_load(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    let [file] = args else {
        return Err(CommandError::CommandUsage(command));
    };
    // The daemon opens the file from its own working directory: send an
    // absolute path so `vmctl load ./vm.conf` means what the user sees.
    let path = Path::new(file);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    Ok(Parsed::new(Action::Load(path)))
}

fn parse_reload(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    if !args.is_empty() {
        return Err(CommandError::CommandUsage(command));
    }
    Ok(Parsed::new(Action::Reload))
}

fn parse_reset(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    let kind = match args {
        [] => ResetKind::All,
        [word] if word.eq_ignore_ascii_case("all") => ResetKind::All,
        [word] if word.eq_ignore_ascii_case("vms") => ResetKind::Vms,
        [word] if word.eq_ignore_ascii_case("switches") => ResetKind::Switches,
        _ => return Err(CommandError::CommandUsage(command)),
    };
    Ok(Parsed::new(Action::Reset(kind)))
}

fn parse_log(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    // vmctl takes any prefix of the two words, in either case.
    let is_prefix_of = |full: &str, word: &str| {
        full.len() >= word.len() && full[..word.len()].eq_ignore_ascii_case(word)
    };
    let level = match args {
        [word] if is_prefix_of("brief", word) => LogLevel::Brief,
        [word] if is_prefix_of("verbose", word) => LogLevel::Verbose,
        _ => return Err(CommandError::CommandUsage(command)),
    };
    Ok(Parsed::new(Action::Log(level)))
}

fn parse_status(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    // `--json` is our long spelling of -j, accepted where options are.
    let mut json = false;
    let mut rest: Vec<String> = Vec::with_capacity(args.len());
    let mut in_options = true;
    for arg in args {
        if in_options && arg == "--json" {
            json = true;
            continue;
        }
        if !arg.starts_with('-') || arg == "--" {
            in_options = false;
        }
        rest.push(arg.clone());
    }
    let (opts, operands) = options(command, &rest, "jr")?;
    let running_only = opts.iter().any(|o| o.letter == 'r');
    json |= opts.iter().any(|o| o.letter == 'j');
    let target = match operands.as_slice() {
        [] => None,
        [word] => Some(parse_vmid(word).map_err(|reason| CommandError::InvalidId {
            word: word.clone(),
            reason,
        })?),
        _ => return Err(CommandError::CommandUsage(command)),
    };
    Ok(Parsed::new(Action::Status {
        target,
        running_only,
        json,
    }))
}

fn parse_stop(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    let (opts, operands) = options(command, args, "afw")?;
    let all = opts.iter().any(|o| o.letter == 'a');
    let force = opts.iter().any(|o| o.letter == 'f');
    let wait = opts.iter().any(|o| o.letter == 'w');
    let target = match (operands.as_slice(), all) {
        ([], true) => None,
        ([word], false) => Some(parse_vmid(word).map_err(|reason| CommandError::InvalidId {
            word: word.clone(),
            reason,
        })?),
        _ => return Err(CommandError::CommandUsage(command)),
    };
    Ok(Parsed::new(Action::Stop {
        target,
        force,
        wait,
    }))
}

fn parse_start_command(command: &'static Command, args: &[String]) -> Result<Parsed, CommandError> {
    let (spec, warnings) = parse_start(command, args)?;
    Ok(Parsed {
        action: Action::Start(Box::new(spec)),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn action(list: &[&str]) -> Action {
        parse(&argv(list)).unwrap().action
    }

    fn report(list: &[&str]) -> String {
        parse(&argv(list)).unwrap_err().report()
    }

    #[test]
    fn table_is_sorted_and_names_are_unique() {
        let names: Vec<_> = COMMANDS.iter().map(|c| c.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn full_names_select_their_command() {
        for command in COMMANDS {
            assert_eq!(lookup(command.name).unwrap().name, command.name);
        }
    }

    #[test]
    fn unambiguous_prefixes_select_a_command() {
        assert_eq!(lookup("stat").unwrap().name, "status");
        assert_eq!(lookup("sto").unwrap().name, "stop");
        assert_eq!(lookup("sh").unwrap().name, "show");
        assert!(lookup("c").is_err(), "console and create");
        assert_eq!(lookup("con").unwrap().name, "console");
        assert_eq!(lookup("w").unwrap().name, "wait");
        assert_eq!(lookup("u").unwrap().name, "unpause");
        assert_eq!(lookup("rel").unwrap().name, "reload");
        assert_eq!(lookup("loa").unwrap().name, "load");
    }

    #[test]
    fn ambiguous_prefixes_are_refused_with_the_general_usage() {
        for word in ["s", "st", "sta", "re", "lo", "c", ""] {
            let text = report(&[word]);
            assert!(
                text.starts_with(&format!("ambiguous argument: {word}\nusage:\tvmctl [-v]")),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_words_are_refused_with_the_general_usage() {
        let text = report(&["frobnicate"]);
        assert!(text.starts_with("unknown argument: frobnicate\nusage:\t"));
        // The general usage lists every command with its usage.
        assert!(text.contains("\tvmctl stop [-fw] [id | -a]\n"));
        assert!(text.contains("\tvmctl log [brief | verbose]\n"));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("\tvmctl ")).count(),
            15
        );
    }

    #[test]
    fn usage_lines_are_vmctls() {
        let usage = |name| command_usage(lookup(name).unwrap());
        assert_eq!(usage("stop"), "usage:\tvmctl [-v] stop [-fw] [id | -a]\n");
        assert_eq!(usage("console"), "usage:\tvmctl [-v] console id\n");
        assert_eq!(
            usage("reset"),
            "usage:\tvmctl [-v] reset [all | switches | vms]\n"
        );
        assert_eq!(usage("load"), "usage:\tvmctl [-v] load filename\n");
        assert_eq!(usage("status"), "usage:\tvmctl [-v] status [-jr] [id]\n");
        assert_eq!(
            usage("start"),
            "usage:\tvmctl [-v] start [-cL] [-B device] [-b path] [-d disk] [-i count]\n\
             \t\t[-m size] [-n switch] [-r path] [-t name] [-C cpus]\n\
             \t\t[-I initrd] [-k cmdline] id | name\n"
        );
    }

    #[test]
    fn root_only_flags_match_the_protocol() {
        use proto::Request;
        let requests = [
            ("load", Request::Load("/x".into())),
            ("reload", Request::Reload),
            ("reset", Request::Reset(ResetKind::All)),
            ("log", Request::Log(LogLevel::Brief)),
            ("status", Request::Status { target: None }),
            ("show", Request::Status { target: None }),
            ("console", Request::Console(VmTarget::Id(1))),
            ("pause", Request::Pause(VmTarget::Id(1))),
            ("unpause", Request::Unpause(VmTarget::Id(1))),
            ("wait", Request::Wait(VmTarget::Id(1))),
            (
                "stop",
                Request::Stop {
                    target: VmTarget::Id(1),
                    force: false,
                    wait: false,
                },
            ),
            (
                "start",
                Request::Start(proto::StartRequest {
                    conf: Box::new(vmconf::VmConf::new("x")),
                }),
            ),
        ];
        for (name, request) in requests {
            assert_eq!(
                lookup(name).unwrap().root_only,
                request.root_only(),
                "{name}"
            );
        }
    }

    #[test]
    fn id_commands_take_exactly_one_id() {
        assert_eq!(action(&["console", "3"]), Action::Console(VmTarget::Id(3)));
        assert_eq!(
            action(&["pause", "web"]),
            Action::Pause(VmTarget::Name("web".into()))
        );
        assert_eq!(
            action(&["unp", "web"]),
            Action::Unpause(VmTarget::Name("web".into()))
        );
        assert_eq!(action(&["wait", "7"]), Action::Wait(VmTarget::Id(7)));
        assert_eq!(report(&["console"]), "usage:\tvmctl [-v] console id\n");
        assert_eq!(report(&["wait", "a", "b"]), "usage:\tvmctl [-v] wait id\n");
    }

    #[test]
    fn bad_ids_are_reported_with_their_reason() {
        let long = "x".repeat(64);
        assert_eq!(
            report(&["pause", &long]),
            format!("vmctl: name too long\nvmctl: invalid id: {long}\n")
        );
        assert_eq!(report(&["pause", "-x"]), "vmctl: invalid id: -x\n");
    }

    #[test]
    fn stop_flags_and_all() {
        assert_eq!(
            action(&["stop", "web"]),
            Action::Stop {
                target: Some(VmTarget::Name("web".into())),
                force: false,
                wait: false
            }
        );
        assert_eq!(
            action(&["stop", "-fw", "2"]),
            Action::Stop {
                target: Some(VmTarget::Id(2)),
                force: true,
                wait: true
            }
        );
        assert_eq!(
            action(&["stop", "-a", "-f"]),
            Action::Stop {
                target: None,
                force: true,
                wait: false
            }
        );
    }

    #[test]
    fn stop_needs_exactly_one_of_id_and_all() {
        let usage = "usage:\tvmctl [-v] stop [-fw] [id | -a]\n";
        assert_eq!(report(&["stop"]), usage);
        assert_eq!(report(&["stop", "-a", "web"]), usage);
        assert_eq!(report(&["stop", "-f"]), usage);
        // Options after the operand are not options (no permutation).
        assert_eq!(report(&["stop", "web", "-f"]), usage);
        assert_eq!(
            report(&["stop", "-x", "web"]),
            format!("vmctl: unknown option -- x\n{usage}")
        );
    }

    #[test]
    fn status_options_and_json_spellings() {
        let status = |target, running_only, json| Action::Status {
            target,
            running_only,
            json,
        };
        assert_eq!(action(&["status"]), status(None, false, false));
        assert_eq!(action(&["status", "-r"]), status(None, true, false));
        assert_eq!(
            action(&["show", "-r", "4"]),
            status(Some(VmTarget::Id(4)), true, false)
        );
        assert_eq!(action(&["status", "-j"]), status(None, false, true));
        assert_eq!(
            action(&["status", "--json", "-r"]),
            status(None, true, true)
        );
        assert_eq!(
            action(&["stat", "-rj", "web"]),
            status(Some(VmTarget::Name("web".into())), true, true)
        );
        assert_eq!(
            report(&["status", "a", "b"]),
            "usage:\tvmctl [-v] status [-jr] [id]\n"
        );
        // After the operand --json is an operand, as getopt would have it.
        assert_eq!(
            report(&["status", "a", "--json"]),
            "usage:\tvmctl [-v] status [-jr] [id]\n"
        );
    }

    #[test]
    fn reset_modes() {
        assert_eq!(action(&["reset"]), Action::Reset(ResetKind::All));
        assert_eq!(action(&["reset", "all"]), Action::Reset(ResetKind::All));
        assert_eq!(action(&["reset", "VMS"]), Action::Reset(ResetKind::Vms));
        assert_eq!(
            action(&["reset", "switches"]),
            Action::Reset(ResetKind::Switches)
        );
        assert_eq!(
            report(&["reset", "other"]),
            "usage:\tvmctl [-v] reset [all | switches | vms]\n"
        );
    }

    #[test]
    fn log_levels_accept_prefixes() {
        assert_eq!(action(&["log", "verbose"]), Action::Log(LogLevel::Verbose));
        assert_eq!(action(&["log", "v"]), Action::Log(LogLevel::Verbose));
        assert_eq!(action(&["log", "brief"]), Action::Log(LogLevel::Brief));
        assert_eq!(action(&["log", "BR"]), Action::Log(LogLevel::Brief));
        assert_eq!(
            report(&["log"]),
            "usage:\tvmctl [-v] log [brief | verbose]\n"
        );
        assert_eq!(
            report(&["log", "loud"]),
            "usage:\tvmctl [-v] log [brief | verbose]\n"
        );
        assert_eq!(
            report(&["log", "briefly"]),
            "usage:\tvmctl [-v] log [brief | verbose]\n"
        );
    }

    #[test]
    fn load_makes_the_path_absolute_and_reload_takes_nothing() {
        assert_eq!(
            action(&["load", "/etc/vm.conf"]),
            Action::Load("/etc/vm.conf".into())
        );
        let Action::Load(path) = action(&["load", "vm.conf"]) else {
            panic!("not a load");
        };
        assert!(path.is_absolute());
        assert!(path.ends_with("vm.conf"));
        assert_eq!(report(&["load"]), "usage:\tvmctl [-v] load filename\n");
        assert_eq!(action(&["reload"]), Action::Reload);
        assert_eq!(report(&["reload", "x"]), "usage:\tvmctl [-v] reload \n");
    }

    #[test]
    fn unsupported_commands_are_named_and_need_no_daemon() {
        for name in ["create", "send", "receive"] {
            let parsed = parse(&argv(&[name, "x"])).unwrap();
            assert_eq!(parsed.action, Action::NotSupported(name));
            assert!(!parsed.action.needs_daemon());
        }
        assert!(action(&["reload"]).needs_daemon());
    }
}

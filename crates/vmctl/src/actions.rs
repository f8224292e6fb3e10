//! Carrying out a parsed command against the daemon and printing what
//! vmctl prints (vmctl's `vmctl.c`: `vm_start_complete`,
//! `terminate_vm_complete`, `pause_vm_complete`, `add_info`, ...).

use std::io::Write;

use proto::{codes, Request, Response, StartRequest, VmInfo, VmTarget, VMD_VM_STOP_INVALID};

use crate::client::{ClientError, Transport};
use crate::commands::{Action, PROG};
use crate::start::StartSpec;
use crate::status::{format_json, format_table, Filter};

/// Where output goes: vmctl prints listings on stdout, everything else on
/// stderr.
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit with this status.
    Exit(i32),
    /// Attach to the console on this tty (`console`, `start -c`).
    Console(String),
}

/// The line for a response that does not fit the request.
const UNEXPECTED: &str = "unexpected response received from vmd";

/// Carries out `action`, talking to the daemon through `transport`.
/// Errors writing to stdout/stderr are ignored, as vmctl's stdio does.
pub fn execute(
    action: &Action,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<Outcome, ClientError> {
    match action {
        Action::Start(spec) => start(spec, transport, io),
        Action::Stop {
            target: Some(target),
            force,
            wait,
        } => stop(target, *force, *wait, transport, io).map(Outcome::Exit),
        Action::Stop {
            target: None,
            force,
            wait,
        } => stop_all(*force, *wait, transport, io).map(Outcome::Exit),
        Action::Wait(target) => wait(target, transport, io).map(Outcome::Exit),
        Action::Pause(target) => pause(target, true, transport, io).map(Outcome::Exit),
        Action::Unpause(target) => pause(target, false, transport, io).map(Outcome::Exit),
        Action::Status {
            target,
            running_only,
            json,
        } => {
            let filter = Filter {
                target: target.as_ref(),
                running_only: *running_only,
            };
            status(&filter, *json, transport, io).map(Outcome::Exit)
        }
        Action::Console(target) => console(target, transport, io),
        Action::Load(path) => simple(&Request::Load(path.clone()), transport, io),
        Action::Reload => simple(&Request::Reload, transport, io),
        Action::Reset(kind) => simple(&Request::Reset(*kind), transport, io),
        Action::Log(level) => simple(&Request::Log(*level), transport, io),
        Action::NotSupported(name) => {
            let _ = writeln!(io.err, "{PROG}: {name}: not yet supported");
            Ok(Outcome::Exit(1))
        }
    }
}

/// `vmctl: MESSAGE` on stderr, and the failure status.
fn fail(io: &mut Io<'_>, message: &str) -> i32 {
    let _ = writeln!(io.err, "{PROG}: {message}");
    1
}

/// Asks for the rows of one VM or all.
fn list(
    target: Option<&VmTarget>,
    transport: &mut dyn Transport,
) -> Result<Result<Vec<VmInfo>, i32>, ClientError> {
    Ok(
        match transport.call(&Request::Status {
            target: target.cloned(),
        })? {
            Response::VmInfo(rows) => Ok(rows),
            // Nothing by that id or name: an empty listing.
            Response::Error { code } if code == libc::ENOENT => Ok(Vec::new()),
            Response::Error { code } => Err(code),
            _ => Err(0),
        },
    )
}

fn start(
    spec: &StartSpec,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<Outcome, ClientError> {
    let mut conf = spec.conf.clone();
    if let VmTarget::Id(id) = spec.target {
        // The protocol starts VMs by name: find the name of this id.
        match list(Some(&spec.target), transport)? {
            Ok(rows) => match rows.into_iter().find(|vm| vm.id == id) {
                Some(vm) => conf.name = vm.name,
                None => {
                    let text =
                        format!("start vm command failed: {}", codes::strerror(libc::ENOENT));
                    return Ok(Outcome::Exit(fail(io, &text)));
                }
            },
            Err(0) => return Ok(Outcome::Exit(fail(io, UNEXPECTED))),
            Err(code) => {
                let text = format!("start vm command failed: {}", codes::describe(code));
                return Ok(Outcome::Exit(fail(io, &text)));
            }
        }
    }
    let code = match transport.call(&Request::Start(StartRequest {
        conf: Box::new(conf),
    }))? {
        Response::StartOk { tty, .. } if spec.console => return Ok(Outcome::Console(tty)),
        Response::StartOk { id, tty } => {
            let _ = writeln!(io.err, "{PROG}: started vm {id} successfully, tty {tty}");
            0
        }
        Response::Error { code } => match codes::vmd_message(code) {
            Some(message) => fail(io, message),
            None => fail(
                io,
                &format!("start vm command failed: {}", codes::strerror(code)),
            ),
        },
        _ => fail(io, UNEXPECTED),
    };
    Ok(Outcome::Exit(code))
}

/// The rest of a `stopping vm NAME: ` or `waiting for vm NAME: ` line for
/// an error code, as vmctl's `terminate_vm_complete` words it.
fn stop_failure(code: i32) -> String {
    match code {
        VMD_VM_STOP_INVALID => "cannot stop vm that is not running".to_string(),
        libc::ENOENT => "vm not found".to_string(),
        libc::EINTR => "interrupted call".to_string(),
        _ => format!("failed: {}", codes::describe(code)),
    }
}

/// `stopping vm NAME: ` (by name) or `stopping vm: ` (by id).
fn vm_prefix(verb: &str, target: &VmTarget) -> String {
    match target {
        VmTarget::Name(name) => format!("{verb} {name}: "),
        _ => format!("{verb}: "),
    }
}

fn stop(
    target: &VmTarget,
    force: bool,
    wait: bool,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<i32, ClientError> {
    let _ = write!(io.err, "{}", vm_prefix("stopping vm", target));
    let _ = io.err.flush();
    let response = transport.call(&Request::Stop {
        target: target.clone(),
        force,
        wait,
    })?;
    let (line, code) = match response {
        // -f without -w: the daemon answers once it is ending the VM.
        Response::StopRequested { id } | Response::Terminated { id } if force && !wait => {
            (format!("forced to terminate vm {id}"), 0)
        }
        Response::StopRequested { id } => (format!("requested to shutdown vm {id}"), 0),
        Response::Terminated { id } => (format!("terminated vm {id}"), 0),
        Response::Error { code } => (stop_failure(code), 1),
        _ => (UNEXPECTED.to_string(), 1),
    };
    let _ = writeln!(io.err, "{line}");
    Ok(code)
}

fn stop_all(
    force: bool,
    wait: bool,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<i32, ClientError> {
    let rows = match list(None, transport)? {
        Ok(rows) => rows,
        Err(0) => return Ok(fail(io, UNEXPECTED)),
        Err(code) => {
            return Ok(fail(
                io,
                &format!("command failed: {}", codes::describe(code)),
            ))
        }
    };
    let mut status = 0;
    let running = Filter {
        target: None,
        running_only: true,
    };
    for vm in rows.iter().filter(|vm| running.matches(vm)) {
        let target = VmTarget::Name(vm.name.clone());
        status |= stop(&target, force, wait, transport, io)?;
    }
    Ok(status)
}

fn wait(
    target: &VmTarget,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<i32, ClientError> {
    let _ = write!(io.err, "{}", vm_prefix("waiting for vm", target));
    let _ = io.err.flush();
    let (line, code) = match transport.call(&Request::Wait(target.clone()))? {
        Response::Terminated { id } => (format!("terminated vm {id}"), 0),
        Response::Error { code } => (stop_failure(code), 1),
        _ => (UNEXPECTED.to_string(), 1),
    };
    let _ = writeln!(io.err, "{line}");
    Ok(code)
}

fn pause(
    target: &VmTarget,
    pause: bool,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<i32, ClientError> {
    let request = if pause {
        Request::Pause(target.clone())
    } else {
        Request::Unpause(target.clone())
    };
    let verb = if pause { "pause" } else { "unpause" };
    Ok(match transport.call(&request)? {
        Response::Paused { id } if pause => {
            let _ = writeln!(io.err, "{PROG}: paused vm {id} successfully");
            0
        }
        Response::Unpaused { id } if !pause => {
            let _ = writeln!(io.err, "{PROG}: unpaused vm {id} successfully");
            0
        }
        Response::Error { code } => fail(
            io,
            &format!("{verb} vm command failed: {}", codes::describe(code)),
        ),
        _ => fail(io, UNEXPECTED),
    })
}

fn status(
    filter: &Filter<'_>,
    json: bool,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<i32, ClientError> {
    let rows = match list(filter.target, transport)? {
        Ok(rows) => rows,
        Err(0) => return Ok(fail(io, UNEXPECTED)),
        Err(code) => {
            return Ok(fail(
                io,
                &format!("command failed: {}", codes::describe(code)),
            ))
        }
    };
    let (text, count) = if json {
        format_json(&rows, filter)
    } else {
        format_table(&rows, filter)
    };
    let _ = io.out.write_all(text.as_bytes());
    let _ = io.out.flush();
    Ok(if count == 0 { 1 } else { 0 })
}

fn console(
    target: &VmTarget,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<Outcome, ClientError> {
    Ok(match transport.call(&Request::Console(target.clone()))? {
        Response::Console { tty, .. } => Outcome::Console(tty),
        // No such VM, or one that is not running (it has no tty): vmctl
        // finds no console in the status listing.
        Response::Error { code } if code == libc::ENOENT || code == libc::EINVAL => {
            Outcome::Exit(fail(io, "console not found"))
        }
        Response::Error { code } => Outcome::Exit(fail(
            io,
            &format!("failed to open the console: {}", codes::describe(code)),
        )),
        _ => Outcome::Exit(fail(io, UNEXPECTED)),
    })
}

/// Requests answered by a plain OK (load, reload, reset, log).
fn simple(
    request: &Request,
    transport: &mut dyn Transport,
    io: &mut Io<'_>,
) -> Result<Outcome, ClientError> {
    Ok(Outcome::Exit(match transport.call(request)? {
        Response::Ok => 0,
        Response::Error { code } => fail(io, &format!("command failed: {}", codes::describe(code))),
        _ => fail(io, UNEXPECTED),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::parse;
    use proto::{VmState, VMD_CDROM_MISSING, VMD_DISK_MISSING, VMD_PARENT_INVALID};
    use std::collections::VecDeque;

    /// A daemon that answers from a script and records what it was asked.
    struct Script {
        answers: VecDeque<Response>,
        asked: Vec<Request>,
    }

    impl Transport for Script {
        fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
            self.asked.push(request.clone());
            self.answers.pop_front().ok_or(ClientError::Closed)
        }
    }

    struct Run {
        outcome: Outcome,
        out: String,
        err: String,
        asked: Vec<Request>,
    }

    fn run(argv: &[&str], answers: Vec<Response>) -> Run {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let parsed = parse(&argv).unwrap();
        let mut script = Script {
            answers: answers.into(),
            asked: Vec::new(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = execute(
            &parsed.action,
            &mut script,
            &mut Io {
                out: &mut out,
                err: &mut err,
            },
        )
        .unwrap();
        Run {
            outcome,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
            asked: script.asked,
        }
    }

    fn vm(id: u32, name: &str, running: bool) -> VmInfo {
        VmInfo {
            id,
            pid: running.then_some(1000 + id as i32),
            vcpus: 1,
            max_mem: 512 << 20,
            cur_mem: if running { 512 << 20 } else { 0 },
            tty: running.then(|| format!("/dev/pts/{id}")),
            owner: "root".into(),
            state: if running {
                VmState::Running
            } else {
                VmState::Stopped
            },
            name: name.into(),
        }
    }

    #[test]
    fn start_success_prints_id_and_tty() {
        let r = run(
            &["start", "web"],
            vec![Response::StartOk {
                id: 4,
                tty: "/dev/pts/7".into(),
            }],
        );
        assert_eq!(r.outcome, Outcome::Exit(0));
        assert_eq!(r.err, "vmctl: started vm 4 successfully, tty /dev/pts/7\n");
        assert_eq!(
            r.asked,
            [Request::Start(StartRequest {
                conf: Box::new(vmconf::VmConf::new("web"))
            })]
        );
    }

    #[test]
    fn start_with_console_attaches_silently() {
        let r = run(
            &["start", "-c", "web"],
            vec![Response::StartOk {
                id: 4,
                tty: "/dev/pts/7".into(),
            }],
        );
        assert_eq!(r.outcome, Outcome::Console("/dev/pts/7".into()));
        assert_eq!(r.err, "");
    }

    #[test]
    fn start_errors_use_vmctls_messages() {
        let cases = [
            (VMD_DISK_MISSING, "vmctl: could not open disk image(s)\n"),
            (
                VMD_CDROM_MISSING,
                "vmctl: could not find specified iso image\n",
            ),
            (VMD_PARENT_INVALID, "vmctl: invalid template\n"),
            (
                libc::EALREADY,
                "vmctl: start vm command failed: Operation already in progress\n",
            ),
            (
                libc::EPERM,
                "vmctl: start vm command failed: Operation not permitted\n",
            ),
        ];
        for (code, text) in cases {
            let r = run(&["start", "web"], vec![Response::Error { code }]);
            assert_eq!(r.outcome, Outcome::Exit(1));
            assert_eq!(r.err, text);
        }
    }

    #[test]
    fn start_by_id_looks_up_the_name() {
        let r = run(
            &["start", "2"],
            vec![
                Response::VmInfo(vec![vm(2, "db", false)]),
                Response::StartOk {
                    id: 2,
                    tty: "/dev/pts/1".into(),
                },
            ],
        );
        assert_eq!(r.outcome, Outcome::Exit(0));
        assert_eq!(
            r.asked[1],
            Request::Start(StartRequest {
                conf: Box::new(vmconf::VmConf::new("db"))
            })
        );
        let r = run(&["start", "9"], vec![Response::VmInfo(vec![])]);
        assert_eq!(r.outcome, Outcome::Exit(1));
        assert_eq!(
            r.err,
            "vmctl: start vm command failed: No such file or directory\n"
        );
        assert_eq!(r.asked.len(), 1);
    }

    #[test]
    fn stop_messages() {
        let r = run(&["stop", "web"], vec![Response::StopRequested { id: 3 }]);
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (
                Outcome::Exit(0),
                "stopping vm web: requested to shutdown vm 3\n"
            )
        );
        let r = run(&["stop", "-f", "3"], vec![Response::Terminated { id: 3 }]);
        assert_eq!(r.err, "stopping vm: forced to terminate vm 3\n");
        assert_eq!(
            r.asked,
            [Request::Stop {
                target: VmTarget::Id(3),
                force: true,
                wait: false
            }]
        );
        let r = run(
            &["stop", "-f", "web"],
            vec![Response::StopRequested { id: 3 }],
        );
        assert_eq!(r.err, "stopping vm web: forced to terminate vm 3\n");
        let r = run(&["stop", "-w", "web"], vec![Response::Terminated { id: 3 }]);
        assert_eq!(r.err, "stopping vm web: terminated vm 3\n");
        let r = run(
            &["stop", "-fw", "web"],
            vec![Response::Terminated { id: 3 }],
        );
        assert_eq!(r.err, "stopping vm web: terminated vm 3\n");
    }

    #[test]
    fn stop_errors() {
        let cases = [
            (libc::ENOENT, "stopping vm web: vm not found\n"),
            (
                VMD_VM_STOP_INVALID,
                "stopping vm web: cannot stop vm that is not running\n",
            ),
            (
                libc::EPERM,
                "stopping vm web: failed: Operation not permitted\n",
            ),
            (
                libc::EALREADY,
                "stopping vm web: failed: Operation already in progress\n",
            ),
        ];
        for (code, text) in cases {
            let r = run(&["stop", "web"], vec![Response::Error { code }]);
            assert_eq!((r.outcome, r.err.as_str()), (Outcome::Exit(1), text));
        }
        let r = run(&["stop", "web"], vec![Response::Ok]);
        assert_eq!(
            r.err,
            "stopping vm web: unexpected response received from vmd\n"
        );
    }

    #[test]
    fn stop_all_stops_each_running_vm_by_name() {
        let r = run(
            &["stop", "-a"],
            vec![
                Response::VmInfo(vec![vm(1, "a", true), vm(2, "b", false), vm(3, "c", true)]),
                Response::StopRequested { id: 1 },
                Response::Error { code: libc::EPERM },
            ],
        );
        assert_eq!(r.outcome, Outcome::Exit(1));
        assert_eq!(
            r.err,
            "stopping vm a: requested to shutdown vm 1\nstopping vm c: failed: Operation not permitted\n"
        );
        assert_eq!(r.asked.len(), 3);
        assert_eq!(
            r.asked[2],
            Request::Stop {
                target: VmTarget::Name("c".into()),
                force: false,
                wait: false
            }
        );
        let r = run(
            &["stop", "-a"],
            vec![Response::VmInfo(vec![vm(2, "b", false)])],
        );
        assert_eq!((r.outcome, r.err.as_str()), (Outcome::Exit(0), ""));
    }

    #[test]
    fn wait_messages() {
        let r = run(&["wait", "web"], vec![Response::Terminated { id: 5 }]);
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (Outcome::Exit(0), "waiting for vm web: terminated vm 5\n")
        );
        let r = run(&["wait", "5"], vec![Response::Error { code: libc::ENOENT }]);
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (Outcome::Exit(1), "waiting for vm: vm not found\n")
        );
    }

    #[test]
    fn pause_and_unpause_messages() {
        let r = run(&["pause", "web"], vec![Response::Paused { id: 2 }]);
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (Outcome::Exit(0), "vmctl: paused vm 2 successfully\n")
        );
        let r = run(&["unpause", "web"], vec![Response::Unpaused { id: 2 }]);
        assert_eq!(r.err, "vmctl: unpaused vm 2 successfully\n");
        let r = run(
            &["pause", "web"],
            vec![Response::Error { code: libc::ENOENT }],
        );
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (
                Outcome::Exit(1),
                "vmctl: pause vm command failed: No such file or directory\n"
            )
        );
        let r = run(&["unpause", "web"], vec![Response::Paused { id: 2 }]);
        assert_eq!(r.err, "vmctl: unexpected response received from vmd\n");
    }

    #[test]
    fn status_prints_columns_on_stdout_and_fails_when_empty() {
        let r = run(&["status"], vec![Response::VmInfo(vec![vm(1, "a", true)])]);
        assert_eq!(r.outcome, Outcome::Exit(0));
        assert_eq!(
            r.out,
            format!(
                "{}\n    1  1001     1    512M    512M   pts/1         root  running a\n",
                crate::status::HEADER
            )
        );
        let r = run(
            &["status", "-r"],
            vec![Response::VmInfo(vec![vm(2, "b", false)])],
        );
        assert_eq!(r.outcome, Outcome::Exit(1));
        assert_eq!(r.out, format!("{}\n", crate::status::HEADER));
        assert_eq!(r.err, "");
        let r = run(
            &["status", "nosuch"],
            vec![Response::Error { code: libc::ENOENT }],
        );
        assert_eq!(r.outcome, Outcome::Exit(1));
        assert_eq!(
            r.asked,
            [Request::Status {
                target: Some(VmTarget::Name("nosuch".into()))
            }]
        );
    }

    #[test]
    fn status_json() {
        let r = run(
            &["status", "--json"],
            vec![Response::VmInfo(vec![vm(1, "a", true)])],
        );
        assert_eq!(r.outcome, Outcome::Exit(0));
        let value: serde_json::Value = serde_json::from_str(&r.out).unwrap();
        assert_eq!(value[0]["name"], "a");
        assert_eq!(value[0]["tty"], "/dev/pts/1");
    }

    #[test]
    fn console_answers() {
        let r = run(
            &["console", "web"],
            vec![Response::Console {
                id: 1,
                tty: "/dev/pts/4".into(),
            }],
        );
        assert_eq!(r.outcome, Outcome::Console("/dev/pts/4".into()));
        let r = run(
            &["console", "web"],
            vec![Response::Error { code: libc::ENOENT }],
        );
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (Outcome::Exit(1), "vmctl: console not found\n")
        );
        let r = run(
            &["console", "web"],
            vec![Response::Error { code: libc::EINVAL }],
        );
        assert_eq!(r.err, "vmctl: console not found\n");
        let r = run(
            &["console", "web"],
            vec![Response::Error { code: libc::EPERM }],
        );
        assert_eq!(
            r.err,
            "vmctl: failed to open the console: Operation not permitted\n"
        );
    }

    #[test]
    fn root_only_commands_print_the_daemons_refusal() {
        for argv in [
            &["load", "/etc/vm.conf"][..],
            &["reload"],
            &["reset", "vms"],
            &["log", "verbose"],
        ] {
            let r = run(argv, vec![Response::Error { code: libc::EPERM }]);
            assert_eq!(
                (r.outcome, r.err.as_str()),
                (
                    Outcome::Exit(1),
                    "vmctl: command failed: Operation not permitted\n"
                ),
                "{argv:?}"
            );
            let r = run(argv, vec![Response::Ok]);
            assert_eq!((r.outcome, r.err.as_str()), (Outcome::Exit(0), ""));
        }
    }

    #[test]
    fn unsupported_commands_say_so_and_fail() {
        let r = run(&["create", "-s", "1G", "disk.img"], vec![]);
        assert_eq!(
            (r.outcome, r.err.as_str()),
            (Outcome::Exit(1), "vmctl: create: not yet supported\n")
        );
        assert!(r.asked.is_empty());
    }

    #[test]
    fn a_closed_connection_is_an_error() {
        let argv: Vec<String> = vec!["reload".into()];
        let parsed = parse(&argv).unwrap();
        let mut script = Script {
            answers: VecDeque::new(),
            asked: Vec::new(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = execute(
            &parsed.action,
            &mut script,
            &mut Io {
                out: &mut out,
                err: &mut err,
            },
        );
        assert!(matches!(result, Err(ClientError::Closed)));
    }
}

//! The control channel: what vmctl asks and what vmd answers (vmd's
//! `IMSG_VMDOP_*` requests and responses of `vmd.h`, seen from a client).
//!
//! One request gets exactly one response on the same connection; a client
//! may send several requests one after the other. The daemon identifies the
//! client by the socket's peer credentials: nothing in a request names a
//! user.

use serde::{Deserialize, Serialize};

/// Which VM a request is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmTarget {
    /// The VM with this id (ids start at 1).
    Id(u32),
    /// The VM with this name.
    Name(String),
    /// Every VM the client may act on (`vmctl stop -a`).
    All,
}

impl std::fmt::Display for VmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmTarget::Id(id) => write!(f, "{id}"),
            VmTarget::Name(name) => f.write_str(name),
            VmTarget::All => f.write_str("all"),
        }
    }
}

/// `vmctl start`: a VM to register and start. A configuration naming only
/// an existing VM starts it as configured; anything else describes a new
/// VM or an instance (`instance_of`) of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The VM, as vm.conf would describe it; paths are absolute.
    pub conf: Box<vmconf::VmConf>,
}

/// What `vmctl reset` purges (vmd's `IMSG_CTL_RESET` levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetKind {
    /// Switches and VMs.
    All,
    /// Switches only.
    Switches,
    /// VMs only.
    Vms,
}

/// `vmctl log`: the daemon's log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    /// Informational messages only.
    Brief,
    /// Debug messages too.
    Verbose,
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Register and start a VM → [`Response::StartOk`].
    Start(StartRequest),
    /// Stop a VM: the ACPI power button, or `force` to end it at once →
    /// [`Response::StopRequested`] once the request reached the VM; with
    /// `wait`, [`Response::Terminated`] once it has stopped instead. With
    /// [`VmTarget::All`] the reply is [`Response::Ok`] once every request
    /// was sent (with `wait`: once every VM has stopped).
    Stop {
        /// The VM.
        target: VmTarget,
        /// End the VM without asking the guest.
        force: bool,
        /// Reply only once the VM has stopped.
        wait: bool,
    },
    /// Reply once the VM has stopped → [`Response::Terminated`].
    Wait(VmTarget),
    /// Pause a running VM → [`Response::Paused`].
    Pause(VmTarget),
    /// Resume a paused VM → [`Response::Unpaused`].
    Unpause(VmTarget),
    /// List one VM or all → [`Response::VmInfo`].
    Status {
        /// `None` lists every VM.
        target: Option<VmTarget>,
    },
    /// The path of a VM's console tty, after a permission check →
    /// [`Response::Console`].
    Console(VmTarget),
    /// Add the VMs and switches of a configuration file (root only) →
    /// [`Response::Ok`].
    Load(std::path::PathBuf),
    /// Remove stopped VMs and re-read the configuration file (root only)
    /// → [`Response::Ok`].
    Reload,
    /// Purge switches, VMs or both (root only) → [`Response::Ok`].
    Reset(ResetKind),
    /// Set the daemon's log level (root only) → [`Response::Ok`].
    Log(LogLevel),
}

impl Request {
    /// Whether only root may send this request (vmd's control.c refuses
    /// the others for non-root peers).
    pub fn root_only(&self) -> bool {
        matches!(
            self,
            Request::Load(_) | Request::Reload | Request::Reset(_) | Request::Log(_)
        )
    }

    /// A short name for logs ("denied request start from uid 1000").
    pub fn name(&self) -> &'static str {
        match self {
            Request::Start(_) => "start",
            Request::Stop { .. } => "stop",
            Request::Wait(_) => "wait",
            Request::Pause(_) => "pause",
            Request::Unpause(_) => "unpause",
            Request::Status { .. } => "status",
            Request::Console(_) => "console",
            Request::Load(_) => "load",
            Request::Reload => "reload",
            Request::Reset(_) => "reset",
            Request::Log(_) => "log",
        }
    }
}

/// The state of a VM as `vmctl status` shows it. vmd keeps state bits and
/// shows the first that is set in this order: paused, waiting, stopping,
/// running, else stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Running.
    Running,
    /// Not running.
    Stopped,
    /// Running, with its vCPUs paused.
    Paused,
    /// Enabled in the configuration and waiting for its staggered start.
    Waiting,
    /// Asked to shut down, not yet stopped.
    Stopping,
}

impl VmState {
    /// vmctl's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Stopped => "stopped",
            VmState::Paused => "paused",
            VmState::Waiting => "waiting",
            VmState::Stopping => "stopping",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `vmctl status` (vmd's `vmop_info_result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The VM's id.
    pub id: u32,
    /// The pid of its `vm` process, if running.
    pub pid: Option<i32>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Configured memory, in bytes.
    pub max_mem: u64,
    /// Memory in use, in bytes (the configured size while running, 0
    /// when stopped).
    pub cur_mem: u64,
    /// The console tty path (`/dev/pts/N`), if it has one.
    pub tty: Option<String>,
    /// `user` or `user:group` of the VM's owner (the user who started a
    /// running VM), names where known, numbers otherwise.
    pub owner: String,
    /// The VM's state.
    pub state: VmState,
    /// The VM's name.
    pub name: String,
}

/// The daemon's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done (load, reload, reset, log, stop -a).
    Ok,
    /// The VM started.
    StartOk {
        /// Its id.
        id: u32,
        /// Its console tty path.
        tty: String,
    },
    /// The stop request reached the VM: its guest was asked to power off
    /// (the ACPI power button), or, forced, it is being ended.
    StopRequested {
        /// The VM's id.
        id: u32,
    },
    /// The VM has stopped (`stop -w`, `wait`).
    Terminated {
        /// The VM's id.
        id: u32,
    },
    /// The VM is paused.
    Paused {
        /// The VM's id.
        id: u32,
    },
    /// The VM runs again.
    Unpaused {
        /// The VM's id.
        id: u32,
    },
    /// The VMs asked for, in id order.
    VmInfo(Vec<VmInfo>),
    /// The console tty of a VM the client may use.
    Console {
        /// The VM's id.
        id: u32,
        /// The tty path (`/dev/pts/N`).
        tty: String,
    },
    /// The request failed: an errno value or one of vmd's codes (see
    /// [`crate::codes`]).
    Error {
        /// The result code.
        code: i32,
    },
}

// Control messages never carry descriptors: a client's files are opened
// by the parent, and the console is a path the client opens itself.
impl crate::internal::FdCount for Request {}
impl crate::internal::FdCount for Response {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode, FrameError, MAX_FRAME, VERSION};

    fn all_requests() -> Vec<Request> {
        let mut conf = vmconf::VmConf::new("web");
        conf.boot = Some("/bsd.rd".into());
        conf.memory = Some(1 << 30);
        vec![
            Request::Start(StartRequest {
                conf: Box::new(conf),
            }),
            Request::Stop {
                target: VmTarget::Id(3),
                force: true,
                wait: false,
            },
            Request::Stop {
                target: VmTarget::All,
                force: false,
                wait: true,
            },
            Request::Wait(VmTarget::Name("web".into())),
            Request::Pause(VmTarget::Id(1)),
            Request::Unpause(VmTarget::Id(1)),
            Request::Status { target: None },
            Request::Status {
                target: Some(VmTarget::Name("x".into())),
            },
            Request::Console(VmTarget::Id(9)),
            Request::Load("/etc/vm.conf".into()),
            Request::Reload,
            Request::Reset(ResetKind::Switches),
            Request::Log(LogLevel::Verbose),
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::StartOk {
                id: 1,
                tty: "/dev/pts/3".into(),
            },
            Response::StopRequested { id: 2 },
            Response::Terminated { id: 2 },
            Response::Paused { id: 4 },
            Response::Unpaused { id: 4 },
            Response::VmInfo(vec![VmInfo {
                id: 1,
                pid: Some(1234),
                vcpus: 2,
                max_mem: 512 << 20,
                cur_mem: 512 << 20,
                tty: Some("/dev/pts/3".into()),
                owner: "alice:staff".into(),
                state: VmState::Paused,
                name: "web".into(),
            }]),
            Response::Console {
                id: 1,
                tty: "/dev/pts/3".into(),
            },
            Response::Error { code: 1007 },
        ]
    }

    #[test]
    fn every_request_round_trips() {
        for req in all_requests() {
            let packet = encode(&req).unwrap();
            assert_eq!(packet[0], VERSION);
            assert_eq!(decode::<Request>(&packet).unwrap(), req);
        }
    }

    #[test]
    fn every_response_round_trips() {
        for resp in all_responses() {
            let packet = encode(&resp).unwrap();
            assert_eq!(decode::<Response>(&packet).unwrap(), resp);
        }
    }

    #[test]
    fn empty_packet_is_an_error() {
        assert!(matches!(decode::<Request>(&[]), Err(FrameError::Empty)));
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut packet = encode(&Request::Reload).unwrap();
        packet[0] = VERSION + 1;
        assert!(matches!(
            decode::<Request>(&packet),
            Err(FrameError::Version { found }) if found == VERSION + 1
        ));
    }

    #[test]
    fn unknown_message_type_is_malformed() {
        // Variant indexes past the last request do not exist.
        assert!(matches!(
            decode::<Request>(&[VERSION, 200]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_message_is_malformed() {
        let packet = encode(&Request::Wait(VmTarget::Name("a-long-name".into()))).unwrap();
        for len in 1..packet.len() {
            assert!(
                decode::<Request>(&packet[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut packet = encode(&Request::Reload).unwrap();
        packet.push(0);
        assert!(matches!(
            decode::<Request>(&packet),
            Err(FrameError::Trailing(1))
        ));
    }

    #[test]
    fn oversized_packets_are_refused_both_ways() {
        let huge = Request::Load("x".repeat(MAX_FRAME).into());
        assert!(matches!(encode(&huge), Err(FrameError::TooLarge(_))));
        let packet = vec![VERSION; MAX_FRAME + 1];
        assert!(matches!(
            decode::<Request>(&packet),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn string_length_past_the_packet_is_malformed() {
        // Wait(Name(..)) with a length prefix claiming far more bytes than
        // the packet holds.
        let packet = [VERSION, 2, 1, 0xff, 0xff, 0x03, b'a'];
        assert!(decode::<Request>(&packet).is_err());
    }

    #[test]
    fn random_garbage_never_panics() {
        // A small deterministic generator: no dependency, same bytes each run.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed >> ((i % 8) * 8)) as u8 ^ i as u8)
                .collect();
            let mut packet = vec![VERSION];
            packet.extend_from_slice(&bytes);
            let _ = decode::<Request>(&packet);
            let _ = decode::<Response>(&packet);
        }
    }

    #[test]
    fn root_only_requests_are_the_four_of_vmd() {
        let root_only: Vec<_> = all_requests()
            .into_iter()
            .filter(Request::root_only)
            .map(|r| r.name())
            .collect();
        assert_eq!(root_only, ["load", "reload", "reset", "log"]);
    }

    #[test]
    fn states_print_as_vmctl() {
        assert_eq!(VmState::Stopping.to_string(), "stopping");
        assert_eq!(VmState::Waiting.as_str(), "waiting");
    }
}

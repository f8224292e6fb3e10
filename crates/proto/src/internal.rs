//! The daemon's internal channels (vmd's imsgs between its processes,
//! `proc.c`): parent ⇄ control, parent ⇄ vmm, vmm ⇄ vm.
//!
//! Each direction of each channel has its own enum, so a process can only
//! decode what its peer may send; anything else is malformed and the
//! receiving child exits (crash-only). Messages that carry file
//! descriptors say how many ([`FdCount`]); the receiver refuses a packet
//! whose descriptor count does not match.

use serde::{Deserialize, Serialize};

use crate::control::{Request, Response};

/// How many file descriptors travel with a message.
pub trait FdCount {
    /// The number of `SCM_RIGHTS` descriptors this message carries.
    fn fd_count(&self) -> usize {
        0
    }
}

/// A control client's identity, from `SO_PEERCRED` on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCred {
    /// The client's user id.
    pub uid: u32,
    /// The client's primary group id.
    pub gid: u32,
    /// The client's process id.
    pub pid: i32,
}

/// control → parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlToParent {
    /// A client's request, with the identity the kernel vouches for.
    Request {
        /// The connection (never reused while the daemon runs).
        client: u64,
        /// The client's credentials.
        peer: PeerCred,
        /// What it asks.
        req: Request,
    },
    /// The client hung up: forget what it waits for.
    Gone {
        /// The connection.
        client: u64,
    },
}

impl FdCount for ControlToParent {}

/// parent → control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToControl {
    /// The answer to a client's request (dropped if it has gone).
    Reply {
        /// The connection.
        client: u64,
        /// The answer.
        resp: Response,
    },
    /// The new log level (`vmctl log`).
    Verbose(u8),
}

impl FdCount for ParentToControl {}

/// Everything a `vm` process needs to build its VM, except the files,
/// which travel as descriptors in this order: the console tty, the
/// kernel, the initrd if `initrd`, then `disks` disk images, then the
/// cdrom image if `cdrom`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// The VM's id in the parent's registry.
    pub id: u32,
    /// The VM's name.
    pub name: String,
    /// Guest memory, in bytes.
    pub memory: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// The kernel command line.
    pub cmdline: String,
    /// Whether an initrd descriptor follows the kernel.
    pub initrd: bool,
    /// How many disk descriptors follow.
    pub disks: u8,
    /// Whether a cdrom descriptor comes last.
    pub cdrom: bool,
}

impl VmSpec {
    /// The number of descriptors that go with this spec.
    pub fn fd_count(&self) -> usize {
        2 + usize::from(self.initrd) + usize::from(self.disks) + usize::from(self.cdrom)
    }
}

/// parent → vmm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToVmm {
    /// Spawn a `vm` process for this VM (descriptors per [`VmSpec`]).
    Start(VmSpec),
    /// Stop a VM: the power button, or `force` to end it.
    Stop {
        /// The VM's id.
        id: u32,
        /// End it without asking the guest.
        force: bool,
    },
    /// Pause a VM's vCPUs.
    Pause {
        /// The VM's id.
        id: u32,
    },
    /// Resume a VM's vCPUs.
    Unpause {
        /// The VM's id.
        id: u32,
    },
    /// The new log level.
    Verbose(u8),
}

impl FdCount for ParentToVmm {
    fn fd_count(&self) -> usize {
        match self {
            ParentToVmm::Start(spec) => spec.fd_count(),
            _ => 0,
        }
    }
}

/// How a `vm` process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code: 0 powered off, `EAGAIN` wants a restart
    /// (the guest rebooted), anything else failed.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// vmm → parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmmToParent {
    /// The VM was built and runs in process `pid`.
    Started {
        /// The VM's id.
        id: u32,
        /// Its `vm` process.
        pid: i32,
    },
    /// The VM could not start (errno value or vmd code).
    StartFailed {
        /// The VM's id.
        id: u32,
        /// Why.
        code: i32,
    },
    /// The result of a [`ParentToVmm::Stop`]: 0 when the request reached
    /// the VM.
    StopResult {
        /// The VM's id.
        id: u32,
        /// 0 or an errno value.
        code: i32,
    },
    /// The result of a [`ParentToVmm::Pause`].
    PauseResult {
        /// The VM's id.
        id: u32,
        /// 0 or an errno value.
        code: i32,
    },
    /// The result of a [`ParentToVmm::Unpause`].
    UnpauseResult {
        /// The VM's id.
        id: u32,
        /// 0 or an errno value.
        code: i32,
    },
    /// The VM's process has ended (vmd's `TERMINATE_VM_EVENT`).
    Exited {
        /// The VM's id.
        id: u32,
        /// How.
        status: ExitStatus,
    },
}

impl FdCount for VmmToParent {}

/// vmm → vm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmmToVm {
    /// Build and run this VM (descriptors per [`VmSpec`]); sent once,
    /// first.
    Start(VmSpec),
    /// Pause the vCPUs.
    Pause,
    /// Resume the vCPUs.
    Unpause,
    /// Press the ACPI power button (graceful stop).
    PowerButton,
    /// End the VM now.
    Terminate,
}

impl FdCount for VmmToVm {
    fn fd_count(&self) -> usize {
        match self {
            VmmToVm::Start(spec) => spec.fd_count(),
            _ => 0,
        }
    }
}

/// vm → vmm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmToVmm {
    /// The VM was built and its vCPUs run.
    Running,
    /// The VM could not be built (errno value); the process exits next.
    Failed {
        /// Why.
        code: i32,
    },
    /// The result of [`VmmToVm::Pause`].
    PauseResult {
        /// 0 or an errno value.
        code: i32,
    },
    /// The result of [`VmmToVm::Unpause`].
    UnpauseResult {
        /// 0 or an errno value.
        code: i32,
    },
}

impl FdCount for VmToVmm {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode, encode};

    fn spec() -> VmSpec {
        VmSpec {
            id: 7,
            name: "web".into(),
            memory: 64 << 20,
            vcpus: 2,
            cmdline: "console=ttyS0".into(),
            initrd: true,
            disks: 2,
            cdrom: false,
        }
    }

    #[test]
    fn start_carries_tty_kernel_initrd_and_disks() {
        assert_eq!(ParentToVmm::Start(spec()).fd_count(), 5);
        assert_eq!(VmmToVm::Start(spec()).fd_count(), 5);
        assert_eq!(ParentToVmm::Pause { id: 1 }.fd_count(), 0);
    }

    #[test]
    fn internal_messages_round_trip() {
        let msgs = vec![
            ParentToVmm::Start(spec()),
            ParentToVmm::Stop { id: 1, force: true },
            ParentToVmm::Verbose(2),
        ];
        for m in msgs {
            assert_eq!(decode::<ParentToVmm>(&encode(&m).unwrap()).unwrap(), m);
        }
        let m = VmmToParent::Exited {
            id: 3,
            status: ExitStatus::Code(libc::EAGAIN),
        };
        assert_eq!(decode::<VmmToParent>(&encode(&m).unwrap()).unwrap(), m);
        let m = ControlToParent::Request {
            client: 9,
            peer: PeerCred {
                uid: 1000,
                gid: 1000,
                pid: 42,
            },
            req: Request::Reload,
        };
        assert_eq!(decode::<ControlToParent>(&encode(&m).unwrap()).unwrap(), m);
    }
}

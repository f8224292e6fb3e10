//! The `vm` process's side of privilege separation (vmd's `vm.c`
//! `vm_main` and `vm_dispatch_vmm`): receive the VM's description and
//! descriptors from vmm, build the VM with the runtime in [`crate::vm`],
//! run it, and serve vmm's pause/unpause/stop requests on a thread
//! through the runtime's [`crate::vm::VmHandle`]. The exit status tells
//! vmm how the VM ended (0 powered off, `EAGAIN` rebooted, 1 failed).

use std::fs::File;
use std::os::fd::OwnedFd;

use privsep::{Channel, ChannelError};
use proto::internal::{VmSpec, VmToVmm, VmmToVm};

use crate::vm::{Console, Vm, VmConfig, VmHandle};

/// Why the vm process could not run its VM.
#[derive(Debug, thiserror::Error)]
pub enum VmProcError {
    /// vmm's first message was not a valid start
    #[error("bad start message from vmm")]
    Start(#[source] ChannelError),
    /// The first message was something other than a start
    #[error("unexpected first message from vmm")]
    NotStart,
    /// The runtime refused the configuration
    #[error("could not create the vm")]
    Create(#[source] crate::vm::Error),
    /// The vm's seccomp allow-list could not be installed
    #[error("could not confine the vm process")]
    Confine(#[source] privsep::sandbox::SandboxError),
}

/// Builds the runtime's configuration from a spec and its descriptors
/// (tty, kernel, initrd?, disks..., cdrom?), as [`VmSpec`] orders them.
pub fn config_from(spec: &VmSpec, fds: Vec<OwnedFd>) -> Option<VmConfig> {
    if fds.len() != spec.fd_count() {
        return None;
    }
    let mut it = fds.into_iter();
    let tty = it.next()?;
    let kernel = File::from(it.next()?);
    let initrd = if spec.initrd {
        Some(File::from(it.next()?))
    } else {
        None
    };
    let disks = (0..spec.disks)
        .map(|_| it.next().map(File::from))
        .collect::<Option<Vec<_>>>()?;
    // The runtime has no CD-ROM yet: a cdrom descriptor, if any, is
    // closed unused here.
    Some(VmConfig {
        name: spec.name.clone(),
        memory: spec.memory,
        vcpus: spec.vcpus,
        kernel,
        initrd,
        cmdline: spec.cmdline.clone(),
        disks,
        console: Console::Fd(tty),
    })
}

/// The errno value vmd reports for a runtime failure.
fn errno_of(err: &crate::vm::Error) -> i32 {
    use crate::vm::Error;
    match err {
        Error::Memory(_) => libc::ENOMEM,
        Error::Boot(_) | Error::Vcpus { .. } | Error::DisksUnsupported => libc::EINVAL,
        _ => libc::EIO,
    }
}

/// Runs the vm role: returns the process's exit status.
/// `kvm` is `/dev/kvm`, as the parent opened it.
pub fn main(mut chan: Channel, kvm: OwnedFd) -> Result<i32, VmProcError> {
    let (msg, fds) = chan.recv::<VmmToVm>().map_err(VmProcError::Start)?;
    let VmmToVm::Start(spec) = msg else {
        return Err(VmProcError::NotStart);
    };
    let Some(cfg) = config_from(&spec, fds) else {
        let _ = chan.send(&VmToVmm::Failed { code: libc::EINVAL }, &[]);
        return Err(VmProcError::NotStart);
    };
    let (vm, handle) = match Vm::new_with_kvm(cfg, Some(kvm)) {
        Ok(v) => v,
        Err(e) => {
            let _ = chan.send(&VmToVmm::Failed { code: errno_of(&e) }, &[]);
            return Err(VmProcError::Create(e));
        }
    };
    // Everything is opened and mapped: from here on, every thread (the
    // RTC's, already started, included) runs under the vm's allow-list.
    if let Err(e) = privsep::sandbox::confine_vm() {
        let _ = chan.send(&VmToVmm::Failed { code: libc::EPERM }, &[]);
        return Err(VmProcError::Confine(e));
    }
    if chan.send(&VmToVmm::Running, &[]).is_err() {
        return Ok(1);
    }
    tracing::debug!("{}: vm {} running", spec.name, spec.id);
    let name = spec.name.clone();
    std::thread::Builder::new()
        .name("vmm-channel".into())
        .spawn(move || serve(chan, handle, name))
        .map_err(|_| VmProcError::NotStart)?;
    let outcome = vm.run();
    tracing::debug!("{}: vm ended: {outcome:?}", spec.name);
    Ok(outcome.exit_code())
}

/// Serves vmm's requests until the channel closes. A closed or misbehaving
/// vmm ends the VM: nobody would be left to report to.
fn serve(mut chan: Channel, handle: VmHandle, name: String) {
    loop {
        let msg = match chan.recv_msg::<VmmToVm>() {
            Ok(m) => m,
            Err(ChannelError::Closed) => {
                tracing::debug!("{name}: vmm has gone, ending the vm");
                handle.terminate();
                return;
            }
            Err(e) => {
                tracing::warn!("{name}: bad message from vmm: {e}; ending the vm");
                handle.terminate();
                return;
            }
        };
        let reply = match msg {
            VmmToVm::Pause => Some(VmToVmm::PauseResult {
                code: settled(|| handle.pause()),
            }),
            VmmToVm::Unpause => Some(VmToVmm::UnpauseResult {
                code: settled(|| handle.resume()),
            }),
            VmmToVm::PowerButton => {
                handle.power_button();
                None
            }
            VmmToVm::Terminate => {
                handle.terminate();
                None
            }
            VmmToVm::Start(_) => {
                tracing::warn!("{name}: second start message from vmm; ending the vm");
                handle.terminate();
                return;
            }
        };
        if let Some(r) = reply {
            if chan.send(&r, &[]).is_err() {
                handle.terminate();
                return;
            }
        }
    }
}

/// Runs a pause or resume, giving a VM that is still starting its vCPU
/// threads (vmm reports it running as soon as it is built) up to a second
/// to get there. 0 on success, `EINVAL` otherwise.
fn settled(op: impl Fn() -> Result<(), crate::vm::Error>) -> i32 {
    for _ in 0..200 {
        match op() {
            Ok(()) => return 0,
            Err(crate::vm::Error::NotRunning) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(_) => return libc::EINVAL,
        }
    }
    libc::EINVAL
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn file(text: &str) -> OwnedFd {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.rewind().unwrap();
        f.into()
    }

    fn spec(initrd: bool, disks: u8, cdrom: bool) -> VmSpec {
        VmSpec {
            id: 1,
            name: "t".into(),
            memory: 32 << 20,
            vcpus: 2,
            cmdline: "console=ttyS0".into(),
            initrd,
            disks,
            cdrom,
        }
    }

    fn text(mut f: &File) -> String {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn descriptors_map_to_tty_kernel_initrd_disks_in_order() {
        let fds = ["tty", "kernel", "initrd", "d0", "d1", "cd"]
            .into_iter()
            .map(file)
            .collect();
        let cfg = config_from(&spec(true, 2, true), fds).unwrap();
        assert_eq!(text(&cfg.kernel), "kernel");
        assert_eq!(text(cfg.initrd.as_ref().unwrap()), "initrd");
        let disks: Vec<String> = cfg.disks.iter().map(text).collect();
        assert_eq!(disks, ["d0", "d1"]);
        assert_eq!((cfg.memory, cfg.vcpus), (32 << 20, 2));
        assert!(matches!(cfg.console, Console::Fd(_)));
    }

    #[test]
    fn a_wrong_number_of_descriptors_is_refused() {
        let fds = ["tty", "kernel"].into_iter().map(file).collect();
        assert!(config_from(&spec(true, 0, false), fds).is_none());
        let fds = ["tty", "kernel", "extra"].into_iter().map(file).collect();
        assert!(config_from(&spec(false, 0, false), fds).is_none());
    }
}

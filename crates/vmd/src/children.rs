//! Entry points of the re-executed children (the `run` functions of vmd's
//! `proc.c` table): each takes its inherited descriptors, drops its
//! privileges and enters its loop. Descriptor 3 is the channel to the
//! parent; 4 is the listening socket (control) or `/dev/kvm` (vmm, vm).

use privsep::exec::{inherited, parent_channel, FIRST_EXTRA_FD};
use privsep::{Listener, Role};

use crate::args::Args;

/// Runs child `role`; the process's exit status on return.
pub fn run_child(role: Role, args: &Args) -> anyhow::Result<i32> {
    let chan = parent_channel()?;
    match role {
        Role::Control => {
            let listener = Listener::from_fd(inherited(FIRST_EXTRA_FD)?);
            let user = privsep::drop_privileges()?;
            tracing::debug!("control: running as {}", user.name);
            privsep::sandbox::confine_control()?;
            crate::control::Control::new(chan, listener).run()?;
            Ok(0)
        }
        Role::Vmm => {
            let kvm = inherited(FIRST_EXTRA_FD)?;
            let exe = std::fs::read_link("/proc/self/exe")?;
            let user = privsep::drop_privileges()?;
            tracing::debug!("vmm: running as {}", user.name);
            if !privsep::sandbox::confine_vmm(&exe)? {
                tracing::debug!("vmm: Landlock is not available on this kernel");
            }
            crate::vmm::Vmm::new(chan, kvm, args.child_flags())?.run()?;
            Ok(0)
        }
        Role::Vm => {
            // vmm's filter applies already: report what it refuses.
            privsep::sandbox::report_violations()?;
            // Started by vmm, so already unprivileged; drop anyway if not.
            if nix::unistd::geteuid().is_root() {
                privsep::drop_privileges()?;
            }
            privsep::user::set_no_new_privs()?;
            let kvm = inherited(FIRST_EXTRA_FD)?;
            Ok(crate::vm_proc::main(chan, kvm)?)
        }
    }
}

/// Ignores SIGINT and SIGHUP: a child ends when the parent tells it, or
/// when its channel to the parent closes.
pub fn ignore_terminal_signals() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal
        // context.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

//! The VMMs compared and their command lines: our `vm-run`, QEMU/KVM with
//! `-M q35` and with `-M microvm`, all on the same guest files, kernel
//! command line, vCPU count and memory size. No vmd counterpart.

use std::path::{Path, PathBuf};

/// The VMMs the harness knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Our foreground runner.
    #[value(name = "vm-run")]
    VmRun,
    /// QEMU/KVM, q35 machine.
    #[value(name = "qemu-q35")]
    QemuQ35,
    /// QEMU/KVM, microvm machine.
    #[value(name = "qemu-microvm")]
    QemuMicrovm,
}

impl Kind {
    /// The name used in tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::VmRun => "vm-run",
            Kind::QemuQ35 => "qemu-q35",
            Kind::QemuMicrovm => "qemu-microvm",
        }
    }
}

/// What every contender boots.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    /// No initrd when `None`.
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub mem_mib: u64,
    pub cpus: u32,
}

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Invocation {
    /// The command as one shell-like line, for the record.
    pub fn display(&self) -> String {
        let mut line = self.program.display().to_string();
        for a in &self.args {
            if a.contains(' ') || a.is_empty() {
                line.push_str(&format!(" '{a}'"));
            } else {
                line.push(' ');
                line.push_str(a);
            }
        }
        line
    }
}

/// The command that boots `guest` with VMM `kind` found at `program`.
pub fn invocation(kind: Kind, program: &Path, guest: &Guest) -> Invocation {
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = match kind {
        Kind::VmRun => vec![
            "-m".into(),
            format!("{}M", guest.mem_mib),
            "-C".into(),
            guest.cpus.to_string(),
            "-b".into(),
            path(&guest.kernel),
            "-k".into(),
            guest.cmdline.clone(),
        ],
        Kind::QemuQ35 | Kind::QemuMicrovm => {
            let machine = if kind == Kind::QemuQ35 {
                "q35"
            } else {
                "microvm"
            };
            [
                "-accel",
                "kvm",
                "-cpu",
                "host",
                "-M",
                machine,
                "-smp",
                &guest.cpus.to_string(),
                "-m",
                &format!("{}M", guest.mem_mib),
                "-nodefaults",
                "-no-user-config",
                "-no-reboot",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-kernel",
                &path(&guest.kernel),
                "-append",
                &guest.cmdline,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        }
    };
    if let Some(initrd) = &guest.initrd {
        let flag = if kind == Kind::VmRun { "-I" } else { "-initrd" };
        args.extend([flag.to_string(), path(initrd)]);
    }
    Invocation {
        program: program.to_path_buf(),
        args,
    }
}

/// Finds `program` as a shell would: a path with a slash as is, otherwise
/// in `$PATH`. `None` when there is no such executable file.
pub fn resolve(program: &Path, path_var: Option<&str>) -> Option<PathBuf> {
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return is_exe(program).then(|| program.to_path_buf());
    }
    path_var?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_exe(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Guest {
        Guest {
            kernel: "/g/vmlinux".into(),
            initrd: Some("/g/initramfs.cpio.gz".into()),
            cmdline: "console=ttyS0 quiet vmd.actions=poweroff".into(),
            mem_mib: 256,
            cpus: 1,
        }
    }

    #[test]
    fn vm_run_gets_the_vmctl_style_flags() {
        let inv = invocation(Kind::VmRun, Path::new("/b/vm-run"), &guest());
        assert_eq!(
            inv.args,
            [
                "-m",
                "256M",
                "-C",
                "1",
                "-b",
                "/g/vmlinux",
                "-k",
                &guest().cmdline,
                "-I",
                "/g/initramfs.cpio.gz",
            ]
        );
    }

    #[test]
    fn no_initrd_means_no_initrd_flag() {
        let g = Guest {
            initrd: None,
            ..guest()
        };
        for kind in [Kind::VmRun, Kind::QemuQ35, Kind::QemuMicrovm] {
            let inv = invocation(kind, Path::new("vmm"), &g);
            assert!(
                !inv.args
                    .iter()
                    .any(|a| a == "-I" || a == "-initrd" || a.contains("initramfs")),
                "{inv:?}"
            );
        }
    }

    #[test]
    fn qemu_machines_differ_only_in_the_machine_type() {
        let q35 = invocation(Kind::QemuQ35, Path::new("qemu"), &guest());
        let micro = invocation(Kind::QemuMicrovm, Path::new("qemu"), &guest());
        let diff: Vec<_> = q35
            .args
            .iter()
            .zip(&micro.args)
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(diff, [(&"q35".to_string(), &"microvm".to_string())]);
        for flag in [
            "-nodefaults",
            "kvm",
            "256M",
            "/g/vmlinux",
            "/g/initramfs.cpio.gz",
        ] {
            assert!(
                q35.args.iter().any(|a| a == flag),
                "{flag} missing from {q35:?}"
            );
        }
    }

    #[test]
    fn display_quotes_arguments_with_spaces() {
        let inv = Invocation {
            program: "vm-run".into(),
            args: vec!["-k".into(), "a b".into()],
        };
        assert_eq!(inv.display(), "vm-run -k 'a b'");
    }

    #[test]
    fn resolve_searches_path_and_checks_files() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("vmm");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(
            resolve(Path::new("vmm"), Some(&path_var)),
            Some(exe.clone())
        );
        assert_eq!(resolve(&exe, None), Some(exe));
        assert_eq!(resolve(Path::new("plain"), Some(&path_var)), None);
        assert_eq!(resolve(&dir.path().join("missing"), None), None);
    }
}

//! `vmctl start`: its options, their checks and the VM description sent to
//! the daemon (vmctl's `ctl_start` in `main.c` and `vm_start` in
//! `vmctl.c`).

use std::path::{Path, PathBuf};

use proto::VmTarget;
use vmconf::{
    BootDevice, DiskConf, IfConf, VmConf, VM_MAX_DISKS_PER_VM, VM_MAX_NICS_PER_VM, VM_NAME_MAX,
};

use crate::args::{parse_disktype, parse_instance, parse_size, parse_vmid, strtonum, ArgError};
use crate::commands::{command_usage, options, Command, CommandError, PROG};
use crate::errno::Errno;
use crate::getopt::GetoptError;

/// The options of `start`: vmd's, plus `-C cpus`, `-I initrd`, `-k cmdline`.
const OPTSTRING: &str = "b:B:cC:d:i:I:k:Lm:n:r:t:";

/// What `vmctl start` asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSpec {
    /// The VM by id or name. For an id, `conf.name` is empty until the
    /// name is looked up.
    pub target: VmTarget,
    /// The VM as vm.conf would describe it; paths are absolute and
    /// canonical. Only a name: start a configured VM as it is.
    pub conf: VmConf,
    /// `-c`: attach to the console once started.
    pub console: bool,
}

/// Why `start` was refused. [`StartError::report`] gives vmctl's text.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Wrong number of operands: the usage
    #[error("usage")]
    Usage(&'static Command),
    /// A bad option letter or a missing option argument
    #[error("{err}")]
    Getopt {
        /// The command.
        command: &'static Command,
        /// What getopt found.
        err: GetoptError,
    },
    /// `-b` given twice
    #[error("boot image specified multiple times")]
    BootTwice,
    /// `-b` path does not resolve
    #[error("invalid boot image path: {0}")]
    BootPath(Errno),
    /// `-B` given twice
    #[error("boot device specified multiple times")]
    BootDeviceTwice,
    /// `-B` is not disk, cdrom or net
    #[error("unknown boot device {0}")]
    BootDevice(String),
    /// `-r` given twice
    #[error("iso image specified multiple times")]
    IsoTwice,
    /// `-r` path does not resolve
    #[error("invalid iso image path: {0}")]
    IsoPath(Errno),
    /// `-m` given twice
    #[error("memory specified multiple times")]
    MemoryTwice,
    /// `-m` is not a size of at least 1M
    #[error("invalid memory size: {arg}")]
    MemorySize {
        /// The text given.
        arg: String,
        /// Why.
        reason: ArgError,
    },
    /// `-d` path does not resolve
    #[error("invalid disk path: {0}")]
    DiskPath(Errno),
    /// `-i` given twice
    #[error("interfaces specified multiple times")]
    InterfacesTwice,
    /// `-i` is not a count
    #[error("invalid interface count: {arg}")]
    InterfaceCount {
        /// The text given.
        arg: String,
        /// Why.
        reason: ArgError,
    },
    /// `-t` names no possible VM
    #[error("invalid name: {arg}")]
    Instance {
        /// The text given.
        arg: String,
        /// Why.
        reason: ArgError,
    },
    /// `-C` given twice
    #[error("cpus specified multiple times")]
    CpusTwice,
    /// `-C` is not a vCPU count
    #[error("invalid cpu count: {arg}")]
    CpuCount {
        /// The text given.
        arg: String,
        /// Why.
        reason: ArgError,
    },
    /// `-I` given twice
    #[error("initrd specified multiple times")]
    InitrdTwice,
    /// `-I` path does not resolve
    #[error("invalid initrd path: {0}")]
    InitrdPath(Errno),
    /// `-k` given twice
    #[error("command line specified multiple times")]
    CmdlineTwice,
    /// The operand is not an id or a name
    #[error("invalid id: {word}")]
    InvalidId {
        /// The operand.
        word: String,
        /// Why.
        reason: ArgError,
    },
    /// More than four network interfaces
    #[error("too many network interfaces")]
    TooManyNics,
    /// More than four disks
    #[error("too many disks")]
    TooManyDisks,
    /// A new VM with nothing to boot
    #[error("no kernel or disk/cdrom specified")]
    NothingToBoot,
    /// A name with characters vmd does not allow
    #[error("invalid VM name")]
    InvalidName,
    /// A switch name too long for vmd
    #[error("interface name too long")]
    SwitchNameTooLong,
    /// The kernel cannot be opened
    #[error("cannot open kernel '{path}': {err}")]
    KernelOpen {
        /// The kernel.
        path: String,
        /// Why.
        err: Errno,
    },
    /// The kernel is not a regular file
    #[error("kernel must be a regular file")]
    KernelNotRegular,
    /// The initrd cannot be opened
    #[error("cannot open initrd '{path}': {err}")]
    InitrdOpen {
        /// The initrd.
        path: String,
        /// Why.
        err: Errno,
    },
    /// The initrd is not a regular file
    #[error("initrd must be a regular file")]
    InitrdNotRegular,
}

impl StartError {
    /// Everything vmctl writes to stderr for this error, newline ended.
    pub fn report(&self) -> String {
        match self {
            StartError::Usage(command) => command_usage(command),
            StartError::Getopt { command, err } => {
                format!("{PROG}: {err}\n{}", command_usage(command))
            }
            StartError::MemorySize { reason, .. }
            | StartError::InterfaceCount { reason, .. }
            | StartError::Instance { reason, .. }
            | StartError::CpuCount { reason, .. }
            | StartError::InvalidId { reason, .. }
                if !reason.is_silent() =>
            {
                format!("{PROG}: {reason}\n{PROG}: {self}\n")
            }
            _ => format!("{PROG}: {self}\n"),
        }
    }
}

impl From<StartError> for CommandError {
    fn from(err: StartError) -> Self {
        CommandError::Start(Box::new(err))
    }
}

/// The canonical absolute path, like realpath(3).
fn realpath(path: &str) -> Result<PathBuf, Errno> {
    std::fs::canonicalize(path).map_err(|e| Errno::from_io(&e))
}

/// Checks that a file the daemon will boot can be opened by this user and
/// is a regular file, as vmctl does before it sends the kernel.
fn check_boot_file(path: &Path) -> Result<(), (Errno, bool)> {
    let file = std::fs::File::open(path).map_err(|e| (Errno::from_io(&e), true))?;
    let meta = file.metadata().map_err(|e| (Errno::from_io(&e), true))?;
    if !meta.file_type().is_file() {
        return Err((Errno(libc::EINVAL), false));
    }
    Ok(())
}

/// Whether `name` follows vmd's rules: letters, digits, `.`, `-`, `_`,
/// not starting with one of the last three.
pub fn valid_vm_name(name: &str) -> bool {
    !name.starts_with(['-', '.', '_'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Reads `start`'s arguments into a [`StartSpec`], with the warnings
/// vmctl prints on the way.
pub fn parse_start(
    command: &'static Command,
    args: &[String],
) -> Result<(StartSpec, Vec<String>), StartError> {
    let (opts, operands) = options(command, args, OPTSTRING).map_err(|e| match e {
        CommandError::Getopt { command, err } => StartError::Getopt { command, err },
        _ => StartError::Usage(command),
    })?;
    let mut warnings = Vec::new();
    let mut conf = VmConf::new("");
    let mut console = false;
    let mut interface_count: Option<usize> = None;
    let mut nets: Vec<IfConf> = Vec::new();

    for opt in opts {
        let arg = opt.arg.unwrap_or_default();
        match opt.letter {
            'b' => {
                if conf.boot.is_some() {
                    return Err(StartError::BootTwice);
                }
                conf.boot = Some(realpath(&arg).map_err(StartError::BootPath)?);
            }
            'B' => {
                if conf.boot_device.is_some() {
                    return Err(StartError::BootDeviceTwice);
                }
                conf.boot_device = Some(match arg.as_str() {
                    "disk" => BootDevice::Disk,
                    "cdrom" => BootDevice::Cdrom,
                    "net" => BootDevice::Net,
                    _ => return Err(StartError::BootDevice(arg)),
                });
            }
            'r' => {
                if conf.cdrom.is_some() {
                    return Err(StartError::IsoTwice);
                }
                conf.cdrom = Some(realpath(&arg).map_err(StartError::IsoPath)?);
            }
            'c' => console = true,
            'L' => nets.push(IfConf {
                local: true,
                up: true,
                ..IfConf::default()
            }),
            'm' => {
                if conf.memory.is_some() {
                    return Err(StartError::MemoryTwice);
                }
                let size = parse_size(&arg).map_err(|reason| StartError::MemorySize {
                    arg: arg.clone(),
                    reason,
                })?;
                if size.rounded {
                    warnings.push(format!("size rounded to {} megabytes", size.mib));
                }
                conf.memory = Some(size.mib * 1024 * 1024);
            }
            'n' => {
                if arg.len() >= VM_NAME_MAX {
                    return Err(StartError::SwitchNameTooLong);
                }
                nets.push(IfConf {
                    switch: Some(arg),
                    up: true,
                    ..IfConf::default()
                });
            }
            'd' => {
                let (format, path) = parse_disktype(&arg);
                let path = realpath(path).map_err(StartError::DiskPath)?;
                conf.disks.push(DiskConf { path, format });
            }
            'i' => {
                if interface_count.is_some() {
                    return Err(StartError::InterfacesTwice);
                }
                let count = strtonum(&arg, 0, i64::from(i32::MAX)).map_err(|reason| {
                    StartError::InterfaceCount {
                        arg: arg.clone(),
                        reason,
                    }
                })?;
                interface_count = Some(usize::try_from(count).unwrap_or(usize::MAX));
            }
            't' => {
                conf.instance_of =
                    Some(parse_instance(&arg).map_err(|reason| StartError::Instance {
                        arg: arg.clone(),
                        reason,
                    })?);
            }
            'C' => {
                if conf.cpus.is_some() {
                    return Err(StartError::CpusTwice);
                }
                let cpus =
                    strtonum(&arg, 1, i64::from(vmconf::VM_MAX_VCPUS)).map_err(|reason| {
                        StartError::CpuCount {
                            arg: arg.clone(),
                            reason,
                        }
                    })?;
                conf.cpus = Some(u8::try_from(cpus).unwrap_or(vmconf::VM_MAX_VCPUS));
            }
            'I' => {
                if conf.initrd.is_some() {
                    return Err(StartError::InitrdTwice);
                }
                conf.initrd = Some(realpath(&arg).map_err(StartError::InitrdPath)?);
            }
            'k' => {
                if conf.cmdline.is_some() {
                    return Err(StartError::CmdlineTwice);
                }
                conf.cmdline = Some(arg);
            }
            // getopt only returns letters of OPTSTRING.
            _ => return Err(StartError::Usage(command)),
        }
    }

    let [word] = operands.as_slice() else {
        return Err(StartError::Usage(command));
    };
    let target = parse_vmid(word).map_err(|reason| StartError::InvalidId {
        word: word.clone(),
        reason,
    })?;

    // `-i N` adds interfaces on no switch up to N in total.
    while nets.len() < interface_count.unwrap_or(0) {
        if nets.len() > VM_MAX_NICS_PER_VM {
            break;
        }
        nets.push(IfConf {
            up: true,
            ..IfConf::default()
        });
    }
    if nets.len() > VM_MAX_NICS_PER_VM {
        return Err(StartError::TooManyNics);
    }
    conf.interfaces = nets;

    // A new VM (not an instance, and more than a bare name) must be
    // bootable.
    let creates = conf.memory.is_some()
        || !conf.interfaces.is_empty()
        || !conf.disks.is_empty()
        || conf.boot.is_some()
        || conf.cdrom.is_some()
        || conf.cpus.is_some()
        || conf.initrd.is_some()
        || conf.cmdline.is_some();
    if creates && conf.instance_of.is_none() {
        if conf.disks.len() > VM_MAX_DISKS_PER_VM {
            return Err(StartError::TooManyDisks);
        }
        if conf.boot.is_none() && conf.disks.is_empty() {
            warnings.push("starting without disks".to_string());
        }
        if conf.boot.is_none() && conf.disks.is_empty() && conf.cdrom.is_none() {
            return Err(StartError::NothingToBoot);
        }
        if conf.boot.is_none() && conf.interfaces.is_empty() {
            warnings.push("starting without network interfaces".to_string());
        }
    }
    if conf.disks.len() > VM_MAX_DISKS_PER_VM {
        return Err(StartError::TooManyDisks);
    }

    if let VmTarget::Name(name) = &target {
        if !valid_vm_name(name) {
            return Err(StartError::InvalidName);
        }
        conf.name.clone_from(name);
    }
    if let Some(kernel) = &conf.boot {
        check_boot_file(kernel).map_err(|(err, opened)| {
            if opened {
                StartError::KernelOpen {
                    path: kernel.display().to_string(),
                    err,
                }
            } else {
                StartError::KernelNotRegular
            }
        })?;
    }
    if let Some(initrd) = &conf.initrd {
        check_boot_file(initrd).map_err(|(err, opened)| {
            if opened {
                StartError::InitrdOpen {
                    path: initrd.display().to_string(),
                    err,
                }
            } else {
                StartError::InitrdNotRegular
            }
        })?;
    }

    Ok((
        StartSpec {
            target,
            conf,
            console,
        },
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::lookup;
    use vmconf::DiskFormat;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("bzImage"), b"kernel").unwrap();
            std::fs::write(dir.path().join("initrd.img"), b"initrd").unwrap();
            std::fs::write(dir.path().join("raw.img"), vec![0u8; 512]).unwrap();
            std::fs::write(dir.path().join("cow.img"), b"QFI\xfb\0\0\0\x03").unwrap();
            std::fs::write(dir.path().join("install.iso"), b"iso").unwrap();
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).to_str().unwrap().to_string()
        }

        fn canonical(&self, name: &str) -> PathBuf {
            std::fs::canonicalize(self.dir.path().join(name)).unwrap()
        }
    }

    fn start(args: &[&str]) -> Result<(StartSpec, Vec<String>), StartError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_start(lookup("start").unwrap(), &args)
    }

    fn report(args: &[&str]) -> String {
        start(args).unwrap_err().report()
    }

    #[test]
    fn bare_name_starts_a_configured_vm() {
        let (spec, warnings) = start(&["web"]).unwrap();
        assert_eq!(spec.target, VmTarget::Name("web".into()));
        assert_eq!(spec.conf, VmConf::new("web"));
        assert!(!spec.console);
        assert!(warnings.is_empty());
    }

    #[test]
    fn numeric_operand_is_an_id_with_no_name_yet() {
        let (spec, _) = start(&["-c", "5"]).unwrap();
        assert_eq!(spec.target, VmTarget::Id(5));
        assert_eq!(spec.conf.name, "");
        assert!(spec.console);
    }

    #[test]
    fn every_option_lands_in_the_vm_description() {
        let f = Files::new();
        let (spec, warnings) = start(&[
            "-c",
            "-b",
            &f.path("bzImage"),
            "-I",
            &f.path("initrd.img"),
            "-k",
            "console=ttyS0 quiet",
            "-C",
            "2",
            "-m",
            "1G",
            "-d",
            &f.path("raw.img"),
            "-d",
            &f.path("cow.img"),
            "-r",
            &f.path("install.iso"),
            "-B",
            "cdrom",
            "-n",
            "uplink",
            "-L",
            "-i",
            "3",
            "linux",
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(spec.console);
        let conf = spec.conf;
        assert_eq!(conf.name, "linux");
        assert_eq!(conf.boot, Some(f.canonical("bzImage")));
        assert_eq!(conf.initrd, Some(f.canonical("initrd.img")));
        assert_eq!(conf.cmdline.as_deref(), Some("console=ttyS0 quiet"));
        assert_eq!(conf.cpus, Some(2));
        assert_eq!(conf.memory, Some(1 << 30));
        assert_eq!(conf.cdrom, Some(f.canonical("install.iso")));
        assert_eq!(conf.boot_device, Some(BootDevice::Cdrom));
        assert_eq!(
            conf.disks,
            vec![
                DiskConf {
                    path: f.canonical("raw.img"),
                    format: DiskFormat::Raw
                },
                DiskConf {
                    path: f.canonical("cow.img"),
                    format: DiskFormat::Qcow2
                },
            ]
        );
        // -n and -L first, then -i fills up to three with unattached ones.
        assert_eq!(conf.interfaces.len(), 3);
        assert_eq!(conf.interfaces[0].switch.as_deref(), Some("uplink"));
        assert!(conf.interfaces[1].local);
        assert_eq!(
            conf.interfaces[2],
            IfConf {
                up: true,
                ..IfConf::default()
            }
        );
        assert!(conf.interfaces.iter().all(|i| i.up));
    }

    #[test]
    fn relative_paths_become_canonical() {
        let f = Files::new();
        let relative = format!(
            "{}/../{}/raw.img",
            f.path(""),
            f.dir.path().file_name().unwrap().to_str().unwrap()
        );
        let (spec, _) = start(&[
            "-d",
            &relative,
            "-d",
            &format!("qcow2:{}", f.path("raw.img")),
            "vm",
        ])
        .unwrap();
        assert_eq!(spec.conf.disks[0].path, f.canonical("raw.img"));
        assert_eq!(spec.conf.disks[1].format, DiskFormat::Qcow2);
    }

    #[test]
    fn missing_files_are_reported_with_errno() {
        assert_eq!(
            report(&["-b", "/nonexistent/bsd", "vm"]),
            "vmctl: invalid boot image path: No such file or directory\n"
        );
        assert_eq!(
            report(&["-d", "/nonexistent/disk", "vm"]),
            "vmctl: invalid disk path: No such file or directory\n"
        );
        assert_eq!(
            report(&["-r", "/nonexistent/x.iso", "vm"]),
            "vmctl: invalid iso image path: No such file or directory\n"
        );
        assert_eq!(
            report(&["-I", "/nonexistent/initrd", "vm"]),
            "vmctl: invalid initrd path: No such file or directory\n"
        );
    }

    #[test]
    fn kernel_must_be_a_regular_file() {
        let f = Files::new();
        assert_eq!(
            report(&["-b", &f.path(""), "vm"]),
            "vmctl: kernel must be a regular file\n"
        );
        assert_eq!(
            report(&["-b", &f.path("bzImage"), "-I", "/dev", "vm"]),
            "vmctl: initrd must be a regular file\n"
        );
    }

    #[test]
    fn options_given_twice_are_refused() {
        let f = Files::new();
        let k = f.path("bzImage");
        let cases: [(&[&str], &str); 8] = [
            (
                &["-b", &k, "-b", &k, "vm"],
                "boot image specified multiple times",
            ),
            (
                &["-B", "disk", "-B", "net", "vm"],
                "boot device specified multiple times",
            ),
            (
                &["-m", "1G", "-m", "2G", "vm"],
                "memory specified multiple times",
            ),
            (
                &["-i", "1", "-i", "2", "vm"],
                "interfaces specified multiple times",
            ),
            (
                &["-C", "1", "-C", "2", "vm"],
                "cpus specified multiple times",
            ),
            (
                &["-k", "a", "-k", "b", "vm"],
                "command line specified multiple times",
            ),
            (
                &[
                    "-r",
                    &f.path("install.iso"),
                    "-r",
                    &f.path("install.iso"),
                    "vm",
                ],
                "iso image specified multiple times",
            ),
            (
                &[
                    "-I",
                    &f.path("initrd.img"),
                    "-I",
                    &f.path("initrd.img"),
                    "vm",
                ],
                "initrd specified multiple times",
            ),
        ];
        for (args, message) in cases {
            assert_eq!(report(args), format!("vmctl: {message}\n"), "{args:?}");
        }
    }

    #[test]
    fn boot_devices() {
        let f = Files::new();
        let k = f.path("bzImage");
        for (word, device) in [
            ("disk", BootDevice::Disk),
            ("cdrom", BootDevice::Cdrom),
            ("net", BootDevice::Net),
        ] {
            let (spec, _) = start(&["-b", &k, "-B", word, "vm"]).unwrap();
            assert_eq!(spec.conf.boot_device, Some(device));
        }
        assert_eq!(
            report(&["-B", "floppy", "vm"]),
            "vmctl: unknown boot device floppy\n"
        );
    }

    #[test]
    fn memory_sizes() {
        let f = Files::new();
        let k = f.path("bzImage");
        let (spec, warnings) = start(&["-b", &k, "-m", "1500K", "vm"]).unwrap();
        assert_eq!(spec.conf.memory, Some(1 << 20));
        assert_eq!(warnings, ["size rounded to 1 megabytes"]);
        assert_eq!(
            report(&["-m", "512", "vm"]),
            "vmctl: size must be at least one megabyte\nvmctl: invalid memory size: 512\n"
        );
        assert_eq!(
            report(&["-m", "lots", "vm"]),
            "vmctl: invalid size: lots: Invalid argument\nvmctl: invalid memory size: lots\n"
        );
    }

    #[test]
    fn counts() {
        assert_eq!(
            report(&["-i", "many", "vm"]),
            "vmctl: invalid count \"many\": invalid\nvmctl: invalid interface count: many\n"
        );
        assert_eq!(
            report(&["-C", "0", "vm"]),
            "vmctl: invalid count \"0\": too small\nvmctl: invalid cpu count: 0\n"
        );
        assert_eq!(
            report(&["-C", "256", "vm"]),
            "vmctl: invalid count \"256\": too large\nvmctl: invalid cpu count: 256\n"
        );
    }

    #[test]
    fn at_most_four_interfaces() {
        let f = Files::new();
        let k = f.path("bzImage");
        assert!(start(&["-b", &k, "-i", "4", "vm"]).is_ok());
        assert_eq!(
            report(&["-b", &k, "-i", "5", "vm"]),
            "vmctl: too many network interfaces\n"
        );
        assert_eq!(
            report(&["-b", &k, "-i", "2147483647", "vm"]),
            "vmctl: too many network interfaces\n"
        );
        assert_eq!(
            report(&["-b", &k, "-L", "-L", "-n", "a", "-n", "b", "-L", "vm"]),
            "vmctl: too many network interfaces\n"
        );
        assert_eq!(
            report(&["-n", &"s".repeat(64), "vm"]),
            "vmctl: interface name too long\n"
        );
    }

    #[test]
    fn at_most_four_disks() {
        let f = Files::new();
        let d = f.path("raw.img");
        assert_eq!(
            start(&["-d", &d, "-d", &d, "-d", &d, "-d", &d, "vm"])
                .unwrap()
                .0
                .conf
                .disks
                .len(),
            4
        );
        assert_eq!(
            report(&["-d", &d, "-d", &d, "-d", &d, "-d", &d, "-d", &d, "vm"]),
            "vmctl: too many disks\n"
        );
    }

    #[test]
    fn a_new_vm_needs_something_to_boot() {
        assert_eq!(
            report(&["-m", "1G", "vm"]),
            "vmctl: no kernel or disk/cdrom specified\n"
        );
        assert_eq!(
            report(&["-C", "2", "vm"]),
            "vmctl: no kernel or disk/cdrom specified\n"
        );
        // An instance inherits its template's boot source.
        let (spec, warnings) = start(&["-t", "tmpl", "-m", "1G", "copy"]).unwrap();
        assert_eq!(spec.conf.instance_of.as_deref(), Some("tmpl"));
        assert!(warnings.is_empty());
    }

    #[test]
    fn cdrom_only_vm_warns_like_vmctl() {
        let f = Files::new();
        let (_, warnings) = start(&["-r", &f.path("install.iso"), "vm"]).unwrap();
        assert_eq!(
            warnings,
            [
                "starting without disks",
                "starting without network interfaces"
            ]
        );
    }

    #[test]
    fn names_follow_vmds_rules() {
        assert!(valid_vm_name("web-1.example_x"));
        assert!(valid_vm_name("1st"));
        assert!(!valid_vm_name("_x"));
        assert!(!valid_vm_name(".x"));
        assert!(!valid_vm_name("we b"));
        assert!(!valid_vm_name("wéb"));
        assert_eq!(report(&["we/b"]), "vmctl: invalid VM name\n");
        assert_eq!(report(&["-t", "x", ".hidden"]), "vmctl: invalid VM name\n");
        let long = "n".repeat(64);
        assert_eq!(
            report(&[long.as_str()]),
            format!("vmctl: name too long\nvmctl: invalid id: {long}\n")
        );
        assert_eq!(
            report(&["-t", &long, "vm"]),
            format!("vmctl: instance vm name too long\nvmctl: invalid name: {long}\n")
        );
    }

    #[test]
    fn operands_and_options() {
        let usage = command_usage(lookup("start").unwrap());
        assert_eq!(report(&[]), usage);
        assert_eq!(report(&["a", "b"]), usage);
        assert_eq!(
            report(&["-x", "vm"]),
            format!("vmctl: unknown option -- x\n{usage}")
        );
        assert_eq!(report(&["vm", "-m"]), usage, "options after the operand");
        assert_eq!(
            report(&["-m"]),
            format!("vmctl: option requires an argument -- m\n{usage}")
        );
    }
}

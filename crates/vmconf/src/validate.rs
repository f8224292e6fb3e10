//! Checks across statements, run after parsing and before the daemon
//! applies a configuration (what vmd finds only when `vm_register` or the
//! first start fails, found here up front).

use std::collections::HashMap;

use thiserror::Error;

use crate::diag::{Diag, Diagnostic, Location, Warning, WarningKind};
use crate::types::{BootDevice, Config};

/// A configuration that parses but cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ValidateError {
    /// Two `vm` blocks with one name.
    #[error("vm \"{name}\" already defined at {first}")]
    DuplicateVm {
        /// The name.
        name: String,
        /// The first definition.
        first: Location,
    },
    /// Two `switch` blocks with one name.
    #[error("switch \"{name}\" already defined at {first}")]
    DuplicateSwitch {
        /// The name.
        name: String,
        /// The first definition.
        first: Location,
    },
    /// Two switches on one bridge device.
    #[error("switch \"{name}\": interface {ifname} is already used by switch \"{other}\"")]
    SharedBridge {
        /// The later switch.
        name: String,
        /// The bridge.
        ifname: String,
        /// The earlier switch.
        other: String,
    },
    /// Nothing to boot (vmd.c `vm_register`).
    #[error("vm \"{0}\" failed: no kernel or disk/cdrom specified")]
    NoBootMedium(String),
    /// `boot device X` without X.
    #[error("vm \"{vm}\": boot device {device} needs {needs}")]
    BootDevice {
        /// The VM.
        vm: String,
        /// The device named.
        device: &'static str,
        /// The missing option.
        needs: &'static str,
    },
    /// `initrd` or `cmdline` without `boot`: the BIOS cannot use them.
    #[error("vm \"{vm}\": {option} needs a boot kernel")]
    NeedsKernel {
        /// The VM.
        vm: String,
        /// `initrd` or `cmdline`.
        option: &'static str,
    },
    /// `vm a instance a`.
    #[error("vm \"{0}\" cannot be an instance of itself")]
    SelfInstance(String),
    /// One tap device named by two interfaces.
    #[error("interface {ifname} of vm \"{vm}\" is already used by vm \"{other}\"")]
    SharedTap {
        /// The tap device.
        ifname: String,
        /// The later VM.
        vm: String,
        /// The earlier VM.
        other: String,
    },
}

/// Check a parsed configuration. `vm_locs` and `switch_locs` give where each
/// VM and switch was declared.
pub fn validate(config: &Config, vm_locs: &[Location], switch_locs: &[Location]) -> Vec<Diag> {
    let mut out = Vec::new();
    let mut error = |loc: &Location, e: ValidateError| {
        out.push(Diag::Error(Diagnostic {
            location: Some(loc.clone()),
            error: e.into(),
        }));
    };
    let mut warnings = Vec::new();

    let mut switches: HashMap<&str, usize> = HashMap::new();
    let mut bridges: HashMap<&str, usize> = HashMap::new();
    for (i, sw) in config.switches.iter().enumerate() {
        let loc = &switch_locs[i];
        if let Some(&first) = switches.get(sw.name.as_str()) {
            error(
                loc,
                ValidateError::DuplicateSwitch {
                    name: sw.name.clone(),
                    first: switch_locs[first].clone(),
                },
            );
            continue;
        }
        switches.insert(&sw.name, i);
        if let Some(&other) = bridges.get(sw.ifname.as_str()) {
            error(
                loc,
                ValidateError::SharedBridge {
                    name: sw.name.clone(),
                    ifname: sw.ifname.clone(),
                    other: config.switches[other].name.clone(),
                },
            );
        } else {
            bridges.insert(&sw.ifname, i);
        }
    }

    let mut vms: HashMap<&str, usize> = HashMap::new();
    let mut taps: HashMap<&str, usize> = HashMap::new();
    for (i, vm) in config.vms.iter().enumerate() {
        let loc = &vm_locs[i];
        if let Some(&first) = vms.get(vm.name.as_str()) {
            error(
                loc,
                ValidateError::DuplicateVm {
                    name: vm.name.clone(),
                    first: vm_locs[first].clone(),
                },
            );
            continue;
        }
        match &vm.instance_of {
            Some(parent) if *parent == vm.name => {
                error(loc, ValidateError::SelfInstance(vm.name.clone()));
            }
            Some(parent) if !vms.contains_key(parent.as_str()) => {
                warnings.push(Warning::At(
                    loc.clone(),
                    WarningKind::UnknownParent {
                        vm: vm.name.clone(),
                        parent: parent.clone(),
                    },
                ));
            }
            _ => {}
        }
        vms.insert(&vm.name, i);

        // Instances inherit boot media from their parent.
        if vm.instance_of.is_none() {
            if vm.boot.is_none() && vm.disks.is_empty() && vm.cdrom.is_none() {
                error(loc, ValidateError::NoBootMedium(vm.name.clone()));
            }
            let missing = match vm.boot_device {
                Some(BootDevice::Cdrom) if vm.cdrom.is_none() => Some(("cdrom", "a cdrom")),
                Some(BootDevice::Disk) if vm.disks.is_empty() => Some(("disk", "a disk")),
                Some(BootDevice::Net) if vm.boot.is_none() => Some(("net", "a boot kernel")),
                _ => None,
            };
            if let Some((device, needs)) = missing {
                error(
                    loc,
                    ValidateError::BootDevice {
                        vm: vm.name.clone(),
                        device,
                        needs,
                    },
                );
            }
            for (option, set) in [
                ("initrd", vm.initrd.is_some()),
                ("cmdline", vm.cmdline.is_some()),
            ] {
                if set && vm.boot.is_none() {
                    error(
                        loc,
                        ValidateError::NeedsKernel {
                            vm: vm.name.clone(),
                            option,
                        },
                    );
                }
            }
        }

        for nic in &vm.interfaces {
            if let Some(name) = &nic.name {
                match taps.get(name.as_str()) {
                    Some(&other) => error(
                        loc,
                        ValidateError::SharedTap {
                            ifname: name.clone(),
                            vm: vm.name.clone(),
                            other: config.vms[other].name.clone(),
                        },
                    ),
                    None => {
                        taps.insert(name, i);
                    }
                }
            }
            if let Some(sw) = &nic.switch {
                if !switches.contains_key(sw.as_str()) {
                    warnings.push(Warning::At(
                        loc.clone(),
                        WarningKind::UnknownSwitch {
                            vm: vm.name.clone(),
                            switch: sw.clone(),
                        },
                    ));
                }
            }
        }
    }
    out.extend(warnings.into_iter().map(Diag::Warning));
    out
}

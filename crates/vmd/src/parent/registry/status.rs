//! What `vmctl status` shows for each VM (vmd.c's `GET_INFO_VM` handling,
//! and vmctl.c's `print_vm_info` and OpenBSD's `fmt_scaled` for the
//! columns).

use proto::{VmInfo, VmState};

use super::{Error, Registry, Vm, VmTarget};

/// The header line of `vmctl status` (vmctl.c's column layout).
pub const STATUS_HEADER: &str =
    "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE   NAME";

/// `user[:group]` as vmctl shows an owner: names where the system knows
/// them, numbers otherwise; no group part without a group.
pub fn owner_string(uid: u32, gid: Option<u32>) -> String {
    let user = match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    };
    match gid {
        None => user,
        Some(gid) => match nix::unistd::Group::from_gid(gid.into()) {
            Ok(Some(g)) => format!("{user}:{}", g.name),
            _ => format!("{user}:{gid}"),
        },
    }
}

/// A byte count the way OpenBSD's `fmt_scaled(3)` prints it: at most three
/// digits and a unit of B, K, M, G, T, P or E, one decimal below 100
/// units (`512M`, `1.0G`, `1.5G`, `0B`).
pub fn fmt_scaled(bytes: u64) -> String {
    const UNITS: [char; 7] = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
    let mut unit = 0;
    let mut scale: u64 = 1;
    while unit + 1 < UNITS.len() && bytes / 1024 >= scale {
        scale *= 1024;
        unit += 1;
    }
    let mut number = bytes / scale;
    let mut fract = if unit == 0 {
        0
    } else {
        (bytes % scale) / (scale / 1024)
    };
    fract = (10 * fract + 512) / 1024;
    if fract >= 10 {
        number += 1;
        fract = 0;
    }
    if number == 0 {
        "0B".to_string()
    } else if unit == 0 || number >= 100 {
        if fract >= 5 {
            number += 1;
        }
        format!("{number}{}", UNITS[unit])
    } else {
        format!("{number}.{fract}{}", UNITS[unit])
    }
}

/// One VM's row (vmd's `vmop_info_result`): a running VM shows its
/// process, tty and the user who started it; a stopped one its configured
/// owner.
fn row(vm: &Vm) -> VmInfo {
    let running = vm.state.running;
    let uid = if running { vm.uid } else { vm.owner_uid() };
    VmInfo {
        id: vm.id,
        pid: vm.pid.filter(|_| running),
        vcpus: vm.vcpus(),
        max_mem: vm.memory(),
        cur_mem: if running { vm.memory() } else { 0 },
        tty: vm
            .tty
            .as_ref()
            .filter(|_| running)
            .map(|t| t.display().to_string()),
        owner: owner_string(uid, vm.owner_gid()),
        state: vm.state.shown(),
        name: vm.conf.name.clone(),
    }
}

impl Registry {
    /// `vmctl status [-r] [id]`: rows in id order, every VM or the one
    /// named (`ENOENT` if unknown), with `running_only` (`-r`) only running
    /// ones. Everyone may see every VM, as in vmd.
    pub fn status(
        &self,
        target: Option<&VmTarget>,
        running_only: bool,
    ) -> Result<Vec<VmInfo>, Error> {
        let mut rows: Vec<VmInfo> = match target {
            None | Some(VmTarget::All) => self.vms().map(row).collect(),
            Some(t) => vec![row(self.by_target(t)?)],
        };
        if running_only {
            rows.retain(|r| r.state != VmState::Stopped && r.state != VmState::Waiting);
        }
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }
}

/// The `vmctl status` table for these rows: header, then one line each
/// (vmctl.c's `%5s %5s %5s %7s %7s %7s %12s %8s %s`; the tty without its
/// `/dev/` prefix).
pub fn format_status(rows: &[VmInfo]) -> String {
    let mut out = String::from(STATUS_HEADER);
    out.push('\n');
    for r in rows {
        let running = !matches!(r.state, VmState::Stopped | VmState::Waiting);
        let pid = r.pid.map_or("-".to_string(), |p| p.to_string());
        let curmem = if running {
            fmt_scaled(r.cur_mem)
        } else {
            "-".to_string()
        };
        let tty = r.tty.as_deref().map_or("-", |t| {
            t.strip_prefix("/dev/")
                .filter(|s| !s.is_empty())
                .unwrap_or(t)
        });
        out.push_str(&format!(
            "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}\n",
            r.id,
            pid,
            r.vcpus,
            fmt_scaled(r.max_mem),
            curmem,
            tty,
            r.owner,
            r.state.as_str(),
            r.name
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::time::Instant;
    use vmconf::Owner;

    #[test]
    fn fmt_scaled_matches_openbsd() {
        assert_eq!(fmt_scaled(0), "0B");
        assert_eq!(fmt_scaled(100), "100B");
        assert_eq!(fmt_scaled(512 << 20), "512M");
        assert_eq!(fmt_scaled(1 << 30), "1.0G");
        assert_eq!(fmt_scaled(1536 << 20), "1.5G");
        assert_eq!(fmt_scaled(2 << 30), "2.0G");
        assert_eq!(fmt_scaled(64 << 20), "64.0M");
        assert_eq!(fmt_scaled(128 << 30), "128G");
    }

    #[test]
    fn owner_string_uses_names_and_numbers() {
        assert_eq!(owner_string(0, None), "root");
        assert_eq!(owner_string(0, Some(0)), "root:root");
        assert_eq!(owner_string(4_000_000, Some(4_000_001)), "4000000:4000001");
    }

    #[test]
    fn stopped_vm_row_shows_configured_owner_and_no_process() {
        let mut r = reg();
        let mut c = conf("web");
        c.owner = Some(Owner {
            uid: Some(4_000_000),
            gid: Some(0),
            ..Owner::default()
        });
        c.cpus = Some(2);
        let mut cfg = vmconf::Config::default();
        cfg.vms.push(c);
        r.apply_config(&cfg, super::super::LoadMode::Load).unwrap();
        let rows = r.status(None, false).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.owner, "4000000:root");
        assert_eq!(row.state, VmState::Waiting);
        assert_eq!(row.pid, None);
        assert_eq!(row.cur_mem, 0);
        assert_eq!(row.vcpus, 2);
        assert_eq!(row.max_mem, 512 << 20);
    }

    #[test]
    fn running_vm_row_shows_pid_tty_and_starter() {
        let mut r = reg();
        let id = add_config(&mut r, conf("web"));
        r.begin_start(id, Instant::now()).unwrap();
        r.started(id, 4321).unwrap();
        r.set_tty(id, "/dev/pts/5".into()).unwrap();
        let row = &r.status(Some(&VmTarget::Id(id)), false).unwrap()[0];
        assert_eq!(row.pid, Some(4321));
        assert_eq!(row.tty.as_deref(), Some("/dev/pts/5"));
        assert_eq!(row.owner, "root");
        assert_eq!(row.state, VmState::Running);
        assert_eq!(row.cur_mem, 512 << 20);
    }

    #[test]
    fn status_r_lists_only_running_vms() {
        let mut r = reg();
        let a = add_config(&mut r, conf("a"));
        add_config(&mut r, conf("b"));
        r.begin_start(a, Instant::now()).unwrap();
        let rows = r.status(None, true).unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [a]);
        assert_eq!(r.status(None, false).unwrap().len(), 2);
    }

    #[test]
    fn status_of_unknown_vm_is_enoent() {
        let r = reg();
        assert_eq!(
            r.status(Some(&VmTarget::Name("x".into())), false),
            Err(Error::NotFound)
        );
    }

    #[test]
    fn status_table_has_vmctl_columns() {
        let rows = [
            VmInfo {
                id: 1,
                pid: Some(4321),
                vcpus: 1,
                max_mem: 512 << 20,
                cur_mem: 512 << 20,
                tty: Some("/dev/pts/5".into()),
                owner: "root".into(),
                state: VmState::Running,
                name: "web".into(),
            },
            VmInfo {
                id: 2,
                pid: None,
                vcpus: 2,
                max_mem: 1 << 30,
                cur_mem: 0,
                tty: None,
                owner: "alice:staff".into(),
                state: VmState::Stopped,
                name: "db".into(),
            },
        ];
        let out = format_status(&rows);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines[0], STATUS_HEADER);
        assert_eq!(
            lines[1],
            "    1  4321     1    512M    512M   pts/5         root  running web"
        );
        assert_eq!(
            lines[2],
            "    2     -     2    1.0G       -       -  alice:staff  stopped db"
        );
    }
}

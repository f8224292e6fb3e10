//! What `vmctl status` shows for each VM (vmd.c's `GET_INFO_VM` handling):
//! the rows; vmctl lays them out.

use std::collections::HashMap;

use proto::VmInfo;

use super::{Error, Registry, Vm, VmTarget};

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

/// One VM's row (vmd's `vmop_info_result`): a running VM shows its
/// process, tty and the user who started it; a stopped one its configured
/// owner.
/// `owners` caches the owner strings of one listing: the user and group
/// databases are files, and reading them per row would dominate `status`.
fn row(vm: &Vm, owners: &mut HashMap<(u32, Option<u32>), String>) -> VmInfo {
    let running = vm.state.running;
    let uid = if running { vm.uid } else { vm.owner_uid() };
    let gid = vm.owner_gid();
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
        owner: owners
            .entry((uid, gid))
            .or_insert_with(|| owner_string(uid, gid))
            .clone(),
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
        let vms: Vec<&Vm> = match target {
            None | Some(VmTarget::All) => self.vms().collect(),
            Some(t) => vec![self.by_target(t)?],
        };
        let mut owners = HashMap::new();
        let mut rows: Vec<VmInfo> = vms
            .into_iter()
            .filter(|vm| vm.state.running || !running_only)
            .map(|vm| row(vm, &mut owners))
            .collect();
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proto::VmState;
    use std::time::Instant;
    use vmconf::Owner;

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
    fn rows_of_different_owners_keep_their_own_owner() {
        let mut r = reg();
        for (name, uid, gid) in [("a", 0, None), ("b", 4_000_000, None), ("c", 0, Some(0))] {
            let mut c = conf(name);
            c.owner = Some(Owner {
                uid: Some(uid),
                gid,
                ..Owner::default()
            });
            add_config(&mut r, c);
        }
        let owners: Vec<_> = r
            .status(None, false)
            .unwrap()
            .into_iter()
            .map(|row| row.owner)
            .collect();
        assert_eq!(owners, ["root", "4000000", "root:root"]);
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
}

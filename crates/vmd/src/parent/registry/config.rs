//! Applying a configuration: `vmctl load`, `vmctl reload` (and SIGHUP),
//! `vmctl reset`, and the staggered start of config VMs (vmd.c
//! `vmd_reload`, `vmd_configure`, `start_vm_batch`; config.c
//! `config_purge`; parse.y's registration of each `vm` block).

use std::time::Duration;

use proto::ResetKind;
use vmconf::{Config, SwitchConf};

use super::{Creds, Error, Registry, VmId};

/// `load FILE` adds to what is there; `reload` first drops the stopped VMs
/// and re-reads the daemon's own file, taking its global settings too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// `vmctl load FILE`.
    Load,
    /// `vmctl reload`, SIGHUP, and the first configuration at startup.
    Reload,
}

/// One thing the daemon must carry out after a configuration change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigAction {
    /// A stopped VM was dropped from the registry.
    Removed(VmId),
    /// A running VM was dropped (`reset`): end its process, release its
    /// tty.
    Killed {
        /// The VM.
        id: VmId,
        /// Its tty.
        tty: Option<std::path::PathBuf>,
        /// A client waiting for it to stop.
        waiter: Option<u64>,
    },
    /// A new VM was registered; enabled ones wait for their staggered
    /// start ([`Registry::next_batch`]).
    Registered(VmId),
    /// A VM of that name exists already (running, or not dropped by a
    /// `load`) and was kept as it is.
    Kept(VmId),
    /// A switch to create on the host (priv process).
    CreateSwitch(SwitchConf),
    /// A switch to delete from the host.
    DeleteSwitch(SwitchConf),
}

/// VMs to start now, and whether more wait for the next batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartBatch {
    /// Start these now, in this order.
    pub start: Vec<VmId>,
    /// More VMs wait: call [`Registry::next_batch`] again after
    /// [`Registry::stagger_delay`].
    pub more: bool,
}

/// A batch of the staggered start, planned ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBatch {
    /// When, from now.
    pub offset: Duration,
    /// Which VMs.
    pub vms: Vec<VmId>,
}

impl Registry {
    /// Apply a parsed configuration (vmd's `vmd_reload` without reset and
    /// parse.y's `vm_register` of each block). All or nothing: on error the
    /// registry is unchanged.
    ///
    /// With [`LoadMode::Reload`] the stopped VMs are dropped first and the
    /// global settings replaced. Each `vm` block is then registered as root;
    /// one whose name exists is kept as it is (and counts as a config VM
    /// from now on); a new one waits for its staggered start if enabled.
    /// Switches not known yet are added.
    pub fn apply_config(
        &mut self,
        config: &Config,
        mode: LoadMode,
    ) -> Result<Vec<ConfigAction>, Error> {
        let mut next = self.clone();
        let mut actions = Vec::new();
        if mode == LoadMode::Reload {
            let stopped: Vec<VmId> = next
                .vms()
                .filter(|vm| !vm.state.running)
                .map(|vm| vm.id)
                .collect();
            for id in stopped {
                next.remove(id);
                actions.push(ConfigAction::Removed(id));
            }
            next.global = config.global.clone();
        }
        for sw in &config.switches {
            if !next.switches.iter().any(|s| s.name == sw.name) {
                next.switches.push(sw.clone());
                actions.push(ConfigAction::CreateSwitch(sw.clone()));
            }
        }
        for conf in &config.vms {
            match next.register(conf.clone(), &Creds::root(), true) {
                Ok(id) => {
                    let vm = next.get_mut(id).ok_or(Error::NotFound)?;
                    if conf.enabled {
                        vm.state.waiting = true;
                    } else {
                        vm.state.disabled = true;
                    }
                    actions.push(ConfigAction::Registered(id));
                }
                Err(Error::Exists { id, .. }) => {
                    if let Some(vm) = next.get_mut(id) {
                        vm.from_config = true;
                    }
                    actions.push(ConfigAction::Kept(id));
                }
                Err(e) => {
                    return Err(Error::ConfigVm {
                        name: conf.name.clone(),
                        source: Box::new(e),
                    })
                }
            }
        }
        *self = next;
        Ok(actions)
    }

    /// `vmctl reset [all|switches|vms]` (config.c's `config_purge`): drop
    /// every VM (ending running ones) and/or every switch. Ids stay claimed
    /// — vmd restarts its counter here and can hand out an id twice.
    pub fn reset(&mut self, kind: ResetKind) -> Vec<ConfigAction> {
        let mut actions = Vec::new();
        if matches!(kind, ResetKind::All | ResetKind::Vms) {
            for vm in std::mem::take(&mut self.vms) {
                actions.push(if vm.state.running {
                    ConfigAction::Killed {
                        id: vm.id,
                        tty: vm.tty,
                        waiter: vm.waiter,
                    }
                } else {
                    ConfigAction::Removed(vm.id)
                });
            }
        }
        if matches!(kind, ResetKind::All | ResetKind::Switches) {
            actions.extend(
                std::mem::take(&mut self.switches)
                    .into_iter()
                    .map(ConfigAction::DeleteSwitch),
            );
        }
        actions
    }

    /// VMs per staggered batch: `staggered start parallel N`, by default
    /// the number of online CPUs (never 0).
    pub fn stagger_parallel(&self, online_cpus: u32) -> usize {
        let n = self.global.staggered.parallel.unwrap_or(online_cpus).max(1);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Time between staggered batches: `delay S`, by default 30 s.
    pub fn stagger_delay(&self) -> Duration {
        Duration::from_secs(u64::from(self.global.staggered.delay))
    }

    /// The next batch of waiting VMs (vmd's `start_vm_batch`): up to
    /// [`Registry::stagger_parallel`] of them, in registration order, no
    /// longer waiting. Start each with [`Registry::begin_start`].
    pub fn next_batch(&mut self, online_cpus: u32) -> StartBatch {
        let parallel = self.stagger_parallel(online_cpus);
        let mut waiting = self.vms.iter_mut().filter(|vm| vm.state.waiting);
        let mut start = Vec::new();
        for vm in waiting.by_ref().take(parallel) {
            vm.state.waiting = false;
            start.push(vm.id);
        }
        let more = waiting.next().is_some();
        StartBatch { start, more }
    }

    /// The whole staggered start ahead, without changing anything: batch
    /// k starts k × delay from now.
    pub fn stagger_plan(&self, online_cpus: u32) -> Vec<PlannedBatch> {
        let parallel = self.stagger_parallel(online_cpus);
        let delay = self.stagger_delay();
        let waiting: Vec<VmId> = self
            .vms()
            .filter(|vm| vm.state.waiting)
            .map(|vm| vm.id)
            .collect();
        waiting
            .chunks(parallel)
            .zip(0u32..)
            .map(|(vms, k)| PlannedBatch {
                offset: delay.saturating_mul(k),
                vms: vms.to_vec(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::time::Instant;
    use vmconf::{Staggered, VmConf};

    fn config(names: &[&str]) -> Config {
        Config {
            vms: names.iter().map(|n| conf(n)).collect(),
            ..Config::default()
        }
    }

    fn switch(name: &str) -> SwitchConf {
        SwitchConf {
            name: name.into(),
            enabled: true,
            group: None,
            ifname: format!("br-{name}"),
            locked_lladdr: false,
            rdomain: None,
            up: true,
            line: 1,
        }
    }

    #[test]
    fn load_registers_enabled_vms_as_waiting_and_disabled_as_stopped() {
        let mut r = reg();
        let mut cfg = config(&["a", "b"]);
        cfg.vms[1].enabled = false;
        let actions = r.apply_config(&cfg, LoadMode::Load).unwrap();
        assert_eq!(
            actions,
            [ConfigAction::Registered(1), ConfigAction::Registered(2)]
        );
        assert_eq!(
            r.by_name("a").unwrap().state.shown(),
            proto::VmState::Waiting
        );
        let b = r.by_name("b").unwrap();
        assert!(b.state.disabled);
        assert_eq!(b.state.shown(), proto::VmState::Stopped);
        assert!(b.from_config);
    }

    #[test]
    fn load_keeps_existing_vms_unchanged() {
        let mut r = reg();
        r.apply_config(&config(&["a"]), LoadMode::Load).unwrap();
        let mut cfg = config(&["a", "b"]);
        cfg.vms[0].memory = Some(64 << 20);
        let actions = r.apply_config(&cfg, LoadMode::Load).unwrap();
        assert_eq!(
            actions,
            [ConfigAction::Kept(1), ConfigAction::Registered(2)]
        );
        assert_eq!(r.by_name("a").unwrap().memory(), 512 << 20);
    }

    #[test]
    fn reload_drops_stopped_vms_and_rereads_them() {
        let mut r = reg();
        r.apply_config(&config(&["a", "gone"]), LoadMode::Reload)
            .unwrap();
        let mut cfg = config(&["a"]);
        cfg.vms[0].memory = Some(64 << 20);
        let actions = r.apply_config(&cfg, LoadMode::Reload).unwrap();
        assert_eq!(
            actions,
            [
                ConfigAction::Removed(1),
                ConfigAction::Removed(2),
                ConfigAction::Registered(1)
            ]
        );
        assert_eq!(r.by_name("a").unwrap().memory(), 64 << 20);
        assert!(r.by_name("gone").is_none());
    }

    #[test]
    fn reload_keeps_running_vms_with_their_old_config() {
        let mut r = reg();
        r.apply_config(&config(&["a"]), LoadMode::Reload).unwrap();
        r.next_batch(1);
        r.begin_start(1, Instant::now()).unwrap();
        let mut cfg = config(&["a"]);
        cfg.vms[0].memory = Some(64 << 20);
        let actions = r.apply_config(&cfg, LoadMode::Reload).unwrap();
        assert_eq!(actions, [ConfigAction::Kept(1)]);
        assert_eq!(r.by_name("a").unwrap().memory(), 512 << 20);
        assert!(r.by_name("a").unwrap().state.running);
    }

    #[test]
    fn loading_a_config_vm_over_an_adhoc_one_makes_it_a_config_vm() {
        let mut r = reg();
        let id = r.register(conf("a"), &root(), false).unwrap();
        r.apply_config(&config(&["a"]), LoadMode::Load).unwrap();
        assert!(r.by_id(id).unwrap().from_config);
    }

    #[test]
    fn reload_replaces_global_settings_load_does_not() {
        let mut r = reg();
        let mut cfg = config(&[]);
        cfg.global.user_limits.max_cpus = 16;
        r.apply_config(&cfg, LoadMode::Load).unwrap();
        assert_eq!(r.global.user_limits.max_cpus, 4);
        r.apply_config(&cfg, LoadMode::Reload).unwrap();
        assert_eq!(r.global.user_limits.max_cpus, 16);
    }

    #[test]
    fn a_bad_vm_leaves_the_registry_unchanged() {
        let mut r = reg();
        r.apply_config(&config(&["a"]), LoadMode::Reload).unwrap();
        let mut cfg = config(&["b"]);
        cfg.vms.push(VmConf::new("nothing-to-boot"));
        cfg.vms[1].memory = Some(64 << 20);
        let err = r.apply_config(&cfg, LoadMode::Reload).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vm \"nothing-to-boot\" failed: no kernel or disk/cdrom specified"
        );
        assert!(r.by_name("a").is_some());
        assert!(r.by_name("b").is_none());
    }

    #[test]
    fn new_switches_are_created_once() {
        let mut r = reg();
        let mut cfg = config(&[]);
        cfg.switches = vec![switch("up")];
        let actions = r.apply_config(&cfg, LoadMode::Load).unwrap();
        assert_eq!(actions, [ConfigAction::CreateSwitch(switch("up"))]);
        assert!(r.apply_config(&cfg, LoadMode::Load).unwrap().is_empty());
    }

    #[test]
    fn reset_vms_kills_running_and_removes_all_keeping_switches() {
        let mut r = reg();
        let mut cfg = config(&["a", "b"]);
        cfg.switches = vec![switch("up")];
        r.apply_config(&cfg, LoadMode::Load).unwrap();
        r.next_batch(1);
        r.begin_start(1, Instant::now()).unwrap();
        let actions = r.reset(ResetKind::Vms);
        assert_eq!(
            actions,
            [
                ConfigAction::Killed {
                    id: 1,
                    tty: None,
                    waiter: None
                },
                ConfigAction::Removed(2)
            ]
        );
        assert_eq!(r.vms().count(), 0);
        assert_eq!(r.switches().len(), 1);
    }

    #[test]
    fn reset_switches_keeps_vms() {
        let mut r = reg();
        let mut cfg = config(&["a"]);
        cfg.switches = vec![switch("up")];
        r.apply_config(&cfg, LoadMode::Load).unwrap();
        assert_eq!(
            r.reset(ResetKind::Switches),
            [ConfigAction::DeleteSwitch(switch("up"))]
        );
        assert_eq!(r.vms().count(), 1);
    }

    #[test]
    fn reset_all_removes_vms_and_switches() {
        let mut r = reg();
        let mut cfg = config(&["a"]);
        cfg.switches = vec![switch("up")];
        r.apply_config(&cfg, LoadMode::Load).unwrap();
        assert_eq!(r.reset(ResetKind::All).len(), 2);
        assert_eq!(r.vms().count(), 0);
        assert!(r.switches().is_empty());
    }

    #[test]
    fn ids_survive_reset_without_reuse() {
        let mut r = reg();
        r.apply_config(&config(&["a", "b"]), LoadMode::Load)
            .unwrap();
        r.reset(ResetKind::Vms);
        r.apply_config(&config(&["c", "a"]), LoadMode::Load)
            .unwrap();
        assert_eq!(r.by_name("a").unwrap().id, 1);
        assert_eq!(r.by_name("c").unwrap().id, 3);
    }

    #[test]
    fn staggered_start_defaults_to_online_cpus_and_30s() {
        let mut r = reg();
        r.apply_config(&config(&["a", "b", "c", "d", "e"]), LoadMode::Reload)
            .unwrap();
        let plan = r.stagger_plan(2);
        assert_eq!(
            plan,
            [
                PlannedBatch {
                    offset: Duration::ZERO,
                    vms: vec![1, 2]
                },
                PlannedBatch {
                    offset: Duration::from_secs(30),
                    vms: vec![3, 4]
                },
                PlannedBatch {
                    offset: Duration::from_secs(60),
                    vms: vec![5]
                },
            ]
        );
    }

    #[test]
    fn staggered_start_uses_configured_parallel_and_delay() {
        let mut r = reg();
        let mut cfg = config(&["a", "b", "c"]);
        cfg.global.staggered = Staggered {
            parallel: Some(1),
            delay: 5,
        };
        r.apply_config(&cfg, LoadMode::Reload).unwrap();
        let offsets: Vec<_> = r
            .stagger_plan(8)
            .iter()
            .map(|b| b.offset.as_secs())
            .collect();
        assert_eq!(offsets, [0, 5, 10]);
    }

    #[test]
    fn next_batch_takes_waiting_vms_in_order_and_skips_disabled() {
        let mut r = reg();
        let mut cfg = config(&["a", "off", "b", "c"]);
        cfg.vms[1].enabled = false;
        r.apply_config(&cfg, LoadMode::Reload).unwrap();
        assert_eq!(
            r.next_batch(2),
            StartBatch {
                start: vec![1, 3],
                more: true
            }
        );
        assert_eq!(
            r.next_batch(2),
            StartBatch {
                start: vec![4],
                more: false
            }
        );
        assert_eq!(
            r.next_batch(2),
            StartBatch {
                start: vec![],
                more: false
            }
        );
    }

    #[test]
    fn parallel_zero_still_starts_one_at_a_time() {
        let mut r = reg();
        assert_eq!(r.stagger_parallel(0), 1);
        r.global.staggered.parallel = Some(0);
        assert_eq!(r.stagger_parallel(4), 1);
    }
}

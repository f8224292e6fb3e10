//! `vmctl status`: vmd's columns (vmctl.c's `print_vm_info`) and our JSON
//! form of the same rows.

use proto::{VmInfo, VmTarget};
use serde::Serialize;

use crate::scaled::fmt_scaled;

/// The header line.
pub const HEADER: &str = "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME";

/// vmctl keeps the owner in a 16-byte buffer: at most 15 bytes show.
const OWNER_MAX: usize = 15;

/// Which rows to show.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Only the VM with this id or name.
    pub target: Option<&'a VmTarget>,
    /// Only running VMs (`-r`).
    pub running_only: bool,
}

/// Whether a row counts as running: it has a process and an id.
fn is_running(vm: &VmInfo) -> bool {
    vm.pid.is_some_and(|pid| pid != 0) && vm.id != 0
}

impl Filter<'_> {
    /// Whether a row is shown.
    pub fn matches(&self, vm: &VmInfo) -> bool {
        if self.running_only && !is_running(vm) {
            return false;
        }
        match self.target {
            None | Some(VmTarget::All) => true,
            Some(VmTarget::Id(id)) => vm.id == *id,
            Some(VmTarget::Name(name)) => vm.name == *name,
        }
    }
}

/// A memory size for the MAXMEM/CURMEM columns.
fn memory(bytes: u64) -> String {
    i64::try_from(bytes)
        .ok()
        .and_then(fmt_scaled)
        .unwrap_or_else(|| "-".to_string())
}

/// The TTY column: the path without `/dev/` (`pts/3`), `-` without one.
fn tty_column(tty: Option<&str>) -> String {
    match tty {
        None | Some("") => "-".to_string(),
        Some(path) => match path.strip_prefix("/dev/") {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => match path.rsplit_once('/') {
                Some((_, base)) if !base.is_empty() => base.to_string(),
                _ => path.to_string(),
            },
        },
    }
}

/// Cuts a string to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One row in vmd's columns.
pub fn format_row(vm: &VmInfo) -> String {
    let owner = truncate(&vm.owner, OWNER_MAX);
    let maxmem = memory(vm.max_mem);
    if is_running(vm) {
        format!(
            "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}",
            vm.id,
            vm.pid.unwrap_or_default(),
            vm.vcpus,
            maxmem,
            memory(vm.cur_mem),
            tty_column(vm.tty.as_deref()),
            owner,
            vm.state.as_str(),
            vm.name
        )
    } else {
        format!(
            "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}",
            vm.id,
            "-",
            vm.vcpus,
            maxmem,
            "-",
            "-",
            owner,
            vm.state.as_str(),
            vm.name
        )
    }
}

/// The whole listing: the header, then every row the filter keeps, each
/// line newline-ended. The count says how many rows were listed (vmctl
/// fails when it is zero).
pub fn format_table(vms: &[VmInfo], filter: &Filter<'_>) -> (String, usize) {
    let mut text = format!("{HEADER}\n");
    let mut count = 0;
    for vm in vms.iter().filter(|vm| filter.matches(vm)) {
        text.push_str(&format_row(vm));
        text.push('\n');
        count += 1;
    }
    (text, count)
}

/// One VM in the JSON listing (our extension). Sizes are bytes; absent
/// values are `null`; `tty` is the full path.
#[derive(Debug, Serialize)]
pub struct JsonVm<'a> {
    /// The VM's id.
    pub id: u32,
    /// Its process id while running.
    pub pid: Option<i32>,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Configured memory in bytes.
    pub max_mem: u64,
    /// Memory in use in bytes, while running.
    pub cur_mem: Option<u64>,
    /// The console tty path while running.
    pub tty: Option<&'a str>,
    /// `user[:group]`.
    pub owner: &'a str,
    /// `running`, `stopped`, `paused`, `waiting` or `stopping`.
    pub state: &'static str,
    /// The VM's name.
    pub name: &'a str,
}

impl<'a> From<&'a VmInfo> for JsonVm<'a> {
    fn from(vm: &'a VmInfo) -> Self {
        let running = is_running(vm);
        JsonVm {
            id: vm.id,
            pid: vm.pid.filter(|_| running),
            vcpus: vm.vcpus,
            max_mem: vm.max_mem,
            cur_mem: running.then_some(vm.cur_mem),
            tty: vm.tty.as_deref().filter(|t| running && !t.is_empty()),
            owner: &vm.owner,
            state: vm.state.as_str(),
            name: &vm.name,
        }
    }
}

/// The JSON listing: an array of objects, one per row the filter keeps,
/// newline-ended; and the count of rows.
pub fn format_json(vms: &[VmInfo], filter: &Filter<'_>) -> (String, usize) {
    let rows: Vec<JsonVm<'_>> = vms
        .iter()
        .filter(|vm| filter.matches(vm))
        .map(JsonVm::from)
        .collect();
    let count = rows.len();
    // Serializing plain strings and numbers cannot fail.
    let mut text = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_string());
    text.push('\n');
    (text, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::VmState;

    const M: u64 = 1024 * 1024;

    fn rows() -> Vec<VmInfo> {
        vec![
            VmInfo {
                id: 1,
                pid: Some(4242),
                vcpus: 1,
                max_mem: 512 * M,
                cur_mem: 512 * M,
                tty: Some("/dev/pts/3".into()),
                owner: "root".into(),
                state: VmState::Running,
                name: "web".into(),
            },
            VmInfo {
                id: 2,
                pid: None,
                vcpus: 2,
                max_mem: 1024 * M,
                cur_mem: 0,
                tty: None,
                owner: "alice:staff".into(),
                state: VmState::Stopped,
                name: "db".into(),
            },
            VmInfo {
                id: 13,
                pid: Some(77),
                vcpus: 4,
                max_mem: 2048 * M,
                cur_mem: 1536 * M,
                tty: Some("/dev/pts/12".into()),
                owner: "averylongusername:group".into(),
                state: VmState::Paused,
                name: "build.example-1".into(),
            },
        ]
    }

    #[test]
    fn golden_table() {
        let (text, count) = format_table(&rows(), &Filter::default());
        assert_eq!(count, 3);
        assert_eq!(
            text,
            "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
             \x20   1  4242     1    512M    512M   pts/3         root  running web\n\
             \x20   2     -     2    1.0G       -       -  alice:staff  stopped db\n\
             \x20  13    77     4    2.0G    1.5G  pts/12 averylonguserna   paused build.example-1\n"
        );
    }

    #[test]
    fn header_is_vmds_format() {
        let header = format!(
            "{:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>12} {:>8} {}",
            "ID", "PID", "VCPUS", "MAXMEM", "CURMEM", "TTY", "OWNER", "STATE", "NAME"
        );
        assert_eq!(HEADER, header);
    }

    #[test]
    fn running_only_and_target_filters() {
        let vms = rows();
        let running = Filter {
            target: None,
            running_only: true,
        };
        let (text, count) = format_table(&vms, &running);
        assert_eq!(count, 2);
        assert!(!text.contains(" db\n"));

        let by_name = VmTarget::Name("db".into());
        let (text, count) = format_table(
            &vms,
            &Filter {
                target: Some(&by_name),
                running_only: false,
            },
        );
        assert_eq!(count, 1);
        assert!(text.ends_with(" db\n"));

        let by_id = VmTarget::Id(13);
        let filter = Filter {
            target: Some(&by_id),
            running_only: false,
        };
        assert_eq!(format_table(&vms, &filter).1, 1);

        // A stopped VM asked for with -r: nothing listed, only the header.
        let filter = Filter {
            target: Some(&by_name),
            running_only: true,
        };
        assert_eq!(format_table(&vms, &filter), (format!("{HEADER}\n"), 0));
    }

    #[test]
    fn tty_column_forms() {
        assert_eq!(tty_column(Some("/dev/pts/0")), "pts/0");
        assert_eq!(tty_column(Some("/dev/ttyp9")), "ttyp9");
        assert_eq!(tty_column(Some("/tmp/x/console")), "console");
        assert_eq!(tty_column(Some("")), "-");
        assert_eq!(tty_column(None), "-");
    }

    #[test]
    fn running_vm_without_tty_shows_a_dash() {
        let mut vm = rows().remove(0);
        vm.tty = None;
        assert!(format_row(&vm).contains("    512M       -         root"));
    }

    #[test]
    fn owner_is_cut_at_character_boundaries() {
        assert_eq!(truncate("ééééééééé", 15), "ééééééé");
        assert_eq!(truncate("short", 15), "short");
    }

    #[test]
    fn json_rows() {
        let (text, count) = format_json(&rows(), &Filter::default());
        assert_eq!(count, 3);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let list = value.as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[0],
            serde_json::json!({
                "id": 1, "pid": 4242, "vcpus": 1,
                "max_mem": 536870912u64, "cur_mem": 536870912u64,
                "tty": "/dev/pts/3", "owner": "root",
                "state": "running", "name": "web"
            })
        );
        assert_eq!(
            list[1],
            serde_json::json!({
                "id": 2, "pid": null, "vcpus": 2,
                "max_mem": 1073741824u64, "cur_mem": null,
                "tty": null, "owner": "alice:staff",
                "state": "stopped", "name": "db"
            })
        );
        // JSON keeps the full owner; the columns cut it.
        assert_eq!(list[2]["owner"], "averylongusername:group");
    }

    #[test]
    fn json_with_nothing_listed_is_an_empty_array() {
        let filter = Filter {
            target: None,
            running_only: true,
        };
        let stopped: Vec<_> = rows().into_iter().filter(|v| v.pid.is_none()).collect();
        assert_eq!(format_json(&stopped, &filter), ("[]\n".to_string(), 0));
    }
}

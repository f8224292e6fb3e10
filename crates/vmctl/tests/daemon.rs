//! The real vmctl against the real vmd: a daemon on a temporary socket,
//! driven only through the vmctl binary, checking what vmctl prints and
//! its exit status. Needs root for the daemon (skipped otherwise); the
//! vmd binary is taken from the same target directory, built if missing.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::vmd::{is_root, stderr, stdout, User, Vmd, HEADER};

/// A stopped config VM "cfg1" with 64M and a kernel file.
fn conf_with_stopped_vm(dir: &Path) -> String {
    let kernel = dir.join("kernel");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    format!(
        "vm \"cfg1\" {{\n  disable\n  boot \"{}\"\n  memory 64M\n}}\n",
        kernel.display()
    )
}

#[test]
fn status_of_an_empty_daemon_is_the_header_and_fails() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    let out = vmd.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), HEADER);
    assert_eq!(stderr(&out), "");
}

#[test]
fn config_vm_rows_and_stop_errors() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let vmd = Vmd::start(&conf_with_stopped_vm(tmp.path()));

    let out = vmd.vmctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{HEADER}    1     -     1   64.0M       -       -         root  stopped cfg1\n")
    );
    let out = vmd.vmctl(&["show", "-r"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );
    let out = vmd.vmctl(&["status", "--json", "cfg1"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["name"], "cfg1");
    assert_eq!(json[0]["max_mem"], 64 << 20);
    assert_eq!(json[0]["state"], "stopped");
    let out = vmd.vmctl(&["status", "nosuch"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );

    let out = vmd.vmctl(&["stop", "cfg1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "stopping vm cfg1: cannot stop vm that is not running\n"
    );
    let out = vmd.vmctl(&["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "stopping vm nosuch: vm not found\n");
    let out = vmd.vmctl(&["stop", "-a"]);
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
    let out = vmd.vmctl(&["pause", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: pause vm command failed: No such file or directory\n"
    );
    let out = vmd.vmctl(&["console", "cfg1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: console not found\n");
}

#[test]
fn start_errors_come_back_in_vmctls_words() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    let out = vmd.vmctl(&["start", "-t", "nosuch", "copy"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: invalid template\n");

    // Missing files are caught by vmctl itself before the daemon.
    let disk = vmd.dir.path().join("disk.img");
    let out = vmd.vmctl(&["start", "-d", disk.to_str().unwrap(), "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "vmctl: invalid disk path: No such file or directory\n"
    );
}

#[test]
fn load_reload_reset_and_log_for_root() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    vmd.file(
        "extra.conf",
        conf_with_stopped_vm(vmd.dir.path()).as_bytes(),
    );
    let out = vmd
        .command()
        .current_dir(vmd.dir.path())
        .args(["load", "extra.conf"])
        .output()
        .unwrap();
    assert_eq!((out.status.code(), stderr(&out)), (Some(0), String::new()));
    assert_eq!(vmd.vmctl(&["status", "cfg1"]).status.code(), Some(0));

    let broken = vmd.file("broken.conf", b"vm {\n");
    let out = vmd.vmctl(&["load", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "vmctl: command failed: Invalid argument\n");

    for args in [&["log", "verbose"][..], &["log", "brief"], &["reload"]] {
        let out = vmd.vmctl(args);
        assert_eq!(
            (out.status.code(), stderr(&out)),
            (Some(0), String::new()),
            "{args:?}"
        );
    }
    let out = vmd.vmctl(&["reset", "vms"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        vmd.vmctl(&["status"]).status.code(),
        Some(1),
        "reset forgot the VMs"
    );
}

#[test]
fn root_only_commands_are_refused_to_other_users() {
    if !is_root() {
        return;
    }
    let vmd = Vmd::start("");
    std::fs::set_permissions(&vmd.sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let user = User::create();
    let as_user = |args: &[&str]| {
        vmd.command()
            .uid(user.uid)
            .gid(user.gid)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["reload"][..],
        &["load", "/etc/vm.conf"],
        &["reset"],
        &["log", "verbose"],
    ] {
        let out = as_user(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out),
            "vmctl: command failed: Operation not permitted\n",
            "{args:?}"
        );
    }
    // Listing is for everyone.
    let out = as_user(&["status"]);
    assert_eq!(
        (out.status.code(), stdout(&out)),
        (Some(1), HEADER.to_string())
    );
}

//! The vmctl binary end to end against a scripted control socket: exit
//! statuses, what goes to stdout and stderr, and what is sent.

mod common;

use common::{nowhere, vmctl, FakeVmd};
use proto::{Request, Response, VmInfo, VmState, VmTarget};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn row(id: u32, name: &str) -> VmInfo {
    VmInfo {
        id,
        pid: Some(300 + id as i32),
        vcpus: 2,
        max_mem: 1 << 30,
        cur_mem: 1 << 30,
        tty: Some(format!("/dev/pts/{id}")),
        owner: "root".into(),
        state: VmState::Running,
        name: name.into(),
    }
}

#[test]
fn absent_daemon_is_reported_with_the_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = nowhere(dir.path());
    let out = vmctl()
        .arg("-s")
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "vmctl: connect: {}: No such file or directory\n",
            socket.display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn socket_comes_from_the_environment_unless_given() {
    let vmd = FakeVmd::start(vec![Response::VmInfo(vec![row(1, "a")])]);
    let out = vmctl()
        .env("VMD_SOCKET", &vmd.socket)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(vmd.requests(), [Request::Status { target: None }]);

    // -s wins over the environment.
    let dir = tempfile::tempdir().unwrap();
    let out = vmctl()
        .env("VMD_SOCKET", "/nonexistent/env.sock")
        .arg("-s")
        .arg(nowhere(dir.path()))
        .arg("status")
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains(&nowhere(dir.path()).display().to_string()));
}

#[test]
fn status_columns_on_stdout() {
    let vmd = FakeVmd::start(vec![Response::VmInfo(vec![row(1, "web"), row(2, "db")])]);
    let out = vmd.run(&["stat", "web"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n\
         \x20   1   301     2    1.0G    1.0G   pts/1         root  running web\n"
    );
    assert_eq!(
        vmd.requests(),
        [Request::Status {
            target: Some(VmTarget::Name("web".into()))
        }]
    );
}

#[test]
fn status_with_nothing_listed_fails() {
    let vmd = FakeVmd::start(vec![Response::VmInfo(vec![])]);
    let out = vmd.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        "   ID   PID VCPUS  MAXMEM  CURMEM     TTY        OWNER    STATE NAME\n"
    );
}

#[test]
fn status_json_is_parseable() {
    let vmd = FakeVmd::start(vec![Response::VmInfo(vec![row(3, "x")])]);
    let out = vmd.run(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value[0]["id"], 3);
    assert_eq!(value[0]["vcpus"], 2);
    assert_eq!(value[0]["state"], "running");
}

#[test]
fn start_sends_absolute_paths_and_reports_the_tty() {
    let vmd = FakeVmd::start(vec![Response::StartOk {
        id: 1,
        tty: "/dev/pts/9".into(),
    }]);
    std::fs::write(vmd.dir.path().join("kernel"), b"k").unwrap();
    std::fs::write(vmd.dir.path().join("disk.img"), b"raw").unwrap();
    let out = vmctl()
        .current_dir(vmd.dir.path())
        .arg("-s")
        .arg(&vmd.socket)
        .args([
            "start",
            "-b",
            "kernel",
            "-d",
            "./disk.img",
            "-m",
            "64M",
            "-C",
            "2",
            "tiny",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "vmctl: started vm 1 successfully, tty /dev/pts/9\n"
    );
    let requests = vmd.requests();
    let [Request::Start(start)] = requests.as_slice() else {
        panic!("{requests:?}");
    };
    assert_eq!(start.conf.name, "tiny");
    assert!(start.conf.boot.as_ref().unwrap().is_absolute());
    assert!(start.conf.boot.as_ref().unwrap().ends_with("kernel"));
    assert!(start.conf.disks[0].path.ends_with("disk.img"));
    assert!(start.conf.disks[0].path.is_absolute());
    assert_eq!(start.conf.memory, Some(64 << 20));
    assert_eq!(start.conf.cpus, Some(2));
}

#[test]
fn daemon_errors_fail_with_vmctls_words() {
    let vmd = FakeVmd::start(vec![Response::Error {
        code: proto::VMD_VM_STOP_INVALID,
    }]);
    let out = vmd.run(&["stop", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "stopping vm web: cannot stop vm that is not running\n"
    );

    let vmd = FakeVmd::start(vec![Response::Error { code: libc::EPERM }]);
    let out = vmd.run(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "vmctl: command failed: Operation not permitted\n"
    );
}

#[test]
fn usage_errors_never_reach_the_daemon() {
    let vmd = FakeVmd::start(vec![]);
    let out = vmd.run(&["stop"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "usage:\tvmctl [-v] stop [-fw] [id | -a]\n"
    );
    let out = vmd.run(&["st"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("ambiguous argument: st\nusage:\t"));
    let out = vmd.run(&["send", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "vmctl: send: not yet supported\n");
    assert!(vmd.requests().is_empty());
}

#[test]
fn verbose_reports_the_exchange() {
    let vmd = FakeVmd::start(vec![Response::Paused { id: 4 }]);
    let out = vmd.run(&["-v", "pause", "4"]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.starts_with("vmctl: sending pause request\n"), "{err}");
    assert!(err.ends_with("vmctl: paused vm 4 successfully\n"), "{err}");
}

#[test]
fn daemon_hanging_up_is_pipe_closed() {
    // The scripted daemon answers one request and closes; the second
    // request of `stop -a` finds the connection gone.
    let vmd = FakeVmd::start(vec![Response::VmInfo(vec![row(1, "a")])]);
    let out = vmd.run(&["stop", "-a"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "stopping vm a: vmctl: pipe closed\n");
}

#[test]
fn arguments_that_are_not_utf8_are_refused_not_a_crash() {
    use std::os::unix::ffi::OsStrExt;
    let out = vmctl()
        .arg("status")
        .arg(std::ffi::OsStr::from_bytes(b"w\xffb"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "vmctl: argument is not valid UTF-8: w\u{fffd}b\n"
    );
}

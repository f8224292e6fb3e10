//! The public API the daemon and vmctl use: `load`, `load_str`, `check`,
//! `-D` macros, includes, error reporting and the wire form of the types.

use std::path::{Path, PathBuf};

use vmconf::{check, load, load_str, parse_define, ConfigError, DiskFormat, Warning, WarningKind};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn load_resolves_paths_and_sniffs_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = write(dir.path(), "bsd", "k");
    let qcow = dir.path().join("a.qcow2");
    std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03rest").unwrap();
    let raw = write(dir.path(), "b.img", "plain");
    let conf = write(
        dir.path(),
        "vm.conf",
        &format!(
            "vm \"v\" {{\n boot \"{}\"\n disk \"{}\"\n disk \"{}\"\n}}\n",
            kernel.display(),
            qcow.display(),
            raw.display()
        ),
    );
    let (config, warnings) = load(&conf, &[]).unwrap();
    assert!(warnings.is_empty());
    let vm = &config.vms[0];
    assert_eq!(
        vm.boot.as_deref(),
        Some(kernel.canonicalize().unwrap().as_path())
    );
    assert_eq!(vm.disks[0].format, DiskFormat::Qcow2);
    assert_eq!(vm.disks[1].format, DiskFormat::Raw);
}

#[test]
fn command_line_macros_override_file_macros() {
    let defines = vec![parse_define("mem=2G").unwrap()];
    let (config, warnings) = load_str(
        "x.conf",
        "mem = \"1G\"\nvm \"m\" {\n boot \"/\"\n memory $mem\n}\n",
        &defines,
    )
    .unwrap();
    assert_eq!(config.vms[0].memory, Some(2 << 30));
    assert!(warnings.is_empty());
}

#[test]
fn unused_command_line_macro_is_warned() {
    let (_, warnings) = load_str("x.conf", "", &[("spare".into(), "1".into())]).unwrap();
    assert_eq!(warnings, vec![Warning::MacroNotUsed("spare".into())]);
    assert_eq!(warnings[0].to_string(), "warning: macro 'spare' not used");
}

#[test]
fn parse_define_splits_at_the_last_equals() {
    assert_eq!(parse_define("a=b=c"), Some(("a=b".into(), "c".into())));
    assert_eq!(parse_define("novalue"), None);
}

#[test]
fn nested_includes_contribute_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let inner = write(
        dir.path(),
        "inner.conf",
        "switch \"s\" { interface br-inner }\n",
    );
    let middle = write(
        dir.path(),
        "middle.conf",
        &format!(
            "include \"{}\"\nvm \"mid\" {{ boot \"/\" }}\n",
            inner.display()
        ),
    );
    let top = write(
        dir.path(),
        "top.conf",
        &format!(
            "vm \"first\" {{ boot \"/\" }}\ninclude \"{}\"\nvm \"last\" {{ boot \"/\" }}\n",
            middle.display()
        ),
    );
    let (config, _) = load(&top, &[]).unwrap();
    let names: Vec<&str> = config.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["first", "mid", "last"]);
    assert_eq!(config.switches[0].ifname, "br-inner");
    // Line numbers are per file.
    assert_eq!(config.vms[1].line, 2);
    assert_eq!(config.vms[2].line, 3);
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let inc = write(dir.path(), "bad.inc", "\n\nvm \"x\" { cpus 0 }\n");
    let top = write(
        dir.path(),
        "top.conf",
        &format!("include \"{}\"\n", inc.display()),
    );
    let err = load(&top, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}:3: invalid number of cpus: 0", inc.display())
    );
}

#[test]
fn missing_file_is_flagged_not_found() {
    let err = load(Path::new("/nonexistent/vm.conf"), &[]).unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        "failed to open /nonexistent/vm.conf: No such file or directory"
    );
    let c = check(Path::new("/nonexistent/vm.conf"), &[]);
    assert!(!c.ok);
    assert_eq!(c.exit_code(), 1);
}

#[test]
fn other_errors_are_not_not_found() {
    let err = load_str("x.conf", "bogus\n", &[]).unwrap_err();
    assert!(!err.is_not_found());
    let first = err.errors().next().unwrap();
    assert_eq!(first.location.as_ref().unwrap().line, 1);
    assert!(matches!(first.error, ConfigError::Parse(_)));
}

#[test]
fn errors_display_one_per_line() {
    let err = load_str(
        "x.conf",
        "vm \"a\" {\n cpus 0\n}\nvm \"b\" {\n cpus 300\n}\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.conf:2: invalid number of cpus: 0\nx.conf:5: invalid number of cpus: 300"
    );
}

#[test]
fn check_prints_warnings_then_ok() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "w.conf",
        "vm \"r\" {\n boot \"/\"\n memory 1500000000\n}\n",
    );
    let c = check(&conf, &[]);
    assert!(c.ok);
    assert_eq!(c.exit_code(), 0);
    assert_eq!(
        c.output,
        format!(
            "{}:3: warning: size rounded to 1430 megabytes\nconfiguration OK\n",
            conf.display()
        )
    );
}

#[test]
fn load_returns_located_warnings() {
    let (_, w) = load_str(
        "x.conf",
        "vm \"a\" {\n boot \"/\"\n interface { switch \"nope\" }\n}\n",
        &[],
    )
    .unwrap();
    match &w[..] {
        [Warning::At(loc, WarningKind::UnknownSwitch { vm, switch })] => {
            assert_eq!((loc.line, vm.as_str(), switch.as_str()), (1, "a", "nope"));
        }
        other => panic!("unexpected warnings {other:?}"),
    }
}

#[test]
fn config_survives_both_wire_encodings() {
    let (config, _) = load_str(
        "x.conf",
        "local inet6\nsocket owner root\nuser limit cpus 2\nswitch \"s\" { interface br9 }\nvm \"a\" {\n boot \"/\"\n interface { switch \"s\" lladdr fe:e1:ba:d0:00:09 }\n allow instance { owner root, memory }\n}\n",
        &[],
    )
    .unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<vmconf::Config>(&json).unwrap(),
        config
    );
    let bytes = postcard::to_allocvec(&config).unwrap();
    assert_eq!(
        postcard::from_bytes::<vmconf::Config>(&bytes).unwrap(),
        config
    );
}

#[test]
fn include_chains_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        let next = dir.path().join(format!("f{}.conf", i + 1));
        write(
            dir.path(),
            &format!("f{i}.conf"),
            &format!("include \"{}\"\n", next.display()),
        );
    }
    write(dir.path(), "f40.conf", "vm \"deep\" { boot \"/\" }\n");
    let err = load(&dir.path().join("f0.conf"), &[]).unwrap_err();
    let msgs: Vec<String> = err.errors().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(msgs[0].ends_with("includes nested too deeply"), "{msgs:?}");
}

#[test]
fn options_in_an_included_file_outside_a_block_are_errors_there() {
    let dir = tempfile::tempdir().unwrap();
    let inc = write(dir.path(), "opts.inc", "memory 1G\ncpus 2\n");
    let err = load_str("x.conf", &format!("include \"{}\"\n", inc.display()), &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{0}:1: syntax error\n{0}:2: syntax error", inc.display())
    );
}

#[test]
fn endless_include_is_refused_not_read_forever() {
    let err = load_str("x.conf", "include \"/dev/zero\"\n", &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.conf:1: failed to include file /dev/zero: File too large"
    );
}

#[test]
fn a_fifo_named_as_disk_does_not_block_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (config, _) = load_str(
        "x.conf",
        &format!("vm \"p\" {{\n disk \"{}\"\n}}\n", fifo.display()),
        &[],
    )
    .unwrap();
    assert_eq!(config.vms[0].disks[0].format, DiskFormat::Raw);
}

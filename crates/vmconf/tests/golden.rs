//! Golden tests in the manner of OpenBSD's regress/usr.sbin/vmd/config:
//! each `golden/NAME.conf` is checked as `vmd -n -f NAME.conf` run from the
//! `golden` directory would, and the output must equal `golden/NAME.ok`.
//! Cases named `ok-*` must pass, `err-*` must fail.
//!
//! `VMCONF_BLESS=1 cargo test -p vmconf --test golden` rewrites the `.ok`
//! files; review the diff before committing it.

use std::path::Path;

#[test]
fn golden_configs_match_expected_output() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    // Relative paths in the cases resolve against the current directory, as
    // in vmd. This is the only test in this binary, so changing it is safe.
    std::env::set_current_dir(&dir).expect("enter tests/golden");
    let bless = std::env::var_os("VMCONF_BLESS").is_some();

    let mut cases: Vec<String> = std::fs::read_dir(".")
        .expect("list tests/golden")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".conf"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} golden cases", cases.len());

    let mut failures = Vec::new();
    for name in &cases {
        let check = vmconf::check(Path::new(name), &[]);
        let ok_file = format!("{}.ok", name.trim_end_matches(".conf"));
        if bless {
            std::fs::write(&ok_file, &check.output).expect("write .ok");
            continue;
        }
        let expected = std::fs::read_to_string(&ok_file)
            .unwrap_or_else(|e| panic!("{ok_file}: {e} (bless with VMCONF_BLESS=1)"));
        if expected != check.output {
            failures.push(format!(
                "{name}:\n--- expected\n{expected}--- got\n{}",
                check.output
            ));
        }
        if check.ok != name.starts_with("ok-") {
            failures.push(format!("{name}: ok={} contradicts its name", check.ok));
        }
        if check.ok != check.output.ends_with("configuration OK\n") {
            failures.push(format!("{name}: exit status and output disagree"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

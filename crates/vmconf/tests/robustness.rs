//! Whatever the input, the parser returns: no panic, no endless loop, and
//! every error points at a line that exists.

use vmconf::{load_str, Diag};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "vm",
    "switch",
    "instance",
    "boot",
    "device",
    "cdrom",
    "disk",
    "net",
    "format",
    "raw",
    "qcow2",
    "interface",
    "interfaces",
    "local",
    "lladdr",
    "locked",
    "group",
    "rdomain",
    "up",
    "down",
    "enable",
    "disable",
    "memory",
    "owner",
    "allow",
    "cpus",
    "initrd",
    "cmdline",
    "prefix",
    "inet6",
    "socket",
    "staggered",
    "start",
    "parallel",
    "delay",
    "user",
    "limit",
    "agentx",
    "context",
    "path",
    "sev",
    "seves",
    "include",
    "{",
    "}",
    ",",
    "=",
    "\n",
    "\n",
    " ",
    " ",
    "\t",
    "\\\n",
    "\\",
    "#",
    "\"",
    "'",
    "$",
    "$m",
    "$undefined",
    "m = \"1G\"",
    "0",
    "1",
    "-1",
    "4",
    "255",
    "99999999999999999999",
    "512M",
    "1.5G",
    "1K",
    "/",
    "\"/\"",
    "root",
    ":root",
    "root:root",
    "nobody",
    "fe:e1:ba:d0:00:01",
    "01:00:5e:00:00:01",
    "tap",
    "tap0",
    "br0",
    "100.64.0.0/10",
    "fd00::/8",
    "web",
    "\"a b\"",
    "-",
    "!",
    "(",
    ")",
    "\0",
    "é",
];

fn check_input(text: &str) {
    let lines = text.matches('\n').count() as u32 + 1;
    if let Err(errors) = load_str("t.conf", text, &[("m".into(), "2G".into())]) {
        for d in &errors.diags {
            if let Diag::Error(e) = d {
                if let Some(loc) = &e.location {
                    assert_eq!(loc.file, "t.conf", "{text:?}");
                    assert!(
                        loc.line >= 1 && loc.line <= lines,
                        "line {} of {lines} in {text:?}: {e}",
                        loc.line
                    );
                }
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn random_token_soup_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..4000 {
        let n = rng.below(40);
        let mut text = String::new();
        for _ in 0..n {
            text.push_str(PIECES[rng.below(PIECES.len())]);
            if rng.below(3) == 0 {
                text.push(' ');
            }
        }
        check_input(&text);
    }
}

#[test]
fn mutated_golden_files_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    let mut rng = Rng(42);
    for seed in &seeds {
        for _ in 0..60 {
            let mut bytes = seed.clone();
            for _ in 0..=rng.below(4) {
                let at = if bytes.is_empty() {
                    0
                } else {
                    rng.below(bytes.len())
                };
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, b"{}\n\"\\#$=,-0a"[rng.below(12)]),
                    _ if !bytes.is_empty() => bytes[at] = rng.next() as u8,
                    _ => {}
                }
            }
            check_input(&String::from_utf8_lossy(&bytes));
        }
    }
}

//! man/vm.conf.5 documents every keyword the parser accepts.

#[test]
fn every_keyword_is_documented_in_the_manual() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../man/vm.conf.5"),
    )
    .expect("read man/vm.conf.5");
    // Reserved by OpenBSD's grammar without any statement using them.
    let reserved_only = ["add", "id", "size"];
    let missing: Vec<&str> = vmconf::lex::keywords()
        .filter(|k| !reserved_only.contains(k))
        .filter(|k| {
            !page.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words
                    .windows(2)
                    .any(|w| (w[0] == "Ic" || w[0] == ".Ic") && w[1] == *k)
                    || words
                        .windows(2)
                        .any(|w| w[0] == "Ic" && w[1].trim_end_matches(',') == *k)
                    || (l.starts_with(".It Ic") && words.contains(k))
            })
        })
        .collect();
    assert!(missing.is_empty(), "undocumented keywords: {missing:?}");
}

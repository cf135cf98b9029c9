//! `docs/config.md`'s generated tables match the registries they describe. After adding a block
//! type or a custom-block op, regenerate them with
//! `MIXSWEEP_BLESS=1 cargo test -p mixsweep-model --test docs`.

use std::path::PathBuf;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md")
}

/// The text between `<!-- generated: NAME -->` and `<!-- end generated: NAME -->`.
fn section<'a>(doc: &'a str, name: &str) -> (usize, usize, &'a str) {
    let open = format!("<!-- generated: {name} -->\n");
    let close = format!("<!-- end generated: {name} -->");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("docs/config.md lacks `{open}`"))
        + open.len();
    let end = doc[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("docs/config.md lacks `{close}`"))
        + start;
    (start, end, &doc[start..end])
}

#[test]
fn generated_tables_match_the_registries() {
    let path = docs();
    let mut doc = std::fs::read_to_string(&path).unwrap();
    let tables = [
        ("blocks", mixsweep_model::blocks::markdown_table()),
        (
            "custom ops",
            mixsweep_model::blocks::custom::ops_table::markdown_table(),
        ),
    ];
    let bless = std::env::var_os("MIXSWEEP_BLESS").is_some();
    for (name, want) in tables {
        let (start, end, got) = section(&doc, name);
        if got == want {
            continue;
        }
        assert!(
            bless,
            "docs/config.md's `{name}` table is out of date: run MIXSWEEP_BLESS=1 cargo test -p mixsweep-model --test docs\n--- in the docs:\n{got}\n--- from the registry:\n{want}"
        );
        doc.replace_range(start..end, &want);
    }
    if bless {
        std::fs::write(&path, doc).unwrap();
    }
}

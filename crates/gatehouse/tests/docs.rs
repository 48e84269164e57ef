//! The README's configuration reference is the truth: its TOML block parses to
//! exactly the built-in defaults, and names every key.

#![allow(clippy::unwrap_used)]

use gatehouse::Config;

fn readme_config_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + 8;
    let len = readme[start..].find("```").unwrap();
    readme[start..start + len].to_owned()
}

#[test]
fn the_readme_configuration_block_is_exactly_the_defaults() {
    let documented = Config::from_toml_str(&readme_config_block()).unwrap();
    assert_eq!(documented, Config::default());
}

#[test]
fn the_readme_configuration_block_names_every_key() {
    let block = readme_config_block();
    // A key missing from the block would still parse to its default, so the first
    // test cannot see it: every field name of the config must appear as `key =`.
    let debug = format!("{:?}", Config::default());
    for key in debug
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.contains('_') || ["host", "port", "service"].contains(w))
        .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    {
        assert!(block.contains(&format!("{key} =")), "README lacks `{key}`");
    }
}

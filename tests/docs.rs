//! Keeps the README's configuration table true: the same variables, in the same order, with
//! the same defaults as `config::VARIABLES`, which `--help` is generated from.

use cloudwatch_publisher::config::VARIABLES;

fn readme_rows() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = readme
        .split("| variable | default | meaning |")
        .nth(1)
        .expect("README has the configuration table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_string();
            (unquote(cells[1]), unquote(cells[2]))
        })
        .collect()
}

#[test]
fn readme_configuration_table_matches_the_code() {
    let expected: Vec<(String, String)> = VARIABLES
        .iter()
        .map(|v| {
            let default = if v.default.is_empty() {
                "(unset)"
            } else {
                v.default
            };
            (v.name.to_string(), default.to_string())
        })
        .collect();
    assert_eq!(readme_rows(), expected);
}

//! Keeps the configuration docs true: the README's table and docs/configuration.md list the
//! same variables, in the same order, with the same defaults (and, in the reference, the same
//! examples) as `config::VARIABLES`, which `--help` is generated from.

use cloudwatch_publisher::VARIABLES;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path)
}

fn shown_default(default: &str) -> &str {
    if default.is_empty() {
        "(unset)"
    } else {
        default
    }
}

fn readme_rows() -> Vec<(String, String)> {
    let readme = read("README.md");
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
        .map(|v| (v.name.to_string(), shown_default(v.default).to_string()))
        .collect();
    assert_eq!(readme_rows(), expected);
}

/// Each `## \`NAME\`` section of docs/configuration.md: name, default, example.
fn reference_sections() -> Vec<(String, String, String)> {
    let text = read("docs/configuration.md");
    text.split("\n## `")
        .skip(1)
        .map(|section| {
            let name = section.split('`').next().unwrap().to_string();
            let field = |label: &str| {
                let line = section
                    .lines()
                    .find_map(|l| l.strip_prefix(label))
                    .unwrap_or_else(|| panic!("{name}: no {label:?} line"));
                match line.split('`').nth(1) {
                    Some(quoted) => quoted.to_string(),
                    None => line.trim().to_string(),
                }
            };
            (name.clone(), field("Default: "), field("Example: "))
        })
        .collect()
}

#[test]
fn configuration_reference_matches_the_code() {
    let expected: Vec<(String, String, String)> = VARIABLES
        .iter()
        .map(|v| {
            (
                v.name.to_string(),
                shown_default(v.default).to_string(),
                format!("{}={}", v.name, v.example),
            )
        })
        .collect();
    assert_eq!(reference_sections(), expected);
}

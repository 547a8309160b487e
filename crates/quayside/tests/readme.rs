//! The README's flag tables against the binary's `--help`: every flag a table names exists for
//! that subcommand, with the env var and the default the table gives, and every flag `--help`
//! lists is documented in the subcommand's section (global flags and the shared storage flags
//! in `registry`'s).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quayside");

/// One flag as `--help` shows it.
#[derive(Debug, Default)]
struct HelpFlag {
    env: Option<String>,
    default: Option<String>,
}

fn help(args: &[&str]) -> BTreeMap<String, HelpFlag> {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut flags: BTreeMap<String, HelpFlag> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let flag = trimmed.strip_prefix("-h, ").unwrap_or(trimmed);
        let flag = flag.split_once(", ").map_or(
            flag,
            |(short, long)| {
                if short.len() == 2 { long } else { flag }
            },
        );
        if indent <= 6 && flag.starts_with("--") {
            let name = flag.split([' ', '=', '[']).next().unwrap().to_owned();
            flags.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let Some(name) = &current else { continue };
        let entry = flags.get_mut(name).unwrap();
        // clap puts these at the end of a short help line, or on lines of their own.
        if let Some((_, env)) = trimmed.split_once("[env: ") {
            entry.env = Some(env.split(['=', ']']).next().unwrap().to_owned());
        }
        if let Some((_, default)) = trimmed.split_once("[default: ") {
            entry.default = Some(default.split(']').next().unwrap().to_owned());
        }
    }
    flags.remove("--help");
    flags.remove("--version");
    flags
}

/// The README section of each `## \`quayside <sub>\`` heading.
fn sections() -> BTreeMap<String, String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut out = BTreeMap::new();
    for part in readme.split("\n## ").skip(1) {
        if let Some(rest) = part.strip_prefix("`quayside ") {
            let name = rest.split('`').next().unwrap().to_owned();
            out.insert(name, part.to_owned());
        }
    }
    out
}

/// The names in backticks of one table cell, with `_SUFFIX` shorthand expanded from the one
/// before (`QUAYSIDE_PROXY_USERNAME`, `_PASSWORD`).
fn names(cell: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in cell.split('`').skip(1).step_by(2) {
        match (name.strip_prefix('_'), out.last()) {
            (Some(suffix), Some(previous)) => {
                let stem = previous.rsplit_once('_').unwrap().0;
                out.push(format!("{stem}_{suffix}"));
            }
            _ => out.push(name.to_owned()),
        }
    }
    out
}

/// Flag-table rows of a section: (flags, env vars, default cell).
fn rows(section: &str) -> Vec<(Vec<String>, Vec<String>, String)> {
    section
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let flags = names(cells[0].trim_start_matches("| "));
            let envs = names(cells[1])
                .into_iter()
                .filter(|e| !e.starts_with("--"))
                .collect();
            (flags, envs, cells.get(2).unwrap_or(&"").to_string())
        })
        .collect()
}

#[test]
fn the_readme_flag_tables_match_every_subcommands_help() {
    let sections = sections();
    let subcommands = [
        "registry",
        "gc",
        "fsck",
        "proxy",
        "image",
        "token-refresher",
        "credentials",
        "check",
    ];
    let mut checked = 0;
    for sub in subcommands {
        let section = sections
            .get(sub)
            .unwrap_or_else(|| panic!("no README section for {sub}"));
        let mut flags = help(&[sub]);
        // `image`'s own subcommands have their flags too.
        if sub == "image" {
            for leaf in ["name", "pull-secret", "publish", "port", "ensure-repo"] {
                flags.extend(help(&[sub, leaf]));
            }
        }
        for (table_flags, envs, default) in rows(section) {
            for (i, flag) in table_flags.iter().enumerate() {
                let known = flags.get(flag).unwrap_or_else(|| {
                    panic!("README's `quayside {sub}` table names {flag}, which `quayside {sub} --help` does not list")
                });
                if envs.len() == table_flags.len() {
                    assert_eq!(
                        known.env.as_deref(),
                        Some(envs[i].as_str()),
                        "{sub} {flag}: env"
                    );
                }
                let default = default.trim();
                let single = default.starts_with('`')
                    && default.ends_with('`')
                    && default.matches('`').count() == 2;
                if single
                    && table_flags.len() == 1
                    && let Some(shown) = &known.default
                {
                    assert_eq!(default.trim_matches('`'), shown, "{sub} {flag}: default");
                }
                checked += 1;
            }
        }
        // Every flag is documented: in this section, or (global and storage flags) in
        // registry's, or (the location flags `credentials` shares) in token-refresher's.
        let related = [sub, "registry", "token-refresher"];
        for flag in flags.keys() {
            let documented = related.iter().filter_map(|s| sections.get(*s)).any(|text| {
                text.contains(&format!("`{flag}`"))
                    || text.contains(&format!("{flag} "))
                    || text.contains(&format!("{flag}`"))
            });
            assert!(
                documented,
                "`quayside {sub}` has {flag}, which the README does not document"
            );
        }
    }
    assert!(checked > 60, "only {checked} table entries checked");
}

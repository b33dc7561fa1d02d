//! The field table (`config::fields`) against what it describes: the README's reference
//! and impact tables (so the docs cannot drift), the defaults validation really applies,
//! and which fields `defaults:` may set.

use crate::support::{validate, BASE};
use scriptd_common::config::fields::{Applies, ChangeRule, Field, Kind, FIELDS};
use scriptd_common::diff::script_fields;
use scriptd_common::units::parse_size;
use std::collections::BTreeSet;
use std::path::Path;

/// The README's name of a field (`env` for the `env.*` row).
fn readme_name(f: &Field) -> &'static str {
    match f.name {
        "env.*" => "env",
        "limits.*" => "limits",
        name => name,
    }
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The body rows of the markdown table whose header line is `header`, as trimmed cells.
fn table(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    assert!(lines.next().is_some(), "README has no table {header:?}");
    lines
        .skip(1) // | --- | --- |
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The `code` spans of a markdown cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn the_readme_reference_table_lists_every_field_with_its_type_and_default() {
    let text = readme();
    let rows = table(&text, "| field | type | default | notes |");
    let mut seen = BTreeSet::new();
    for row in &rows {
        // A row may document several fields: `log.max_bytes` / `log.keep` / ... with as
        // many types and defaults.
        let names: Vec<&str> = row[0].split(" / ").map(|n| n.trim_matches('`')).collect();
        let types: Vec<&str> = row[1].split(" / ").collect();
        let defaults: Vec<&str> = row[2].split(" / ").collect();
        assert_eq!(names.len(), types.len(), "README row {row:?}");
        assert_eq!(names.len(), defaults.len(), "README row {row:?}");
        for ((name, ty), default) in names.iter().zip(&types).zip(&defaults) {
            let field = FIELDS
                .iter()
                .find(|f| readme_name(f) == *name)
                .unwrap_or_else(|| panic!("README documents {name:?}, which is no field"));
            assert!(
                ty.starts_with(field.kind.doc()),
                "README type of {name}: {ty:?}, the table says {:?}",
                field.kind.doc()
            );
            assert_eq!(*default, field.default, "README default of {name}");
            seen.insert(field.name);
        }
    }
    for f in FIELDS {
        assert!(
            seen.contains(f.name),
            "{} is not in the README's reference table",
            f.name
        );
    }
}

/// What the README's impact table says for a field's rule, in the row whose first cell is
/// `change`.
fn documented_impact(rule: ChangeRule, change: &str) -> &'static str {
    match rule {
        ChangeRule::Live => "live",
        ChangeRule::NextRun => "next-run",
        ChangeRule::Restart => "restart",
        ChangeRule::StartStop if change.contains("true → false") => "stop",
        ChangeRule::StartStop => "start",
        ChangeRule::Schedule if change.contains("added/removed") => "restart",
        ChangeRule::Schedule => "next-run",
    }
}

#[test]
fn the_readme_impact_table_gives_every_field_its_impact() {
    let text = readme();
    let rows = table(&text, "| change | impact | what happens |");
    let mut seen = BTreeSet::new();
    for row in &rows {
        let (change, impact) = (&row[0], &row[1]);
        for span in code_spans(change) {
            // `daemon.*` and `reload.*` are sections of their own, not script fields.
            if span.starts_with("daemon.") || span.starts_with("reload.") {
                continue;
            }
            let fields: Vec<&Field> = match span.strip_suffix(".*") {
                Some("env") => FIELDS.iter().filter(|f| f.name == "env.*").collect(),
                Some(section) => FIELDS.iter().filter(|f| f.key() == section).collect(),
                None => FIELDS.iter().filter(|f| f.name == span).collect(),
            };
            assert!(
                !fields.is_empty(),
                "README impact row {change:?}: no field {span:?}"
            );
            for f in fields {
                assert_eq!(
                    impact,
                    documented_impact(f.rule, change),
                    "README impact of {} in row {change:?}",
                    f.name
                );
                seen.insert((f.name, documented_impact(f.rule, change)));
            }
        }
    }
    for f in FIELDS {
        let variants: &[&str] = match f.rule {
            ChangeRule::StartStop => &["start", "stop"],
            ChangeRule::Schedule => &["next-run", "restart"],
            rule => &[documented_impact(rule, "")],
        };
        for v in variants {
            assert!(
                seen.contains(&(f.name, *v)),
                "the README's impact table has no {v} row for {}",
                f.name
            );
        }
    }
}

/// A probe kind (`health.exec`, `health.http`, `health.tcp`): the other `health.*` fields
/// exist only next to one.
fn is_probe_kind(f: &Field) -> bool {
    f.key() == "health" && matches!(f.subkey(), Some("exec" | "http" | "tcp"))
}

/// The `health:` lines a script needs for `f` to be there: a probe, unless `f` is one.
fn probe_for(f: &Field, indent: &str) -> String {
    if f.key() == "health" && !is_probe_kind(f) {
        format!("{indent}  tcp: \"127.0.0.1:1\"\n")
    } else {
        String::new()
    }
}

#[test]
fn the_table_defaults_are_the_ones_validation_applies() {
    let cfg = validate(
        "scripts:\n  svc:\n    command: [\"/bin/true\"]\n  per:\n    command: [\"/bin/true\"]\n    \
         interval: 1m\n  probed:\n    command: [\"/bin/true\"]\n    health: { tcp: \"db:1\" }\n  \
         cal:\n    command: [\"/bin/true\"]\n    schedule: \"@daily\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (svc, per, probed, cal) = (
        script_fields(&cfg.scripts["svc"]),
        script_fields(&cfg.scripts["per"]),
        script_fields(&cfg.scripts["probed"]),
        script_fields(&cfg.scripts["cal"]),
    );
    for f in FIELDS {
        let fields = match f.applies {
            Applies::Periodic => &per,
            // The probe's settings have their defaults once there is a probe.
            _ if f.key() == "health" && !is_probe_kind(f) => &probed,
            Applies::Calendar => &cal,
            Applies::Both | Applies::Service => &svc,
        };
        let got = fields.get(f.name);
        match f.default {
            "required" => assert_eq!(f.name, "command"),
            "none" | "none (service)" | "the daemon's" | "the user's primary group" => {
                assert_eq!(got, None, "{}", f.name);
                if let Some(section) = f.name.strip_suffix(".*") {
                    let prefix = format!("{section}.");
                    assert!(fields.keys().all(|k| !k.starts_with(&prefix)), "{fields:?}");
                }
            }
            "the config directory" => assert_eq!(got.map(String::as_str), Some(BASE), "{}", f.name),
            "{}" => assert!(
                fields.keys().all(|k| !k.starts_with("env.")),
                "{}: {fields:?}",
                f.name
            ),
            text if f.kind == Kind::Size => {
                let want = parse_size(text).unwrap_or_else(|e| panic!("{}: {e}", f.name));
                assert_eq!(got, Some(&want.to_string()), "{}", f.name);
            }
            text => assert_eq!(got.map(String::as_str), Some(text), "{}", f.name),
        }
    }
}

/// A value other than the default for a field, as YAML, and as the diff renders it.
fn other_value(f: &Field) -> (&'static str, &'static str) {
    match f.kind {
        Kind::Command => ("[\"/bin/false\"]", "[\"/bin/false\"]"),
        Kind::Duration => ("7s", "7s"),
        Kind::Bool => ("false", "false"),
        Kind::Path => ("/tmp", "/tmp"),
        Kind::Map => ("{ X: \"1\" }", "1"),
        Kind::Int => ("7", "7"),
        Kind::Enum => ("never", "never"),
        Kind::Signal => ("HUP", "HUP"),
        Kind::Size => ("7KiB", "7168"),
        Kind::Url => ("http://127.0.0.1:7/", "http://127.0.0.1:7/"),
        Kind::Address => ("\"127.0.0.1:7\"", "127.0.0.1:7"),
        Kind::Cron => ("\"@hourly\"", "@hourly"),
        Kind::TimeZone => ("Europe/Berlin", "Europe/Berlin"),
        Kind::User => ("alice", "alice (uid 1000, gid 1000)"),
        Kind::Group => ("\"7\"", "gid 7"),
        Kind::Umask => ("\"0077\"", "0077"),
        Kind::Limits => ("{ nofile: 7 }", "7"),
    }
}

/// `name: value` as YAML nested under `indent`, for `log.keep` a `log:` mapping (and for
/// the settings of a probe, a probe next to them).
fn yaml_key(f: &Field, value: &str, indent: &str) -> String {
    match f.subkey().filter(|&sub| sub != "*") {
        Some(sub) => format!(
            "{indent}{}:\n{indent}  {sub}: {value}\n{}",
            f.key(),
            probe_for(f, indent)
        ),
        None => format!("{indent}{}: {value}\n", f.key()),
    }
}

#[test]
fn defaults_sets_exactly_the_inheritable_fields() {
    for f in FIELDS {
        let (value, rendered) = other_value(f);
        let interval = match f.applies {
            Applies::Periodic => "    interval: 1m\n",
            Applies::Calendar => "    schedule: \"@daily\"\n",
            Applies::Both | Applies::Service => "",
        };
        let yaml = format!(
            "defaults:\n{}scripts:\n  s:\n    command: [\"/bin/true\"]\n{interval}",
            yaml_key(f, value, "  ")
        );
        match validate(&yaml) {
            Ok(cfg) if f.inheritable => {
                let fields = script_fields(&cfg.scripts["s"]);
                let name = match f.name {
                    "env.*" => "env.X",
                    "limits.*" => "limits.nofile",
                    name => name,
                };
                assert_eq!(
                    fields.get(name).map(String::as_str),
                    Some(rendered),
                    "{} set in defaults",
                    f.name
                );
            }
            Ok(_) => panic!("defaults took {}, which is not inheritable", f.name),
            Err(e) if f.inheritable => panic!("defaults refused {}: {e}", f.name),
            Err(e) => assert!(
                e.to_string()
                    .contains(&format!("unknown key {:?}", f.key())),
                "{}: {e}",
                f.name
            ),
        }
    }
}

#[test]
fn each_field_is_taken_by_the_scripts_it_applies_to() {
    for f in FIELDS.iter().filter(|f| f.kind != Kind::Command) {
        let (value, _) = other_value(f);
        for (periodic, interval) in [
            (false, ""),
            (true, "    interval: 1m\n"),
            (true, "    schedule: \"@daily\"\n"),
        ] {
            // Each of `interval` and `schedule` makes a script periodic and excludes the
            // other: written alone here.
            let key = if f.name == "interval" || (f.name == "schedule" && periodic) {
                String::new()
            } else {
                yaml_key(f, value, "    ")
            };
            let yaml = format!("scripts:\n  s:\n    command: [\"/bin/true\"]\n{interval}{key}");
            let wanted = match f.applies {
                Applies::Both => true,
                Applies::Service => !periodic,
                Applies::Periodic => periodic,
                Applies::Calendar => interval.contains("schedule"),
            };
            assert_eq!(
                validate(&yaml).is_ok(),
                wanted,
                "{} on a {} script:\n{yaml}",
                f.name,
                if periodic { "periodic" } else { "service" }
            );
        }
    }
}

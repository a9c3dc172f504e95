//! The generated parts of `docs/` (configuration and metrics references), rendered from the code
//! and compared with the checked-in files by a test in each binary, so that they cannot drift.
//! With `KUBECERT_BLESS=1` those tests rewrite the files instead.
//!
//! For the binaries' tests only (feature `docgen`, enabled in their dev-dependencies). It
//! knows nothing about either binary: each passes its clap command, its configuration structs'
//! source text and defaults, and its metrics registry's exposition.
//!
//! Sources: flags, help texts, value names and clap defaults from `clap::Command`; configuration
//! keys and their descriptions from the doc comments of the configuration structs (read from the
//! source, which rustfmt keeps one field per line); defaults by serializing `Default::default()`;
//! metrics from the OpenMetrics text the registry encodes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use clap::{Arg, ArgAction, Command};
use figment::value::{Dict, Value};
use serde::Serialize;

/// The environment variable that makes the check tests rewrite the files.
pub const BLESS_ENV: &str = "KUBECERT_BLESS";

/// A label value that tests put into a metric family only to make its label names visible; it is
/// not listed as one of the label's values.
pub const UNLISTED: &str = "…";

/// The filter that selects every check test (`cargo test … generated_docs`).
const TEST_FILTER: &str = "generated_docs";

/// One configuration key: its name, its doc comment and its default (`None` when the default is
/// not serialized, e.g. a nested table documented separately).
#[derive(Debug)]
pub struct Key {
    /// The key, as in the TOML file.
    pub name: String,
    /// The field's doc comment.
    pub doc: String,
    /// The default, rendered as a TOML value.
    pub default: Option<Value>,
}

/// How a binary's flags relate to its configuration keys.
#[derive(Debug)]
pub struct Layering<'a> {
    /// The commands (full paths such as `signer serve`) whose flags set configuration keys of the
    /// same name (`-` for `_`); other commands' flags are flags only.
    pub commands: &'a [&'a str],
    /// Prefix of the environment variables (`KUBECERT_SIGNER_`).
    pub env_prefix: &'a str,
    /// Every top-level key.
    pub keys: &'a [Key],
    /// Tables inside keys, documented after the keys.
    pub nested: &'a [Nested],
}

/// A table inside a key (`[policy.signers."<signer name>"]`), documented member by member.
#[derive(Debug)]
pub struct Nested {
    /// The TOML table header, without brackets.
    pub table: String,
    /// What the table is, before the list of its keys.
    pub intro: String,
    /// Its keys, their descriptions and defaults (a `Default` column is shown when any member
    /// has one).
    pub members: Vec<Key>,
}

/// The first lines of a generated file: what it is and how to regenerate it.
pub fn header(package: &str) -> String {
    format!(
        "<!-- Generated from the code by the `{TEST_FILTER}` tests of {package}; do not edit.\n     \
         Regenerate: {BLESS_ENV}=1 cargo test -p {package} --bins {TEST_FILTER} -->\n\n"
    )
}

/// Compares `generated` with the file at `path` (relative to the workspace root), or writes it
/// when `KUBECERT_BLESS=1`.
pub fn check_or_bless(package: &str, path: &str, generated: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    if std::env::var(BLESS_ENV).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().expect("a file path has a parent")).expect("docs directory");
        std::fs::write(&file, generated).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        return;
    }
    let current = std::fs::read_to_string(&file).unwrap_or_default();
    if current == generated {
        return;
    }
    let (line, expected, found) = current
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
        .take(current.lines().count().max(generated.lines().count()))
        .enumerate()
        .find(|(_, (found, expected))| found != expected)
        .map(|(i, (found, expected))| {
            (i + 1, expected.unwrap_or("<end of file>"), found.unwrap_or("<end of file>"))
        })
        .unwrap_or((0, "the same lines", "other line endings"));
    panic!(
        "{path} does not match the code (line {line}: the code gives\n  {expected}\n\
         the file has\n  {found}\n).\nRegenerate it with: {BLESS_ENV}=1 cargo test -p {package} --bins \
         {TEST_FILTER}"
    );
}

/// The members of `item` (e.g. `pub struct SignerConfig`: fields; `pub enum DenyReason`:
/// variants) with their doc comments, in source order. Panics when the item is not found or a
/// member has no doc comment.
pub fn member_docs(source: &str, item: &str) -> Vec<(String, String)> {
    let opening = format!("{item} {{");
    let mut lines = source.lines().skip_while(|line| line.trim() != opening);
    assert!(lines.next().is_some(), "`{opening}` not found in the source");
    let mut members = Vec::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in lines.map(str::trim) {
        if line == "}" {
            break;
        }
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim());
            continue;
        }
        if line.starts_with("#[") || line.is_empty() {
            continue;
        }
        let rest = line.strip_prefix("pub ").unwrap_or(line);
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        assert!(!name.is_empty(), "{item}: cannot read a member from {line:?}");
        assert!(!doc.is_empty(), "{item}: {name} has no doc comment");
        members.push((name, paragraphs(&doc)));
        doc.clear();
    }
    members
}

/// Doc comment lines → paragraphs separated by a blank line, intra-doc links as plain code.
fn paragraphs(lines: &[&str]) -> String {
    let text = lines.split(|l| l.is_empty()).map(|p| p.join(" ")).collect::<Vec<_>>().join("\n\n");
    text.replace("[`", "`").replace("`]", "`")
}

/// The keys of the configuration struct `item` in `source`, with the defaults of `defaults`.
pub fn keys(source: &str, item: &str, defaults: &impl Serialize) -> Vec<Key> {
    let mut values: Dict = match Value::serialize(defaults) {
        Ok(Value::Dict(_, dict)) => dict,
        other => panic!("{item}'s default does not serialize to a table: {other:?}"),
    };
    let keys: Vec<Key> = member_docs(source, item)
        .into_iter()
        .map(|(name, doc)| Key { default: values.remove(&name), name, doc })
        .collect();
    assert!(values.is_empty(), "{item}: serialized keys without a field: {:?}", values.keys());
    keys
}

/// Checks (or blesses) `docs/configuration/<package>.md`: its header and title, then
/// [`configuration`] of `command`.
pub fn check_configuration(package: &str, command: Command, layering: &Layering<'_>) {
    let doc = format!("{}# {package} configuration\n\n{}", header(package), configuration(command, layering));
    check_or_bless(package, &format!("docs/configuration/{package}.md"), &doc);
}

/// The keys of the configuration struct `item` in `source` that has no defaults (every key is
/// required, or its absence means something the description says).
pub fn keys_without_defaults(source: &str, item: &str) -> Vec<Key> {
    member_docs(source, item).into_iter().map(|(name, doc)| Key { name, doc, default: None }).collect()
}

/// Each command (recursively, from `command`) with its description and a table of its flags;
/// then the table of configuration keys. Panics when a flag of a layered command has no key of
/// its name, or when a help text's `[default: …]` differs from the key's default.
pub fn configuration(mut command: Command, layering: &Layering<'_>) -> String {
    command.build();
    let mut out = String::new();
    let mut flags_of_key: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    render_command(&command, command.get_name(), layering, &mut out, &mut flags_of_key);

    out.push_str("## Configuration keys\n\n");
    let _ = writeln!(
        out,
        "Every key can be set in the TOML file given with `--config`, or as an environment variable \
         `{}<KEY>`; see [the configuration overview](../configuration.md) for the precedence and the \
         value syntax.\n",
        layering.env_prefix
    );
    out.push_str("| Key | Environment | Default | Flag | Description |\n|---|---|---|---|---|\n");
    for key in layering.keys {
        let flags = flags_of_key.get(key.name.as_str()).map_or_else(
            || "—".to_owned(),
            |flags| {
                let mut commands_of_flag: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (flag, command) in flags {
                    commands_of_flag.entry(flag).or_default().push(command);
                }
                let flags: Vec<String> = commands_of_flag
                    .into_iter()
                    .map(|(flag, commands)| {
                        if commands.len() == layering.commands.len() {
                            format!("`{flag}`")
                        } else {
                            format!("`{flag}` (`{}`)", commands.join("`, `"))
                        }
                    })
                    .collect();
                flags.join("<br>")
            },
        );
        let default = key.default.as_ref().map_or_else(|| "see below".to_owned(), default_cell);
        let _ = writeln!(
            out,
            "| `{}` | `{}{}` | {default} | {flags} | {} |",
            key.name,
            layering.env_prefix,
            key.name.to_uppercase(),
            cell(&key.doc)
        );
    }
    out.push('\n');
    for nested in layering.nested {
        let _ = writeln!(out, "### `[{}]`\n\n{}\n", nested.table, text(&nested.intro));
        out.push_str(&nested_table(&nested.members));
    }
    out
}

fn render_command(
    command: &Command,
    path: &str,
    layering: &Layering<'_>,
    out: &mut String,
    flags_of_key: &mut BTreeMap<String, Vec<(String, String)>>,
) {
    let _ = writeln!(out, "## `{path}`\n");
    if let Some(about) = command.get_long_about().or(command.get_about()) {
        let _ = writeln!(out, "{}\n", text(&about.to_string()));
    }
    let layered = layering.commands.contains(&path);
    let args: Vec<&Arg> =
        command.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")).collect();
    let has_flags = !args.is_empty();
    if has_flags {
        out.push_str("| Flag | Value | Default | Key, environment | Description |\n|---|---|---|---|---|\n");
    }
    for arg in args {
        let long = arg.get_long().map(|l| format!("--{l}"));
        let flag = match (arg.get_short(), &long) {
            (Some(short), Some(long)) => format!("`-{short}`, `{long}`"),
            (Some(short), None) => format!("`-{short}`"),
            (None, Some(long)) => format!("`{long}`"),
            (None, None) => format!("`<{}>`", arg.get_id()),
        };
        let flag = if arg.is_hide_set() { format!("{flag} (hidden)") } else { flag };
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        let key = arg
            .get_long()
            .filter(|_| layered)
            .map(|l| l.replace('-', "_"))
            .and_then(|name| layering.keys.iter().find(|k| k.name == name));
        let (default, key_cell) = match key {
            Some(key) => {
                let long = long.clone().unwrap_or_default();
                flags_of_key.entry(key.name.clone()).or_default().push((long.clone(), command_name(path)));
                if let Some(default) = &key.default {
                    check_help_default(&long, &help, default);
                }
                (
                    key.default.as_ref().map_or_else(|| "see below".to_owned(), flag_default_cell),
                    format!("`{}`<br>`{}{}`", key.name, layering.env_prefix, key.name.to_uppercase()),
                )
            }
            None => {
                assert!(
                    !layered || arg.is_hide_set() || arg.get_id() == "config",
                    "{path} {flag}: no configuration key of that name"
                );
                (clap_default(arg), "—".to_owned())
            }
        };
        let _ =
            writeln!(out, "| {flag} | {} | {default} | {key_cell} | {} |", value_syntax(arg), cell(&help));
    }
    if has_flags {
        out.push('\n');
    }
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        render_command(sub, &format!("{path} {}", sub.get_name()), layering, out, flags_of_key);
    }
}

/// The subcommand part of a command path (`serve` of `signer serve`), or the path itself.
fn command_name(path: &str) -> String {
    path.split_once(' ').map_or(path, |(_, rest)| rest).to_owned()
}

/// A help text that states `[default: X]` must agree with the key's scalar default.
fn check_help_default(flag: &str, help: &str, default: &Value) {
    let Some(stated) = help.split_once("[default: ").and_then(|(_, rest)| rest.split_once(']')) else {
        return;
    };
    // Unset or a list: the help describes what is derived at run time.
    let Some(actual) = scalar(default) else { return };
    assert_eq!(
        stated.0, actual,
        "{flag}: the help text's [default: …] differs from the configuration default"
    );
}

fn clap_default(arg: &Arg) -> String {
    if arg.is_required_set() {
        return "required".to_owned();
    }
    let defaults: Vec<String> =
        arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
    if defaults.is_empty() { "—".to_owned() } else { format!("`{}`", defaults.join(",")) }
}

/// How a flag takes its value: `<FILE>`, `[=<BOOL>]`, possible values, repetition.
fn value_syntax(arg: &Arg) -> String {
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count) {
        return "—".to_owned();
    }
    let names = arg.get_value_names().map_or_else(
        || "<VALUE>".to_owned(),
        |names| names.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>().join(" "),
    );
    let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
    let syntax = match (optional, arg.is_require_equals_set()) {
        (true, true) => format!("[={names}]"),
        (true, false) => format!("[{names}]"),
        (false, true) => format!("={names}"),
        (false, false) => names,
    };
    let mut parts = vec![format!("`{syntax}`")];
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if !possible.is_empty() && !matches!(arg.get_id().as_str(), "help" | "version") {
        // Boolean value parsers list true/false among many spellings; the syntax says BOOL.
        if !syntax.contains("BOOL") {
            parts.push(format!("one of {}", possible.join(", ")));
        }
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        parts.push("repeatable".to_owned());
    }
    if let Some(delimiter) = arg.get_value_delimiter() {
        parts.push(format!("`{delimiter}`-separated"));
    }
    parts.join("; ")
}

/// A table of the members of a nested table or enum: name and description.
pub fn members_table(heading: &str, members: &[(String, String)]) -> String {
    let mut out = format!("| {heading} | Description |\n|---|---|\n");
    for (name, doc) in members {
        let _ = writeln!(out, "| `{name}` | {} |", cell(doc));
    }
    out.push('\n');
    out
}

/// The keys of a nested table: name, default (a column only when some key has one) and
/// description.
fn nested_table(keys: &[Key]) -> String {
    let with_defaults = keys.iter().any(|key| key.default.is_some());
    let mut out = String::from(if with_defaults {
        "| Key | Default | Description |\n|---|---|---|\n"
    } else {
        "| Key | Description |\n|---|---|\n"
    });
    for key in keys {
        let default = match &key.default {
            _ if !with_defaults => String::new(),
            Some(value) => format!(" {} |", default_cell(value)),
            None => " — |".to_owned(),
        };
        let _ = writeln!(out, "| `{}` |{default} {} |", key.name, cell(&key.doc));
    }
    out.push('\n');
    out
}

/// A key's default as a flag value: scalars unquoted, as on the command line.
fn flag_default_cell(value: &Value) -> String {
    match scalar(value) {
        Some(s) => format!("`{}`", s.replace('|', "\\|")),
        None => default_cell(value),
    }
}

/// A string, boolean or number as written on the command line; `None` for other values.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(..) | Value::Num(..) => Some(toml(value)),
        _ => None,
    }
}

fn default_cell(value: &Value) -> String {
    match value {
        Value::Empty(..) => "unset".to_owned(),
        other => format!("`{}`", toml(other).replace('|', "\\|")),
    }
}

/// A value as TOML would spell it.
fn toml(value: &Value) -> String {
    match value {
        Value::String(_, s) => format!("{s:?}"),
        Value::Char(_, c) => format!("\"{c}\""),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_i128()
            .map(|i| i.to_string())
            .or_else(|| n.to_u128().map(|u| u.to_string()))
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        Value::Empty(..) => "unset".to_owned(),
        Value::Array(_, items) => format!("[{}]", items.iter().map(toml).collect::<Vec<_>>().join(", ")),
        Value::Dict(_, dict) if dict.is_empty() => "{}".to_owned(),
        Value::Dict(_, dict) => format!(
            "{{ {} }}",
            dict.iter().map(|(k, v)| format!("{k:?} = {}", toml(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Markdown for prose: `<`, `>` and `*` escaped outside code spans, paragraphs kept.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_code = false;
    for c in s.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => out.push_str("&lt;"),
            '>' if !in_code => out.push_str("&gt;"),
            '*' if !in_code => out.push_str("\\*"),
            _ => out.push(c),
        }
    }
    out
}

/// Markdown for a table cell: as [`text`], with `|` escaped and paragraphs as line breaks.
fn cell(s: &str) -> String {
    text(s).replace('|', "\\|").replace("\n\n", "<br><br>").replace('\n', " ")
}

/// One metric family of an exposition.
#[derive(Debug, Default)]
struct Family {
    name: String,
    kind: String,
    unit: String,
    help: String,
    series: BTreeSet<String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// The TOML example of `markdown` whose first line is `# {name}` (a ```` ```toml ```` block).
pub fn toml_example<'m>(markdown: &'m str, name: &str) -> &'m str {
    let opening = format!("```toml\n# {name}\n");
    let start = markdown.find(&opening).unwrap_or_else(|| panic!("no {opening:?} block")) + "```toml\n".len();
    let end = markdown[start..].find("```").map_or(markdown.len(), |end| start + end);
    &markdown[start..end]
}

/// The table of every metric family in `exposition` (OpenMetrics text): the series to query,
/// type, unit, labels (with the values seen, except [`UNLISTED`]) and help.
pub fn metrics(exposition: &str) -> String {
    let mut families: Vec<Family> = Vec::new();
    for line in exposition.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (Some(kind), Some(name)) = (parts.next(), parts.next()) else { continue };
            let value = parts.next().unwrap_or_default().to_owned();
            if families.last().is_none_or(|f| f.name != name) {
                families.push(Family { name: name.to_owned(), ..Family::default() });
            }
            let family = families.last_mut().expect("just pushed");
            match kind {
                "HELP" => family.help = value,
                "TYPE" => family.kind = value,
                "UNIT" => family.unit = value,
                _ => {}
            }
            continue;
        }
        let family = families.last_mut().unwrap_or_else(|| panic!("a sample before any family: {line}"));
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        family.series.insert(line[..end].to_owned());
        if line[end..].starts_with('{') {
            for (label, value) in labels(&line[end + 1..]) {
                if label != "le" && label != "quantile" {
                    let values = family.labels.entry(label).or_default();
                    if value != UNLISTED {
                        values.insert(value);
                    }
                }
            }
        }
    }
    let mut out = String::from("| Series | Type | Unit | Labels | Help |\n|---|---|---|---|---|\n");
    for family in families {
        let series: Vec<String> = family.series.iter().map(|s| format!("`{s}`")).collect();
        let labels: Vec<String> = family
            .labels
            .iter()
            .map(|(label, values)| {
                if values.is_empty() {
                    format!("`{label}`")
                } else {
                    let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                    format!("`{label}`: {}", values.join(", "))
                }
            })
            .collect();
        let dash = |s: String| if s.is_empty() { "—".to_owned() } else { s };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            series.join("<br>"),
            family.kind,
            dash(family.unit),
            dash(labels.join("<br>")),
            cell(&family.help)
        );
    }
    out.push('\n');
    out
}

/// `a="x",b="y\"z"} 1` → `[("a", "x"), ("b", "y\"z")]` (escapes kept).
fn labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    value.push(c);
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
        if rest.starts_with('}') {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_escapes_and_prose_escaping() {
        assert_eq!(
            labels("a=\"x\",b=\"y\\\"z,\"} 1"),
            [("a".to_owned(), "x".to_owned()), ("b".to_owned(), "y\\\"z,".to_owned())]
        );
        assert_eq!(cell("a <b> `<c>` | d*\n\ne"), "a &lt;b&gt; `<c>` \\| d\\*<br><br>e");
    }

    #[test]
    fn member_docs_read_fields_and_variants() {
        let source = "struct X;\npub enum E {\n    /// One.\n    ///\n    /// [`More`].\n    A,\n    \
                      /// Two\n    /// lines.\n    B(u8),\n}\npub struct S {\n    /// F.\n    \
                      #[serde(skip)]\n    pub f: Option<u8>,\n}\n";
        assert_eq!(
            member_docs(source, "pub enum E"),
            [("A".to_owned(), "One.\n\n`More`.".to_owned()), ("B".to_owned(), "Two lines.".to_owned())]
        );
        assert_eq!(member_docs(source, "pub struct S"), [("f".to_owned(), "F.".to_owned())]);
    }
}

//! Printing results as tables or as JSON.

use serde::Serialize;
use serde_json::Value;

use crate::model::SecurityGroupRule;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn json<T: Serialize>(value: &T) {
    // Serializing our own API types cannot fail.
    println!("{}", serde_json::to_string_pretty(value).expect("serializable"));
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The columns shown for each kind of resource (JSON field paths).
fn columns(kind: &str) -> &'static [&'static str] {
    match kind {
        "region" => &["id"],
        "vpc" => &["id", "region", "cidr", "ipv6_cidr", "ipv4_gateway"],
        "vswitch" => &["id", "vpc", "zone", "cidr", "ipv6_cidr"],
        "instance_type" => &["id", "max_enis", "max_private_ipv4_per_eni", "max_ipv6_per_eni"],
        "instance" => {
            &["id", "region", "zone", "network", "state", "instance_type", "private_ip", "eip"]
        }
        "eni" => &[
            "id",
            "kind",
            "status",
            "instance",
            "vswitch",
            "security_group",
            "primary_ip",
            "secondary_ips",
            "ipv6",
            "eips",
        ],
        "eip" => &[
            "address",
            "region",
            "status",
            "resource_type",
            "resource_id",
            "private_ip",
            "mode",
            "counters.inbound_packets",
            "counters.inbound_bytes",
            "counters.outbound_packets",
            "counters.outbound_bytes",
        ],
        "nat_gateway" => &["id", "vpc", "eip_quota", "eips"],
        "security_group" => &["id", "vpc", "number", "rules", "enis"],
        _ => &["id"],
    }
}

/// The field at a dotted `path` of `value` (the value itself for an empty path), as text.
fn cell(value: &Value, path: &str) -> String {
    let field =
        if path.is_empty() { value } else { path.split('.').fold(value, |v, part| &v[part]) };
    match field {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(|i| cell(i, "")).collect::<Vec<_>>().join(","),
        Value::Object(map) if map.is_empty() => "-".into(),
        other => other.to_string(),
    }
}

/// Security group rules as people write them (`tcp 80 from 0.0.0.0/0`); `None` when the
/// value is not a list of rules.
fn rules_for_people(item: &Value) -> Option<Vec<String>> {
    if item["resource"] != "security_group" {
        return None;
    }
    let rules: Vec<SecurityGroupRule> = serde_json::from_value(item["rules"].clone()).ok()?;
    Some(rules.iter().map(ToString::to_string).collect())
}

/// The cell of one column of a resource's row.
fn column_cell(item: &Value, column: &str) -> String {
    match rules_for_people(item) {
        Some(rules) if column == "rules" && !rules.is_empty() => rules.join(", "),
        _ => cell(item, column),
    }
}

/// Resources of one kind as a table.
pub fn resources(items: &[Value]) {
    let Some(first) = items.first() else {
        println!("(none)");
        return;
    };
    let kind = first["resource"].as_str().unwrap_or_default();
    let columns = columns(kind);
    let header: Vec<String> = columns
        .iter()
        .map(|c| {
            c.trim_start_matches("counters.")
                .replace("bound_packets", "_pkts")
                .replace("bound_bytes", "_bytes")
                .to_uppercase()
        })
        .collect();
    let rows: Vec<Vec<String>> =
        items.iter().map(|item| columns.iter().map(|c| column_cell(item, c)).collect()).collect();
    table(&header.iter().map(String::as_str).collect::<Vec<_>>(), &rows);
}

/// One resource, every field on its own line.
pub fn details(item: &Value) {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&name, v, out);
                }
            }
            other => out.push((prefix.to_owned(), cell(other, ""))),
        }
    }
    let mut lines = Vec::new();
    walk("", item, &mut lines);
    // A security group's rules, one per line, where its `rules` line was.
    if let Some(rules) = rules_for_people(item).filter(|r| !r.is_empty())
        && let Some(at) = lines.iter().position(|(k, _)| k == "rules")
    {
        let names = std::iter::once("rules").chain(std::iter::repeat(""));
        let rule_lines = names.zip(rules).map(|(k, rule)| (k.to_owned(), rule));
        lines.splice(at..=at, rule_lines);
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in lines {
        println!("{k:<width$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn security_group_rules_read_as_people_write_them() {
        let group = json!({"resource": "security_group", "id": "sg-web", "vpc": "vpc-1",
            "number": 1, "enis": [],
            "rules": [
                {"protocol": "tcp", "ports": {"min": 80, "max": 80}, "source": "0.0.0.0/0"},
                {"protocol": "tcp", "ports": {"min": 8000, "max": 8100},
                 "source": "198.51.100.0/24"},
                {"protocol": "icmp", "ports": null, "source": "0.0.0.0/0"},
                {"protocol": "all", "ports": null, "source": "10.0.0.0/8"}]});
        assert_eq!(
            column_cell(&group, "rules"),
            "tcp 80 from 0.0.0.0/0, tcp 8000-8100 from 198.51.100.0/24, icmp from 0.0.0.0/0, \
             all from 10.0.0.0/8"
        );
        assert_eq!(column_cell(&group, "enis"), "-");
        let empty = json!({"resource": "security_group", "rules": []});
        assert_eq!(column_cell(&empty, "rules"), "-");
        let eni = json!({"resource": "eni", "security_group": null});
        assert_eq!(column_cell(&eni, "security_group"), "-");
    }
}

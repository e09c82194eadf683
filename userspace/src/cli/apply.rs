//! `eipctl apply FILE [--dry-run]`: a declarative document of requests, validated as a whole
//! and applied as one transaction or not at all.

use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use clap::Args;
use serde::Deserialize;

use super::{
    Ctx,
    output::{self, Output},
};
use crate::{
    api::{ApplyAnswer, ApplyBody, ApplyEvent, ApplyOptions, ErrorKind},
    client::CallError,
    model::Request,
};

/// Above this many changes the table counts them instead of listing them.
pub const LIST_AT_MOST: usize = 50;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A YAML or JSON file (`-` for standard input): `requests: [{op: ..., ...}, ...]`.
    file: PathBuf,
    /// Validate everything and print what would change, but keep nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stream progress from the agent (the default on a terminal, where it draws a bar).
    #[arg(long)]
    progress: bool,
}

/// The document: a list of requests, bare or under `requests`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Wrapped { requests: Vec<Request> },
    Bare(Vec<Request>),
}

pub fn run(ctx: &Ctx, args: ApplyArgs) -> Result<(), CallError> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&args.file)
    }
    .map_err(|e| CallError::Usage(format!("reading {}: {e}", args.file.display())))?;
    let requests =
        parse(&text).map_err(|e| CallError::Usage(format!("{}: {e}", args.file.display())))?;

    let progress = args.progress || std::io::stderr().is_terminal();
    // A table counts what it cannot list, so the agent need not list it either; JSON is
    // for scripts, which get every change.
    let list_at_most = (ctx.output == Output::Table).then_some(LIST_AT_MOST);
    let options = ApplyOptions { dry_run: args.dry_run, progress, list_at_most };
    let body = ApplyBody { options, requests };
    let answer =
        if progress { apply_with_progress(ctx, body) } else { ctx.client.post("/v1/apply", &body) };
    let answer = answer?;
    for warning in &answer.warnings {
        eprintln!("eipctl: warning: {warning}");
    }
    if ctx.output == Output::Json {
        output::json(&answer);
        return Ok(());
    }
    // Each change by id, or, when the agent counted them, each kind of change by count.
    let row = |action: &str, kind: &str, last: String| vec![action.into(), kind.into(), last];
    let (last, rows): (&str, Vec<Vec<String>>) = if answer.counts.is_empty() {
        ("ID", answer.changes.iter().map(|c| row(&c.action, &c.kind, c.id.clone())).collect())
    } else {
        (
            "COUNT",
            answer.counts.iter().map(|c| row(&c.action, &c.kind, c.count.to_string())).collect(),
        )
    };
    output::table(&["CHANGE", "KIND", last], &rows);
    let verb = if answer.applied { "applied" } else { "dry run: nothing changed;" };
    println!("{verb} {} requests, {} resources changed", answer.requests, answer.changed);
    Ok(())
}

/// Sends the document asking for a streamed answer, and draws the agent's progress lines
/// as a bar (on a terminal; elsewhere the bar stays hidden).
fn apply_with_progress(ctx: &Ctx, body: ApplyBody) -> Result<ApplyAnswer, CallError> {
    let bar = indicatif::ProgressBar::new(body.requests.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} requests {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut last = None;
    let mut malformed = None;
    ctx.client.post_lines("/v1/apply", &body, |line| match serde_json::from_slice(line) {
        Ok(ApplyEvent::Progress(p)) => {
            bar.set_message(p.phase);
            bar.set_position(p.done as u64);
        }
        Ok(event) => last = Some(event),
        Err(e) => malformed = Some(e.to_string()),
    })?;
    bar.finish_and_clear();
    match (last, malformed) {
        (Some(ApplyEvent::Answer(answer)), _) => Ok(answer),
        (Some(ApplyEvent::Error(error)), _) => Err(match error.kind {
            ErrorKind::Refused => CallError::Refused(error),
            ErrorKind::Failed => CallError::Failed(error),
        }),
        (_, Some(e)) => {
            Err(CallError::Unreachable(format!("malformed progress from the agent: {e}")))
        }
        _ => Err(CallError::Unreachable("the agent ended the answer without a result".into())),
    }
}

/// JSON when it parses as JSON, otherwise YAML (a superset), so errors speak of the format
/// the file is in.
fn parse(text: &str) -> Result<Vec<Request>, String> {
    let document: Document = if text.trim_start().starts_with(['{', '[']) {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON document: {e}"))?
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML document: {e}"))?
    };
    Ok(match document {
        Document::Wrapped { requests } | Document::Bare(requests) => requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_documents_parse_alike() {
        let yaml = "requests:\n  - op: create_region\n    id: r1\n  - op: allocate_eip\n    address: 203.0.113.10\n";
        let json = r#"[{"op": "create_region", "id": "r1"}, {"op": "allocate_eip", "address": "203.0.113.10"}]"#;
        assert_eq!(parse(yaml).unwrap(), parse(json).unwrap());
        assert_eq!(parse(yaml).unwrap().len(), 2);
    }

    #[test]
    fn a_bad_document_says_where() {
        let error = parse("requests:\n  - op: no_such_op\n").unwrap_err();
        assert!(error.contains("YAML"), "{error}");
        let error = parse(r#"[{"op": "allocate_eip", "address": "not-an-ip"}]"#).unwrap_err();
        assert!(error.contains("JSON"), "{error}");
    }
}

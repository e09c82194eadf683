//! The README's eipctl examples are real: every `$ eipctl ...` line in its ```console
//! blocks runs, in order, against a live eipgwd, and what it prints (stdout then stderr)
//! must be what the README shows. `EIPGW_UPDATE_README=1` rewrites the blocks from a run
//! instead of comparing.

use std::path::Path;

use eipgw_tests::{Topology, bin_path};

#[test]
fn readme_examples_print_what_the_readme_shows() {
    eipgw_tests::require_root();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let topology = Topology::create().unwrap_or_else(|e| panic!("{e:#}"));
    let agent = topology.start_agent().unwrap_or_else(|e| panic!("{e:#}"));

    let mut rewritten = String::new();
    let mut mismatches = Vec::new();
    let mut in_console = false;
    let mut expected: Option<(String, String)> = None; // (command line, expected output)
    let mut ran = 0;
    let flush = |expected: &mut Option<(String, String)>,
                 rewritten: &mut String,
                 mismatches: &mut Vec<String>| {
        if let Some((command, want)) = expected.take() {
            let args: Vec<&str> = command.split_whitespace().skip(1).collect();
            let out = std::process::Command::new(bin_path("eipctl"))
                .current_dir(root)
                .arg("--api-socket")
                .arg(agent.socket())
                .args(&args)
                .output()
                .expect("running eipctl");
            let got = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if got.trim_end() != want.trim_end() {
                mismatches.push(format!("$ {command}\n--- README\n{want}\n--- got\n{got}"));
            }
            rewritten.push_str(&format!("$ {command}\n{got}"));
        }
    };
    for line in readme.lines() {
        if in_console {
            if line.starts_with("```") {
                flush(&mut expected, &mut rewritten, &mut mismatches);
                in_console = false;
                rewritten.push_str(line);
                rewritten.push('\n');
            } else if let Some(command) =
                line.strip_prefix("$ ").filter(|c| c.starts_with("eipctl "))
            {
                flush(&mut expected, &mut rewritten, &mut mismatches);
                expected = Some((command.to_owned(), String::new()));
                ran += 1;
            } else if let Some((_, want)) = expected.as_mut() {
                want.push_str(line);
                want.push('\n');
            } else {
                rewritten.push_str(line);
                rewritten.push('\n');
            }
        } else {
            in_console = line == "```console";
            rewritten.push_str(line);
            rewritten.push('\n');
        }
    }
    assert!(ran >= 40, "only {ran} eipctl examples found in the README");
    if std::env::var_os("EIPGW_UPDATE_README").is_some() {
        std::fs::write(&readme_path, rewritten).expect("rewriting README.md");
        return;
    }
    assert!(
        mismatches.is_empty(),
        "{} README examples print something else (EIPGW_UPDATE_README=1 rewrites them):\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

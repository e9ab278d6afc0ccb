//! The docs hold: every path and link they give exists, every `§N` they cite is a section of
//! `docs/protocol.md`, and the README's reconnect-and-replay client works against a real server.

mod common;
mod relay;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use common::{ADMIN_PASSWORD, REPLY_TIMEOUT, Server, eventually, unique};
use relay::Relay;
use serde_json::{Value, json};

/// The pages a reader meets: the README, every page under docs/, and the other READMEs.
fn pages() -> Vec<PathBuf> {
    let root = repository();
    let mut pages = vec![
        root.join("README.md"),
        root.join("benches/README.md"),
        root.join("packaging/README.md"),
    ];
    let docs = std::fs::read_dir(root.join("docs")).expect("read docs/");
    for entry in docs.flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            pages.push(entry.path());
        }
    }
    pages.sort();
    pages
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The section numbers `docs/protocol.md` defines: `## 4.` gives `4`, `### 4.2` gives `4.2`.
fn protocol_sections() -> BTreeSet<String> {
    read(&repository().join("docs/protocol.md"))
        .lines()
        .filter_map(|line| {
            let title = line
                .strip_prefix("## ")
                .or_else(|| line.strip_prefix("### "))?;
            let number = title.split_whitespace().next()?.trim_end_matches('.');
            number
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| number.to_owned())
        })
        .collect()
}

/// Every `§N` or `§N.M` in `text`.
fn section_references(text: &str) -> Vec<String> {
    text.match_indices('§')
        .map(|(at, _)| {
            let rest = &text[at + '§'.len_utf8()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches('.').to_owned()
        })
        .collect()
}

/// Every repository path a page names: markdown link targets (relative to the page) and
/// `docs/…` paths written in the text (relative to the repository).
fn named_paths(page: &Path, text: &str) -> Vec<(String, PathBuf)> {
    let mut paths = Vec::new();
    for (at, _) in text.match_indices("](") {
        let rest = &text[at + 2..];
        let Some(end) = rest.find(')') else { continue };
        let target = rest[..end].split('#').next().unwrap_or_default();
        if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let base = page.parent().unwrap_or(Path::new("."));
        paths.push((target.to_owned(), base.join(target)));
    }
    for (at, _) in text.match_indices("docs/") {
        let preceded_by_path = text[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '.' || c == '_');
        if preceded_by_path {
            continue;
        }
        let rest = &text[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c)))
            .unwrap_or(rest.len());
        let path = rest[..end].trim_end_matches('.');
        paths.push((path.to_owned(), repository().join(path)));
    }
    paths.sort();
    paths.dedup();
    paths
}

#[test]
fn the_protocol_page_numbers_its_sections() {
    let sections = protocol_sections();
    for number in [
        "1", "2", "3", "3.1", "3.2", "3.3", "3.4", "4", "5", "6", "7", "8", "9",
    ] {
        assert!(
            sections.contains(number),
            "docs/protocol.md has no §{number}: {sections:?}"
        );
    }
}

#[test]
fn every_section_cited_in_the_docs_exists_in_the_protocol_page() {
    let sections = protocol_sections();
    let mut cited = 0;
    for page in pages() {
        for reference in section_references(&read(&page)) {
            cited += 1;
            assert!(
                sections.contains(&reference),
                "{} cites §{reference}, which docs/protocol.md does not have (it has {sections:?})",
                page.display()
            );
        }
    }
    assert!(cited > 0, "the docs cite no section at all");
}

#[test]
fn every_path_and_link_in_the_docs_exists() {
    let mut named = 0;
    for page in pages() {
        for (written, path) in named_paths(&page, &read(&page)) {
            named += 1;
            assert!(
                path.exists(),
                "{} names {written}, which does not exist",
                page.display()
            );
        }
    }
    assert!(named > 0, "the docs name no path at all");
}

#[test]
fn the_checks_catch_a_missing_section_and_a_missing_page() {
    let sections = protocol_sections();
    let text = "see [the log](docs/nothing-here.md) and docs/missing.md, §42 and §3.99";
    let references = section_references(text);
    assert_eq!(references, ["42", "3.99"]);
    assert!(references.iter().all(|r| !sections.contains(r)));
    let paths = named_paths(&repository().join("README.md"), text);
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths.iter().all(|(_, path)| !path.exists()));
}

#[test]
fn the_code_refers_to_the_protocol_page_and_to_nothing_outside_the_repository() {
    let mut stack = vec![
        repository().join("src"),
        repository().join("tests"),
        repository().join("benches"),
    ];
    let mut pages = pages();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                pages.push(path);
            }
        }
    }
    // Spelled in pieces so that this file does not match itself.
    let outside = [
        ["PROTOCOL", ".md"].concat(),
        ["PROTOCOL", " §"].concat(),
        ["shared", " design"].concat(),
    ];
    for page in pages {
        let text = read(&page);
        for word in &outside {
            assert!(
                !text.contains(word.as_str()),
                "{} refers to {word:?}, which is not in the repository; cite docs/protocol.md",
                page.display()
            );
        }
    }
}

/// The README's Python code block that sends `replay`.
fn readme_replay_client() -> String {
    let readme = read(&repository().join("README.md"));
    let mut blocks = readme.split("```python\n").skip(1).filter_map(|rest| {
        let block = &rest[..rest.find("```")?];
        block.contains("replay").then(|| block.to_owned())
    });
    blocks
        .next()
        .expect("the README has a Python client that sends replay")
}

fn python_has_websocket_client() -> bool {
    Command::new("python3")
        .args(["-c", "import websocket"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The Python client, running; killed on drop.
struct Script {
    child: Child,
    lines: Receiver<String>,
}

impl Script {
    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(REPLY_TIMEOUT)
            .unwrap_or_else(|_| panic!("the script printed nothing within {REPLY_TIMEOUT:?}"))
    }

    /// The next printed event's Seq, skipping the script's own messages.
    fn next_seq(&self) -> u64 {
        loop {
            let line = self.next_line();
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                return event["Seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("an event without Seq: {line}"));
            }
        }
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_readme_replay_client_resumes_after_a_drop_without_missing_or_repeating_events() {
    if !python_has_websocket_client() {
        eprintln!("skipped: python3 with websocket-client is not installed (.ci/run installs it)");
        return;
    }
    let server = Server::start();
    let relay = Relay::start(server.addr());
    let script = readme_replay_client();
    for written in ["127.0.0.1:18092", "rocketskates:secret"] {
        assert!(
            script.contains(written),
            "the script no longer names {written}"
        );
    }
    let script = script
        .replace("127.0.0.1:18092", &relay.addr().to_string())
        .replace(
            "rocketskates:secret",
            &format!("rocketskates:{ADMIN_PASSWORD}"),
        );
    let dir = tempfile::tempdir().expect("a directory for the script");
    let path = dir.path().join("watch.py");
    std::fs::write(&path, script).expect("write the script");
    let mut child = Command::new("python3")
        .arg("-u")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run python3");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let script = Script { child, lines };
    let await_replay_reply = |count: usize| {
        eventually(
            &format!("replay reply {count} to the script"),
            Duration::from_secs(20),
            || {
                let replies = relay
                    .sent_by_server()
                    .matches(r#""Action":"replay""#)
                    .count();
                if replies >= count {
                    Ok(())
                } else {
                    Err(format!("{replies} replies"))
                }
            },
        );
    };
    await_replay_reply(1);

    let key = unique("readme-");
    let publish =
        |n: u32| server.publish(json!({"Type": "profiles", "Action": format!("n{n}"), "Key": key}));
    let first = publish(1);
    assert_eq!(script.next_seq(), first);

    relay.cut();
    let missed = [publish(2), publish(3)];
    let said = script.next_line();
    assert!(
        said.contains(&format!("resuming after Seq {first}")),
        "the script must say where it resumes: {said}"
    );
    await_replay_reply(2);
    let live = publish(4);
    let printed: Vec<u64> = (0..3).map(|_| script.next_seq()).collect();
    assert_eq!(printed, [missed[0], missed[1], live]);
    // Nothing printed twice: the next event printed is one published after everything above.
    let sentinel = publish(5);
    assert_eq!(
        script.next_seq(),
        sentinel,
        "the script printed more than expected"
    );
}

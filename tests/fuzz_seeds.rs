//! Every committed fuzz seed goes through its target's checks on each test run, so the
//! properties the fuzzers assert hold without a fuzzer installed; a seed named `reject-…` must
//! be refused and any other accepted, so the seeds cover both sides of each parser.

use std::fs;
use std::path::Path;

fn run_seeds(target: &str, check: fn(&[u8]) -> bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let accepted = check(&data);
        assert_eq!(
            accepted,
            !name.starts_with("reject-"),
            "{target}: seed {name} was {}",
            if accepted { "accepted" } else { "refused" }
        );
        count += 1;
    }
    assert!(count >= 4, "{target} has only {count} seeds");
}

#[test]
fn every_http_head_seed_keeps_the_fuzz_properties() {
    run_seeds("http_head", herald::fuzzing::http_head);
}

#[test]
fn every_chunked_body_seed_keeps_the_fuzz_properties() {
    run_seeds("chunked_body", herald::fuzzing::chunked_body);
}

#[test]
fn every_websocket_frames_seed_keeps_the_fuzz_properties() {
    run_seeds("websocket_frames", herald::fuzzing::websocket_frames);
}

#[test]
fn every_command_seed_keeps_the_fuzz_properties() {
    run_seeds("command", herald::fuzzing::command);
}

#[test]
fn every_filter_seed_keeps_the_fuzz_properties() {
    run_seeds("filter", herald::fuzzing::filter);
}

#[test]
fn every_publish_body_seed_keeps_the_fuzz_properties() {
    run_seeds("publish_body", herald::fuzzing::publish_body);
}

#[test]
fn every_json_patch_seed_keeps_the_fuzz_properties() {
    run_seeds("json_patch", herald::fuzzing::json_patch);
}

#[test]
fn every_config_file_seed_keeps_the_fuzz_properties() {
    run_seeds("config_file", herald::fuzzing::config_file);
}

#[test]
fn every_log_chunk_seed_keeps_the_fuzz_properties() {
    run_seeds("log_chunk", herald::fuzzing::log_chunk);
}

#[test]
fn every_journal_seed_keeps_the_fuzz_properties() {
    run_seeds("journal", herald::fuzzing::journal);
}

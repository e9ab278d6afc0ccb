//! Errors are printed once: one line saying what failed, with its cause once, and no Rust
//! debug text (`Os { code: … }`, `Retention { … }`).

mod common;

use common::{ConfigFile, Exit, Server, run_to_exit, serve_to_exit};

/// Asserts that herald failed with one `herald: …` line holding `cause` exactly once.
fn assert_reported_once(exit: &Exit, what: &str, cause: &str) {
    assert!(!exit.success, "{what} was accepted: {exit:?}");
    let said = exit.stderr.trim_end();
    assert_eq!(said.lines().count(), 1, "{what}: one line: {said}");
    assert!(said.starts_with("herald: "), "{what}: {said}");
    assert_eq!(
        said.matches(cause).count(),
        1,
        "{what}: {cause:?} once: {said}"
    );
    assert!(!said.contains("{ "), "{what}: debug text: {said}");
    assert!(!said.contains("Os {"), "{what}: debug text: {said}");
}

#[test]
fn a_missing_config_file_is_reported_once() {
    let missing = "/nonexistent/herald.toml";
    for args in [
        &["serve", "--config", missing][..],
        &["check-config", missing][..],
    ] {
        let exit = run_to_exit(args);
        assert_reported_once(&exit, &format!("{args:?}"), "No such file or directory");
        assert_eq!(exit.stderr.matches(missing).count(), 1, "{exit:?}");
    }
}

#[test]
fn a_bad_value_is_reported_once_with_its_key_and_line() {
    let config = ConfigFile::new("cores = 2\nretain_events = 0\n");
    let exit = run_to_exit(&["check-config", &config.arg()]);
    assert_reported_once(&exit, "retain_events = 0", "too small");
    assert!(exit.stderr.contains("retain_events"), "{exit:?}");

    config.write("cores = \"two\"\n");
    let exit = run_to_exit(&["check-config", &config.arg()]);
    assert_reported_once(&exit, "cores = \"two\"", "expected a whole number");
    assert!(exit.stderr.contains("herald.toml:1:"), "{exit:?}");
}

#[test]
fn an_unusable_data_dir_is_reported_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write the file");
    let data_dir = file.join("herald-data");
    let exit = serve_to_exit(&data_dir, &[]);
    assert_reported_once(&exit, "a data dir under a file", "Not a directory");
    assert_eq!(
        exit.stderr.matches(&data_dir.display().to_string()).count(),
        1,
        "{exit:?}"
    );
}

#[test]
fn a_data_dir_in_use_is_reported_once_without_debug_text() {
    let running = Server::start();
    let exit = serve_to_exit(running.data_dir(), &[]);
    assert_reported_once(&exit, "a second herald on one data dir", "another herald");
    running.assert_serving();
}

#[test]
fn a_cache_size_out_of_bounds_or_unreadable_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data_dir = dir.path().join("data");
    for bad in ["--cache-bytes=0", "--cache-bytes=2TiB"] {
        let exit = serve_to_exit(&data_dir, &[bad]);
        assert_reported_once(&exit, bad, "out of range");
        assert!(
            exit.stderr.contains("`cache_bytes` (flag --cache-bytes)"),
            "{exit:?}"
        );
    }
    let exit = serve_to_exit(&data_dir, &["--cache-bytes=lots"]);
    assert!(!exit.success, "{exit:?}");
    assert!(exit.stderr.contains("--cache-bytes"), "{exit:?}");
    assert!(
        !data_dir.join("db").exists(),
        "a refused start opened no database"
    );

    let config = ConfigFile::new("cache_bytes = \"100KiB\"\n");
    let exit = run_to_exit(&["check-config", &config.arg()]);
    assert_reported_once(&exit, "cache_bytes = \"100KiB\"", "out of range");
    assert!(exit.stderr.contains("cache_bytes"), "{exit:?}");
}

//! `herald check-config FILE`: a configuration file is validated without starting, and its
//! errors name the key and the line.

mod common;

use common::{ConfigFile, run_to_exit};

fn check(text: &str) -> (bool, String) {
    let config = ConfigFile::new(text);
    let exit = run_to_exit(&["check-config", &config.arg()]);
    (exit.success, format!("{}{}", exit.stdout, exit.stderr))
}

#[test]
fn a_valid_file_is_accepted_without_starting_a_server() {
    let (ok, said) =
        check("listen = \"127.0.0.1:9999\"\nretain_age = \"12h\"\ndurability = \"batched\"\n");
    assert!(ok, "{said}");
    assert!(said.contains("ok"), "{said}");
}

#[test]
fn an_unknown_key_is_refused_with_its_name_and_line() {
    let (ok, said) = check("listen = \"127.0.0.1:9999\"\n\nlisten_port = 1\n");
    assert!(!ok);
    assert!(said.contains("listen_port"), "{said}");
    assert!(said.contains("herald.toml:3:"), "{said}");
}

#[test]
fn a_bad_value_is_refused_with_its_key_and_line() {
    let (ok, said) = check("retain_age = \"a week\"\n");
    assert!(!ok);
    assert!(said.contains("retain_age"), "{said}");
    assert!(said.contains("herald.toml:1:"), "{said}");
}

#[test]
fn a_misspelled_log_level_is_refused_with_the_valid_levels() {
    for misspelled in ["warning", "verbose"] {
        let (ok, said) = check(&format!("log_level = \"{misspelled}\"\n"));
        assert!(!ok, "{misspelled} was accepted: {said}");
        assert!(said.contains(misspelled), "{said}");
        assert!(
            said.contains("off, error, warn, info, debug, trace"),
            "{said}"
        );
    }
    let (ok, said) = check("log_level = \"herald=debug,info\"\nlog_events_level = \"error\"\n");
    assert!(ok, "directives are a valid level: {said}");
    let (ok, said) = check("log_events_level = \"warning\"\n");
    assert!(!ok, "{said}");
    assert!(said.contains("log_events_level"), "{said}");
}

#[test]
fn a_password_in_the_file_is_accepted_with_advice_to_use_a_password_file() {
    let (ok, said) = check("admin_password = \"in-clear\"\n");
    assert!(ok, "{said}");
    assert!(
        said.contains("warning")
            && said.contains("admin_password_file")
            && said.contains("0600")
            && said.contains("(its mode is 0"),
        "{said}"
    );
    assert!(
        !said.contains("in-clear"),
        "the warning must not repeat the password: {said}"
    );

    let secret = tempfile::NamedTempFile::new().expect("a password file");
    std::fs::write(secret.path(), "kept-apart\n").expect("write the password");
    let (ok, said) = check(&format!(
        "admin_password_file = {:?}\n",
        secret.path().display().to_string()
    ));
    assert!(ok && !said.contains("warning"), "{said}");
    let (ok, said) = check("listen = \"127.0.0.1:9999\"\n");
    assert!(ok && !said.contains("warning"), "{said}");
}

//! The `herald` command line, run as a user runs it, against a test server.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{Server, output_within};

/// How long one CLI command may take before the test calls it hung.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(20);

/// `herald` pointed at `server` as the admin through the environment, with no stray settings.
pub fn herald(server: &Server) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .env("HERALD_ENDPOINT", server.base_url())
        .env("HERALD_USERNAME", "rocketskates")
        .env("HERALD_PASSWORD", server.admin_password())
        .env_remove("HERALD_TOKEN")
        .env_remove("HERALD_CA_CERT")
        .stdin(Stdio::null());
    command
}

/// Runs a command to completion within [`COMMAND_DEADLINE`].
pub fn run(command: &mut Command, args: &[&str]) -> Output {
    let child = command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    output_within(child, &format!("herald {args:?}"), COMMAND_DEADLINE)
}

/// Runs a command that must succeed; answers its standard output as JSON (`null` if empty).
pub fn run_ok(command: &mut Command, args: &[&str]) -> Value {
    let output = run(command, args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "herald {args:?} failed with {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    if stdout.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("herald {args:?} printed no JSON ({e}): {stdout}"))
}

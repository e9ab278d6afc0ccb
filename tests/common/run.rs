//! herald commands that end by themselves: refused starts, `check-config`, client subcommands.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::poll_until;
use super::server::STARTUP_DEADLINE;

/// How a herald command that is expected to end by itself ended.
#[derive(Debug)]
pub struct Exit {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `herald ARGS` to its end (a refused start, `check-config`), killing it and failing the
/// test if it is still running after [`STARTUP_DEADLINE`].
pub fn run_to_exit(args: &[&str]) -> Exit {
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run herald");
    let output = output_within(child, &format!("herald {args:?}"), STARTUP_DEADLINE);
    Exit {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `herald serve --plain --listen 127.0.0.1:0 --data-dir DATA_DIR MORE…`, which must end by
/// itself (a refused start).
pub fn serve_to_exit(data_dir: &Path, more: &[&str]) -> Exit {
    let data_dir = data_dir.display().to_string();
    let mut args = vec![
        "serve",
        "--plain",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
    ];
    args.extend_from_slice(more);
    run_to_exit(&args)
}

/// Waits for `child` to exit within `timeout` and collects its output; kills it and fails the
/// test, naming `what`, if it is still running then.
pub fn output_within(mut child: Child, what: &str, timeout: Duration) -> Output {
    let exited = poll_until(timeout, || match child.try_wait() {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(None),
        Err(e) => Err(Some(e)),
    });
    match exited {
        Ok(()) => child.wait_with_output().expect("collect the output"),
        Err(error) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} was still running after {timeout:?} ({error:?})");
        }
    }
}

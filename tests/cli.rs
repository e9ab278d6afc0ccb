//! Black-box tests of the `herald` client subcommands, run as processes against a real server:
//! the DRP walkthrough, object and token commands, resuming after a drop, TLS, and the message
//! and exit code of every kind of failure.

mod common;
mod relay;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::cli::{herald, run, run_ok};
use common::{Auth, Options, REPLY_TIMEOUT, Server, eventually, unique};
use relay::Relay;
use serde_json::{Value, json};

/// A bare `herald` with no connection settings at all.
fn bare_herald() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for name in [
        "HERALD_ENDPOINT",
        "HERALD_USERNAME",
        "HERALD_PASSWORD",
        "HERALD_TOKEN",
        "HERALD_CA_CERT",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs a command that must fail with `code`; answers its standard error.
fn run_failing(command: &mut Command, args: &[&str], code: i32) -> String {
    let output = run(command, args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "herald {args:?}: stderr {stderr}"
    );
    assert!(
        stderr.starts_with("herald: "),
        "the failure must be explained: {stderr:?}"
    );
    stderr
}

/// A running `herald events watch`, its output lines arriving on channels; killed on drop.
struct Watcher {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Watcher {
    fn spawn(command: &mut Command, args: &[&str]) -> Watcher {
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald events watch");
        let stdout = lines(child.stdout.take().expect("stdout is piped"));
        let stderr = lines(child.stderr.take().expect("stderr is piped"));
        Watcher {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        }
    }

    /// Waits until the watcher says on stderr something containing `text`.
    fn await_stderr(&mut self, text: &str) {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !self.stderr_seen.iter().any(|line| line.contains(text)) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(remaining) {
                Ok(line) => self.stderr_seen.push(line),
                Err(_) => panic!(
                    "the watcher never said {text:?}; it said {:?}",
                    self.stderr_seen
                ),
            }
        }
        self.stderr_seen.retain(|line| !line.contains(text));
    }

    /// The next printed event.
    fn next_event(&mut self) -> Value {
        let line = self
            .stdout
            .recv_timeout(REPLY_TIMEOUT)
            .unwrap_or_else(|_| panic!("the watcher printed nothing within {REPLY_TIMEOUT:?}"));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the watcher printed a line that is not JSON ({e}): {line}"))
    }

    /// Asserts that the watcher printed nothing more: publishes `sentinel` (an event its filter
    /// matches) and asserts that the sentinel is the next event it prints.
    fn expect_sentinel_next(&mut self, server: &Server, sentinel: Value) {
        let seq = server.publish(sentinel);
        let next = self.next_event();
        assert_eq!(
            next["Seq"].as_u64(),
            Some(seq),
            "the watcher printed more than expected: {next}"
        );
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn the_drp_walkthrough_prints_a_save_event_for_setting_and_for_removing_a_param() {
    let server = Server::start();
    let mut watcher = Watcher::spawn(&mut herald(&server), &["events", "watch", "profiles.*.*"]);
    watcher.await_stderr("watching profiles.*.*");

    let set = run_ok(
        &mut herald(&server),
        &["profiles", "set", "global", "param", "bar", "to", "blatz"],
    );
    assert_eq!(set, json!("blatz"));
    let removed = run_ok(
        &mut herald(&server),
        &["profiles", "remove", "global", "param", "bar"],
    );
    assert_eq!(removed, json!("blatz"));

    let first = watcher.next_event();
    assert_eq!(
        (
            first["Type"].as_str(),
            first["Action"].as_str(),
            first["Key"].as_str()
        ),
        (Some("profiles"), Some("save"), Some("global"))
    );
    assert_eq!(first["Object"]["Params"]["bar"], "blatz");
    let second = watcher.next_event();
    assert_eq!(
        (
            second["Type"].as_str(),
            second["Action"].as_str(),
            second["Key"].as_str()
        ),
        (Some("profiles"), Some("save"), Some("global"))
    );
    assert!(second["Object"]["Params"].get("bar").is_none(), "{second}");
    assert_eq!(second["Original"]["Params"]["bar"], "blatz");
    watcher.expect_sentinel_next(
        &server,
        json!({"Type": "profiles", "Action": "sentinel", "Key": unique("sentinel-")}),
    );
}

#[test]
fn objects_round_trip_through_the_cli() {
    let server = Server::shared();
    let name = unique("cli-");
    let created = run_ok(
        &mut herald(server),
        &[
            "profiles",
            "create",
            &json!({"Name": name, "Params": {"keep": 1}}).to_string(),
        ],
    );
    assert_eq!(created["Name"], name);
    let listed = run_ok(
        &mut herald(server),
        &["profiles", "list", &format!("Name={name}")],
    );
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        run_ok(&mut herald(server), &["profiles", "show", &name])["Name"],
        name
    );

    let merged = run_ok(
        &mut herald(server),
        &["profiles", "update", &name, r#"{"Description":"merged"}"#],
    );
    assert_eq!(
        (
            merged["Description"].as_str(),
            merged["Params"]["keep"].as_i64()
        ),
        (Some("merged"), Some(1))
    );
    let patched = run_ok(
        &mut herald(server),
        &[
            "profiles",
            "update",
            &name,
            r#"[{"op":"add","path":"/Meta/k","value":"v"}]"#,
        ],
    );
    assert_eq!(patched["Meta"], json!({"k": "v"}));

    assert_eq!(
        run_ok(
            &mut herald(server),
            &["profiles", "set", &name, "param", "n", "to", "3"]
        ),
        json!(3)
    );
    assert_eq!(
        run_ok(
            &mut herald(server),
            &["profiles", "get", &name, "param", "n"]
        ),
        json!(3)
    );
    let negative = ["profiles", "set", &name, "param", "neg", "to", "-1"];
    assert_eq!(run_ok(&mut herald(server), &negative), json!(-1));
    assert_eq!(
        run_ok(&mut herald(server), &["profiles", "get", &name, "params"]),
        json!({"keep": 1, "n": 3, "neg": -1})
    );
    run_ok(&mut herald(server), &["profiles", "destroy", &name]);
    run_failing(&mut herald(server), &["profiles", "show", &name], 1);

    let role = unique("cli-role-");
    run_ok(
        &mut herald(server),
        &[
            "roles",
            "create",
            &json!({"Name": role, "Claims": []}).to_string(),
        ],
    );
    let claims = r#"{"Claims":[{"Scope":"profiles","Action":"get","Specific":"*"}]}"#;
    let updated = run_ok(&mut herald(server), &["roles", "update", &role, claims]);
    assert_eq!(updated["Claims"][0]["Scope"], "profiles");
    assert_eq!(
        run_ok(&mut herald(server), &["roles", "destroy", &role])["Name"],
        role
    );

    for ty in ["params", "clusters", "resource_brokers", "roles"] {
        let listed = run_ok(&mut herald(server), &[ty, "list"]);
        assert!(listed.is_array(), "{ty}: {listed}");
    }
    let seq_before = server.get("/api/v3/info").json()["LastSeq"]
        .as_u64()
        .unwrap_or(0);
    let key = unique("posted-");
    let seq = run_ok(
        &mut herald(server),
        &[
            "events",
            "post",
            &json!({"Type": "cli", "Action": "post", "Key": key}).to_string(),
        ],
    );
    let stored = server
        .get(&format!(
            "/api/v3/events?since={seq_before}&filter=cli.post.{key}"
        ))
        .json();
    assert_eq!(stored.as_array().map(Vec::len), Some(1), "{stored}");
    assert_eq!(seq, stored[0]["Seq"], "post prints the stored Seq");
}

#[test]
fn events_post_prints_the_seq_the_event_was_stored_under() {
    let server = Server::shared();
    let key = unique("post-seq-");
    let one = run_ok(
        &mut herald(server),
        &[
            "events",
            "post",
            &json!({"Type": "postseq", "Action": "one", "Key": key}).to_string(),
        ],
    );
    let one = one.as_u64().unwrap_or_else(|| panic!("not a Seq: {one}"));
    let stored = server.read_log(&server.admin(), one - 1, Some(&format!("postseq.*.{key}")));
    assert_eq!(
        (stored.len(), stored.first().and_then(|e| e["Seq"].as_u64())),
        (1, Some(one)),
        "{stored:?}"
    );

    let batch = json!([
        {"Type": "postseq", "Action": "first", "Key": key},
        {"Type": "postseq", "Action": "last", "Key": key},
    ]);
    let last = run_ok(&mut herald(server), &["events", "post", &batch.to_string()]);
    let stored = server.read_log(&server.admin(), one, Some(&format!("postseq.*.{key}")));
    let last_stored = stored.last().expect("the batch is stored");
    assert_eq!(
        (last_stored["Action"].as_str(), last_stored["Seq"].as_u64()),
        (Some("last"), last.as_u64()),
        "an array prints its last event's Seq: {stored:?}"
    );
}

#[test]
fn serve_and_check_config_neither_list_nor_take_the_client_options() {
    let client_options = [
        "--endpoint",
        "--username",
        "--password",
        "--token",
        "--ca-cert",
        "--insecure",
    ];
    for command in ["serve", "check-config"] {
        let output = run(&mut bare_herald(), &[command, "--help"]);
        assert!(output.status.success(), "{command} --help");
        let help = String::from_utf8_lossy(&output.stdout);
        for option in client_options {
            assert!(
                !help.contains(&format!(" {option}")),
                "herald {command} --help lists {option}:\n{help}"
            );
        }
    }
    for args in [
        &["serve", "--endpoint", "http://127.0.0.1:1"][..],
        &["--insecure", "serve"][..],
        &["check-config", "herald.toml", "--password", "x"][..],
    ] {
        let output = run(&mut bare_herald(), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "herald {args:?}: {stderr}");
        assert!(
            stderr.contains("option of the client commands"),
            "herald {args:?}: {stderr}"
        );
    }
    let output = run(&mut bare_herald(), &["events", "watch", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    for option in client_options {
        assert!(
            help.contains(option),
            "events watch --help lacks {option}: {help}"
        );
    }
    assert!(
        help.contains("retries") && help.contains("gives up only"),
        "events watch --help must say when it retries and when it gives up: {help}"
    );
}

#[test]
fn tokens_from_the_cli_authenticate_as_their_user_or_machine() {
    let server = Server::shared();
    let machine = run_ok(
        &mut herald(server),
        &["machines", "create", r#"{"Name":"cli-machine"}"#],
    );
    let uuid = machine["Uuid"].as_str().unwrap_or_default().to_owned();
    let minted = run_ok(
        &mut herald(server),
        &["machines", "token", &uuid, "--ttl", "60"],
    );
    assert_eq!(minted["Info"]["Principal"], format!("runner:{uuid}"));
    let token = minted["Token"].as_str().unwrap_or_default().to_owned();
    let shown = run_ok(
        &mut herald(server),
        &["--token", &token, "machines", "show", &uuid],
    );
    assert_eq!(shown["Uuid"], uuid);
    run_ok(
        &mut herald(server),
        &[
            "machines", "set", &uuid, "param", "by", "to", "runner", "--token", &token,
        ],
    );
    let stderr = run_failing(
        &mut herald(server),
        &["--token", &token, "profiles", "show", "global"],
        4,
    );
    assert!(stderr.contains("profiles:get:global"), "{stderr}");

    let user_token = run_ok(
        &mut herald(server),
        &["users", "token", "rocketskates", "--ttl", "60"],
    );
    let token = user_token["Token"].as_str().unwrap_or_default();
    let mut with_token = herald(server);
    with_token
        .env("HERALD_TOKEN", token)
        .env("HERALD_PASSWORD", "not-used-with-a-token");
    assert_eq!(
        run_ok(&mut with_token, &["profiles", "show", "global"])["Name"],
        "global"
    );
}

#[test]
fn connection_options_work_before_or_after_the_subcommand() {
    let server = Server::shared();
    let endpoint = server.base_url();
    let password = server.admin_password().to_owned();
    let before = run_ok(
        &mut bare_herald(),
        &[
            "--endpoint",
            &endpoint,
            "--password",
            &password,
            "profiles",
            "show",
            "global",
        ],
    );
    let after = run_ok(
        &mut bare_herald(),
        &[
            "profiles",
            "show",
            "global",
            "--endpoint",
            &endpoint,
            "--password",
            &password,
        ],
    );
    let between = run_ok(
        &mut bare_herald(),
        &[
            "profiles",
            "--endpoint",
            &endpoint,
            "show",
            "--username",
            "rocketskates",
            "global",
            "--password",
            &password,
        ],
    );
    assert_eq!(before["Name"], "global");
    assert_eq!(after["Name"], "global");
    assert_eq!(between["Name"], "global");
}

#[test]
fn every_failure_has_a_clear_message_and_its_exit_code() {
    let server = Server::shared();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a port")
        .port();
    let nowhere = format!("http://127.0.0.1:{closed_port}");
    let stderr = run_failing(
        &mut herald(server),
        &["profiles", "list", "--endpoint", &nowhere],
        3,
    );
    assert!(
        stderr.contains("cannot reach herald") && stderr.contains("is herald running"),
        "{stderr}"
    );

    let stderr = run_failing(
        &mut herald(server),
        &["profiles", "list", "--password", "wrong"],
        4,
    );
    assert!(
        stderr.contains("403") && stderr.contains("wrong password"),
        "{stderr}"
    );
    run_failing(
        &mut herald(server),
        &["profiles", "list", "--token", "not-a-token"],
        4,
    );
    let stderr = run_failing(
        &mut herald(server),
        &["events", "watch", "--password", "wrong"],
        4,
    );
    assert!(stderr.contains("403"), "{stderr}");

    let stderr = run_failing(
        &mut herald(server),
        &["profiles", "show", "no-such-profile"],
        1,
    );
    assert!(
        stderr.contains("404") && stderr.contains("does not exist"),
        "{stderr}"
    );
    let stderr = run_failing(
        &mut herald(server),
        &["profiles", "create", "{\"Name\":"],
        2,
    );
    assert!(stderr.contains("not valid JSON"), "{stderr}");
    let stderr = run_failing(
        &mut herald(server),
        &["profiles", "create", r#"{"Name":"a/b"}"#],
        1,
    );
    assert!(stderr.contains("422"), "{stderr}");
    let stderr = run_failing(
        &mut herald(server),
        &["profiles", "list", "--endpoint", "127.0.0.1:8092"],
        2,
    );
    assert!(stderr.contains("https://"), "{stderr}");
    let stderr = run_failing(&mut herald(server), &["events", "watch", "nodots"], 1);
    assert!(stderr.contains("register nodots"), "{stderr}");

    let role = unique("reader-role");
    let user = unique("reader");
    server.create_role(
        &role,
        json!([{"Scope": "profiles", "Action": "get", "Specific": "*"}]),
    );
    server.create_user(&user, "reader-pw", &[&role]);
    let stderr = run_failing(
        &mut herald(server),
        &[
            "profiles",
            "set",
            "global",
            "param",
            "x",
            "to",
            "1",
            "--username",
            &user,
            "--password",
            "reader-pw",
        ],
        4,
    );
    assert!(stderr.contains("profiles:update:global"), "{stderr}");
    let clap = run(
        &mut herald(server),
        &["profiles", "set", "global", "parm", "x", "to", "1"],
    );
    assert_eq!(clap.status.code(), Some(2));
}

#[test]
fn the_watcher_resumes_after_a_drop_without_missing_or_repeating_events() {
    let server = Server::shared();
    let relay = Relay::start(server.addr());
    let key = unique("resume-");
    let mut watch = herald(server);
    watch.env("HERALD_ENDPOINT", relay.endpoint());
    let mut watcher = Watcher::spawn(&mut watch, &["events", "watch", &format!("resume.*.{key}")]);
    watcher.await_stderr("watching");

    let publish =
        |n: u32| server.publish(json!({"Type": "resume", "Action": format!("n{n}"), "Key": key}));
    let first = publish(1);
    assert_eq!(watcher.next_event()["Seq"].as_u64(), Some(first));

    relay.cut();
    let mut published = vec![publish(2), publish(3)];
    watcher.await_stderr("connection lost");
    watcher.await_stderr("watching");
    published.push(publish(4));
    let printed: Vec<u64> = (0..3)
        .map(|_| watcher.next_event()["Seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(printed, published);
    watcher.expect_sentinel_next(
        server,
        json!({"Type": "resume", "Action": "sentinel", "Key": key}),
    );
}

#[test]
fn the_watcher_waits_for_a_server_that_is_down_at_start() {
    let server = Server::shared();
    let port = TcpListener::bind("127.0.0.1:0").expect("pick a port");
    let addr = port.local_addr().expect("its address");
    drop(port);
    let key = unique("late-");
    let mut watch = herald(server);
    watch.env("HERALD_ENDPOINT", format!("http://{addr}"));
    let mut watcher = Watcher::spawn(&mut watch, &["events", "watch", &format!("late.*.{key}")]);
    watcher.await_stderr("retrying in");

    let listener = TcpListener::bind(addr).expect("take the port back");
    let _relay = Relay::on(listener, server.addr());
    watcher.await_stderr("watching");
    let seq = server.publish(json!({"Type": "late", "Action": "on", "Key": key}));
    assert_eq!(watcher.next_event()["Seq"].as_u64(), Some(seq));
}

#[test]
fn after_a_drop_the_watcher_names_the_seq_it_resumes_after_and_the_last_it_printed() {
    let server = Server::start();
    let relay = Relay::start(server.addr());
    let key = unique("mark-");
    let mut watch = herald(&server);
    watch.env("HERALD_ENDPOINT", relay.endpoint());
    let mut watcher = Watcher::spawn(&mut watch, &["events", "watch", &format!("mark.*.{key}")]);
    watcher.await_stderr("watching");

    let printed = server.publish(json!({"Type": "mark", "Action": "shown", "Key": key}));
    assert_eq!(watcher.next_event()["Seq"].as_u64(), Some(printed));
    let unmatched = server.publish(json!({"Type": "mark", "Action": "other", "Key": "other"}));
    // A bookmark tells a replaying client that nothing up to its Seq is for it.
    let bookmark = eventually(
        &format!("a bookmark past Seq {unmatched}"),
        Duration::from_secs(20),
        || match relay.bookmarks().iter().max() {
            Some(&seq) if seq >= unmatched => Ok(seq),
            last => Err(format!("bookmark {last:?}")),
        },
    );

    relay.cut();
    let skipped = if bookmark == printed + 1 {
        format!("Seq {bookmark} did not match")
    } else {
        format!("Seq {}-{bookmark} did not match", printed + 1)
    };
    watcher.await_stderr(&format!(
        "resuming after Seq {bookmark} (last printed {printed}; {skipped})"
    ));
    watcher.await_stderr(&format!("watching mark.*.{key} after Seq {bookmark}"));
    let next = server.publish(json!({"Type": "mark", "Action": "next", "Key": key}));
    assert_eq!(watcher.next_event()["Seq"].as_u64(), Some(next));
    watcher.expect_sentinel_next(
        &server,
        json!({"Type": "mark", "Action": "sentinel", "Key": key}),
    );
}

#[test]
fn a_watcher_resuming_past_the_end_of_the_log_prints_the_servers_new_events() {
    let server = Server::start();
    let mut watcher = Watcher::spawn(
        &mut herald(&server),
        &["events", "watch", "fresh.*.*", "--replay", "1000000"],
    );
    watcher.await_stderr("the server's log ends at Seq");
    let seq = server.publish(json!({"Type": "fresh", "Action": "start", "Key": "k"}));
    assert!(seq < 1_000_000);
    assert_eq!(watcher.next_event()["Seq"].as_u64(), Some(seq));
}

#[test]
fn tls_needs_the_servers_certificate_or_insecure() {
    let server = Server::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let cert = server.cert_path().display().to_string();
    let stderr = run_failing(&mut herald(&server), &["profiles", "show", "global"], 3);
    assert!(
        stderr.contains("--ca-cert") && stderr.contains("--insecure"),
        "{stderr}"
    );
    let stderr = run_failing(&mut herald(&server), &["events", "watch"], 3);
    assert!(stderr.contains("--ca-cert"), "{stderr}");

    assert_eq!(
        run_ok(
            &mut herald(&server),
            &["profiles", "show", "global", "--insecure"]
        )["Name"],
        "global"
    );
    let mut trusted = herald(&server);
    trusted.env("HERALD_CA_CERT", &cert);
    assert_eq!(
        run_ok(&mut trusted, &["profiles", "show", "global"])["Name"],
        "global"
    );

    let mut watch = herald(&server);
    watch.env("HERALD_CA_CERT", &cert);
    let mut watcher = Watcher::spawn(&mut watch, &["events", "watch", "profiles.save.global"]);
    watcher.await_stderr("watching");
    run_ok(
        &mut herald(&server),
        &[
            "profiles",
            "set",
            "global",
            "param",
            "tls",
            "to",
            "true",
            "--ca-cert",
            &cert,
        ],
    );
    assert_eq!(watcher.next_event()["Object"]["Params"]["tls"], true);
}

#[test]
fn a_certificate_that_fails_verification_gets_a_hint_naming_the_names_it_holds() {
    // Listening on every address, so 127.0.0.2 (loopback, but not in the certificate) reaches it.
    let server = Server::start_with(Options {
        tls: true,
        listen: Some("0.0.0.0:0".to_string()),
        ..Options::default()
    });
    let port = server.addr().port();
    let cert = server.cert_path().display().to_string();

    let mut untrusted = herald(&server);
    untrusted.env("HERALD_ENDPOINT", format!("https://127.0.0.1:{port}"));
    let stderr = run_failing(&mut untrusted, &["profiles", "show", "global"], 3);
    assert!(
        stderr.contains("localhost, 127.0.0.1, ::1") && stderr.contains("--ca-cert"),
        "{stderr}"
    );

    let wrong_name = || {
        let mut command = herald(&server);
        command
            .env("HERALD_ENDPOINT", format!("https://127.0.0.2:{port}"))
            .env("HERALD_CA_CERT", &cert);
        command
    };
    let stderr = run_failing(&mut wrong_name(), &["profiles", "show", "global"], 3);
    assert!(
        stderr.contains("holds localhost, 127.0.0.1, ::1")
            && stderr.contains("not 127.0.0.2")
            && stderr.contains("--tls-san 127.0.0.2"),
        "{stderr}"
    );
    let stderr = run_failing(&mut wrong_name(), &["events", "watch", "--replay", "0"], 3);
    assert!(stderr.contains("--tls-san 127.0.0.2"), "{stderr}");
}

#[test]
fn an_http_https_mix_up_gets_a_hint_naming_the_other_scheme() {
    let plain = Server::start();
    let authority = plain.addr().to_string();
    for args in [
        &["profiles", "show", "global"][..],
        &["events", "watch", "--replay", "0"][..],
    ] {
        let mut https_to_plain = herald(&plain);
        https_to_plain.env("HERALD_ENDPOINT", format!("https://{authority}"));
        let stderr = run_failing(&mut https_to_plain, args, 3);
        assert!(
            stderr.contains(&format!("use http://{authority}")),
            "{stderr}"
        );
    }

    let tls = Server::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let authority = tls.addr().to_string();
    let http_to_tls = || {
        let mut command = herald(&tls);
        command.env("HERALD_ENDPOINT", format!("http://{authority}"));
        command
    };
    let stderr = run_failing(&mut http_to_tls(), &["profiles", "show", "global"], 1);
    assert!(
        stderr.contains(&format!("use https://{authority}/api/v3/profiles/global")),
        "{stderr}"
    );
    let stderr = run_failing(&mut http_to_tls(), &["events", "watch", "--replay", "0"], 1);
    assert!(
        stderr.contains(&format!("use wss://{authority}/api/v3/ws")),
        "{stderr}"
    );
}

#[test]
fn the_default_endpoint_is_drps_port_on_loopback() {
    let mut command = bare_herald();
    let output = run(&mut command, &["profiles", "list", "--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("https://127.0.0.1:8092") && help.contains("rocketskates"),
        "{help}"
    );
}

#[test]
fn the_cli_lists_live_connections_and_the_history_of_closed_ones() {
    let server = Server::start();
    let created = run_ok(
        &mut herald(&server),
        &[
            "machines",
            "create",
            &json!({"Name": unique("m")}).to_string(),
        ],
    );
    let uuid = created["Uuid"].as_str().expect("a Uuid").to_string();
    let token = run_ok(&mut herald(&server), &["machines", "token", &uuid]);
    let token = token["Token"].as_str().expect("a Token").to_string();
    let runner = server.ws(&Auth::bearer(&token));

    let principal = format!("runner:{uuid}");
    let listed = run_ok(
        &mut herald(&server),
        &[
            "connections",
            "list",
            "--principal",
            &principal,
            "--type",
            "websocket",
        ],
    );
    let entries = listed.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{listed}");
    let addr = entries[0]["RemoteAddr"].as_str().unwrap().to_string();
    let shown = run_ok(&mut herald(&server), &["connections", "show", &addr]);
    assert_eq!(shown["Principal"], principal.as_str());
    let of_machine = run_ok(&mut herald(&server), &["machines", "connections", &uuid]);
    assert_eq!(of_machine.as_array().map(Vec::len), Some(1), "{of_machine}");

    runner.close();
    let history = eventually(
        &format!("history for {principal}"),
        Duration::from_secs(10),
        || {
            let history = run_ok(
                &mut herald(&server),
                &[
                    "connections",
                    "history",
                    "--principal",
                    &principal,
                    "--limit",
                    "5",
                ],
            );
            if history.as_array().is_some_and(|h| !h.is_empty()) {
                Ok(history)
            } else {
                Err(history)
            }
        },
    );
    assert_eq!(history[0]["CloseReason"], "client closed");
    let message = run_failing(&mut herald(&server), &["connections", "show", &addr], 1);
    assert!(message.contains("404"), "{message}");
}

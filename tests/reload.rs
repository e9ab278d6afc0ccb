//! SIGHUP reloads what can change without a restart (log level, retention) and names what
//! cannot; the process, its connections and its log carry on.

mod common;

use std::time::Duration;

use common::{ConfigFile, Options, Server, event, eventually, unique};

fn first_seq(server: &Server) -> u64 {
    server.get("/api/v3/info").json()["FirstSeq"]
        .as_u64()
        .expect("FirstSeq")
}

#[test]
fn sighup_applies_new_retention_and_log_level_and_names_settings_that_need_a_restart() {
    let config = ConfigFile::new("retain_events = 1000\nlog_level = \"info\"\n");
    let server = Server::start_with(Options {
        args: config.flag(),
        ..Options::default()
    });
    let mut watcher = server.ws(&server.admin());
    watcher.register("reload.*.*");
    let kind = unique("k");
    let mut last = 0;
    for i in 0..30 {
        last = server.publish(event("reload", &kind, &i.to_string()));
    }
    assert_eq!(watcher.events_through(last).len(), 30);
    assert_eq!(
        first_seq(&server),
        1,
        "nothing trimmed under the first limit"
    );

    config.write("retain_events = 5\nlog_level = \"debug\"\nmax_filters = 7\n");
    server.hangup();
    eventually("the new retention applied", Duration::from_secs(10), || {
        let first = first_seq(&server);
        if first + 4 >= last {
            Ok(())
        } else {
            Err(format!("FirstSeq {first}; stderr:\n{}", server.stderr()))
        }
    });
    let log = server.stderr();
    assert!(log.contains("reloaded retention"), "{log}");
    assert!(log.contains("reloaded the log level"), "{log}");
    assert!(
        log.contains("limits"),
        "a changed limit is named as needing a restart: {log}"
    );
    // Same process, same connections: the watcher still gets events.
    let next = server.publish(event("reload", &kind, "after"));
    assert_eq!(watcher.events_through(next).len(), 1);
}

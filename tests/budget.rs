//! The outbound budget bounds everything queued to a client, not only events.

mod common;

use std::time::{Duration, Instant};

use common::{LOG_TIMEOUT, Options, Server, eventually};

#[test]
fn a_client_that_sends_commands_but_never_reads_the_replies_is_closed_as_a_slow_consumer() {
    let server = Server::start_with(Options::with_args(&[
        "--max-body-bytes",
        "32KiB",
        "--outbound-budget",
        "64KiB",
    ]));
    let mut ws = server.raw_ws();
    // Each reply is ~150 bytes; 100,000 of them overflow any kernel buffer plus the budget.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while sent < 100_000 && Instant::now() < deadline {
        ws.send_text_bytes(b"register a.b.c");
        sent += 1;
        if sent % 1_000 == 0
            && server
                .get("/metrics")
                .body
                .contains("herald_slow_consumer_closes_total 1")
        {
            break;
        }
    }
    // The server may still be working through commands the kernel buffered when sending stops.
    eventually(
        &format!("the slow-consumer close after {sent} commands"),
        LOG_TIMEOUT,
        || {
            let metrics = server.get("/metrics").body;
            if metrics.contains("herald_slow_consumer_closes_total 1") {
                Ok(())
            } else {
                Err("the client is still open")
            }
        },
    );
    // Whatever was queued before the close is readable, then the close frame with 4008.
    assert_eq!(ws.expect_close_code(), 4008);
}

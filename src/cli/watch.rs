//! `herald events watch`: follows the websocket stream and prints one event per line. After a
//! drop it reconnects and sends `replay <Seq>` from the last event printed or a later bookmark,
//! so no event is missed or repeated.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use super::{CliError, Client, Stream};

/// How long connecting, the TLS handshake and the upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the connection is taken for dead; the server pings every 30 s.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);
/// First and longest wait between reconnection attempts.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How a session ended.
enum Ended {
    /// Standard output is gone (`| head`): stop quietly.
    OutputClosed,
    /// The connection failed or dropped: reconnect and resume.
    Dropped(String),
}

/// Where the watcher stands in the log.
struct Position {
    /// Every event up to this Seq that the watcher should print has been printed: the last
    /// event printed, or a later bookmark (the events between did not match).
    resume_after: u64,
    /// The Seq the watcher started after.
    started_after: u64,
    /// The last event printed, if any.
    printed: Option<u64>,
}

impl Position {
    fn new(start: u64) -> Position {
        Position {
            resume_after: start,
            started_after: start,
            printed: None,
        }
    }

    /// What resuming means, in words: the Seq it resumes after, and why when that is not the
    /// last event printed.
    fn resuming(&self) -> String {
        let resume = self.resume_after;
        let (shown, since) = match self.printed {
            Some(seq) => (format!("last printed {seq}"), seq),
            None => (
                format!("nothing printed since Seq {}", self.started_after),
                self.started_after,
            ),
        };
        if resume <= since {
            return match self.printed {
                Some(_) => format!("resuming after Seq {resume}, the last printed"),
                None => format!("resuming after Seq {resume}"),
            };
        }
        let skipped = if resume == since + 1 {
            format!("Seq {resume} did not match")
        } else {
            format!("Seq {}-{resume} did not match", since + 1)
        };
        format!("resuming after Seq {resume} ({shown}; {skipped})")
    }
}

/// Waits out a failed attempt; answers the next pause.
fn pause(what: &str, delay: Duration) -> Duration {
    eprintln!(
        "herald: {what}; retrying in {}",
        humantime::format_duration(delay)
    );
    thread::sleep(delay);
    (delay * 2).min(RETRY_MAX)
}

/// Whether a failed request may succeed later: the server is down, restarting or busy.
fn retryable(client: &Client, error: &CliError) -> bool {
    match error {
        CliError::Unreachable { reason, .. } => client.may_succeed_later(reason),
        CliError::Refused { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Watches events matching `filter`, starting after `replay` (or after the newest stored event)
/// and resuming after every drop, until standard output closes or a failure is final. A server
/// that cannot be reached, at start or later, is retried with growing pauses.
pub fn watch(
    client: &Client,
    filter: &str,
    replay: Option<u64>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut delay = RETRY_FIRST;
    let start = match replay {
        Some(seq) => seq,
        // Starting from the newest stored Seq makes even the first connection resumable.
        None => loop {
            match client.call("GET", "/api/v3/info", None) {
                Ok(info) => break info.get("LastSeq").and_then(Value::as_u64).unwrap_or(0),
                Err(error) if retryable(client, &error) => delay = pause(&error.to_string(), delay),
                Err(error) => return Err(error),
            }
        },
    };
    let mut position = Position::new(start);
    loop {
        let mut socket = match connect(client) {
            Ok(socket) => socket,
            Err(Ended::Dropped(reason)) if !client.may_succeed_later(&reason) => {
                return Err(client.unreachable(&reason));
            }
            Err(Ended::Dropped(reason)) => {
                delay = pause(&client.unreachable(&reason).to_string(), delay);
                continue;
            }
            Err(Ended::OutputClosed) => return Ok(()),
        }?;
        delay = RETRY_FIRST;
        match follow(&mut socket, filter, &mut position, out)? {
            Ended::OutputClosed => return Ok(()),
            Ended::Dropped(reason) => {
                eprintln!(
                    "herald: connection lost ({reason}); {}",
                    position.resuming()
                );
            }
        }
    }
}

/// Connects and upgrades; `Ok(Err)` is a final refusal (bad credentials), `Err` a retryable one.
fn connect(client: &Client) -> Result<Result<WebSocket<Stream>, CliError>, Ended> {
    let endpoint = client.endpoint();
    let addrs = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|e| Ended::Dropped(format!("cannot resolve {}: {e}", endpoint.host)))?;
    let mut last_error = format!("{} resolves to no address", endpoint.host);
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = e.to_string(),
        }
    }
    let tcp = tcp.ok_or(Ended::Dropped(last_error))?;
    let dropped = |e: io::Error| Ended::Dropped(e.to_string());
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(dropped)?;
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(dropped)?;
    tcp.set_nodelay(true).map_err(dropped)?;
    let stream = match client.tls() {
        None => Stream::Plain(tcp),
        Some(config) => {
            let name =
                rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| {
                    Ended::Dropped(format!(
                        "{} is not a valid TLS server name: {e}",
                        endpoint.host
                    ))
                })?;
            let connection = rustls::ClientConnection::new(config, name)
                .map_err(|e| Ended::Dropped(format!("TLS setup failed: {e}")))?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(connection, tcp)))
        }
    };
    let scheme = if endpoint.tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/api/v3/ws", endpoint.authority());
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Ended::Dropped(format!("bad websocket URL {url}: {e}")))?;
    match client.authorization().parse() {
        Ok(value) => {
            request.headers_mut().insert("Authorization", value);
        }
        Err(_) => {
            return Ok(Err(CliError::Usage(
                "the credentials contain characters that cannot travel in an HTTP header".into(),
            )));
        }
    }
    match tungstenite::client::client(request, stream) {
        Ok((socket, _)) => {
            let _ = socket.get_ref().tcp().set_read_timeout(Some(SILENCE_LIMIT));
            Ok(Ok(socket))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let refused = CliError::Refused {
                method: "GET".into(),
                path: "/api/v3/ws".into(),
                status,
                messages: super::client::error_messages(status, &body),
            };
            // Credentials and claims do not fix themselves; a server that is busy or
            // restarting might.
            if status < 500 {
                Ok(Err(refused))
            } else {
                Err(Ended::Dropped(refused.to_string()))
            }
        }
        Err(e) => Err(Ended::Dropped(e.to_string())),
    }
}

/// Registers, replays from where `position` stands, then prints events until the connection
/// ends.
fn follow(
    socket: &mut WebSocket<Stream>,
    filter: &str,
    position: &mut Position,
    out: &mut impl Write,
) -> Result<Ended, CliError> {
    let register = format!("register {filter}");
    if let Err(ended) = send(socket, &register) {
        return Ok(ended);
    }
    let reply = match await_reply(socket) {
        Ok(reply) => reply,
        Err(ended) => return Ok(ended),
    };
    refused(&register, &reply)?;
    let last_seen = position.resume_after;
    let replay = format!("replay {last_seen}");
    if let Err(ended) = send(socket, &replay) {
        return Ok(ended);
    }
    // Events that arrive before the replay's reply are sent again after it, in order.
    let reply = match await_reply(socket) {
        Ok(reply) => reply,
        Err(ended) => return Ok(ended),
    };
    refused(&replay, &reply)?;
    // On stderr, so scripts (and tests) know from when on nothing is missed.
    eprintln!("herald: watching {filter} after Seq {last_seen}");
    let log = &reply["Object"];
    if log["Recovered"] == Value::Bool(false) {
        let first = log["FirstSeq"].as_u64().unwrap_or(1);
        let last = log["LastSeq"].as_u64().unwrap_or(0);
        if last_seen > last {
            eprintln!(
                "herald: the server's log ends at Seq {last}, before Seq {last_seen} (it was reset or restored from an older copy); continuing with its events after Seq {last}"
            );
        } else {
            eprintln!(
                "herald: events after Seq {last_seen} up to Seq {} are no longer held by the server (it holds {first}..{last}); continuing from Seq {first}",
                first.saturating_sub(1)
            );
        }
        // The server goes on from its oldest event, or live: events below `last_seen` are new.
        position.resume_after = first.saturating_sub(1);
    }
    loop {
        let text = match next_text(socket) {
            Ok(text) => text,
            Err(ended) => return Ok(ended),
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if event["Type"] == "websocket" {
            // A bookmark promises that everything up to its Seq has been sent.
            if event["Action"] == "bookmark"
                && let Some(seq) = event["Key"].as_str().and_then(|k| k.parse::<u64>().ok())
            {
                position.resume_after = position.resume_after.max(seq);
            }
            continue;
        }
        let seq = event["Seq"].as_u64();
        if seq.is_some_and(|seq| seq <= position.resume_after) {
            continue;
        }
        match writeln!(out, "{}", text.trim()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Ended::OutputClosed),
            Err(e) => return Err(CliError::Output(e)),
        }
        if let Some(seq) = seq {
            position.resume_after = seq;
            position.printed = Some(seq);
        }
    }
}

fn refused(command: &str, reply: &Value) -> Result<(), CliError> {
    if reply["Action"] == "error" {
        let message = reply["Object"]["Messages"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        return Err(CliError::Stream {
            command: command.to_owned(),
            message,
        });
    }
    Ok(())
}

fn send(socket: &mut WebSocket<Stream>, text: &str) -> Result<(), Ended> {
    socket
        .send(Message::text(text))
        .map_err(|e| Ended::Dropped(e.to_string()))
}

/// The next `websocket` reply, discarding events that come before it.
fn await_reply(socket: &mut WebSocket<Stream>) -> Result<Value, Ended> {
    loop {
        let text = next_text(socket)?;
        if let Ok(value) = serde_json::from_str::<Value>(&text)
            && value["Type"] == "websocket"
            && value["Action"] != "bookmark"
        {
            return Ok(value);
        }
    }
}

fn next_text(socket: &mut WebSocket<Stream>) -> Result<String, Ended> {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => return Ok(text.to_string()),
            Ok(Message::Close(frame)) => {
                let reason = frame.map_or_else(
                    || "closed by the server".to_owned(),
                    |f| format!("closed by the server: {} {}", u16::from(f.code), f.reason),
                );
                return Err(Ended::Dropped(reason));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Ended::Dropped(format!(
                    "nothing heard for {}",
                    humantime::format_duration(SILENCE_LIMIT)
                )));
            }
            Err(e) => return Err(Ended::Dropped(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn the_resume_message_names_the_seq_resumed_from_and_why_it_is_past_the_last_printed() {
        let mut position = Position::new(5);
        assert_eq!(position.resuming(), "resuming after Seq 5");
        position.resume_after = 6;
        assert_eq!(
            position.resuming(),
            "resuming after Seq 6 (nothing printed since Seq 5; Seq 6 did not match)"
        );
        position.printed = Some(6);
        assert_eq!(
            position.resuming(),
            "resuming after Seq 6, the last printed"
        );
        position.resume_after = 8;
        assert_eq!(
            position.resuming(),
            "resuming after Seq 8 (last printed 6; Seq 7-8 did not match)"
        );
    }
}

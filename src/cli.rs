//! The `herald` client subcommands: a plain blocking client of a herald server's REST routes
//! and websocket stream (`docs/protocol.md` §7), shaped after `drpcli`.
//!
//! - [`Connection`]: where the server is and how to authenticate (flags or `HERALD_*`).
//! - [`Command`]: the subcommands; [`run`] carries one out.
//! - `client`: REST requests with ureq; `watch`: the resuming websocket watcher.

mod client;
mod watch;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;
use thiserror::Error;

pub use client::{AnyCertificate, Client, Endpoint, Stream};
pub use watch::watch;

/// The endpoint clients talk to unless told otherwise (DRP's).
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:8092";

/// Exit code of a request the server refused (other than for authentication).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code of bad usage: a bad flag or argument, or an argument that is not valid JSON.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the server cannot be reached (refused connection, TLS failure, timeout).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code when the server refuses the credentials (401) or the claims (403).
pub const EXIT_AUTH: u8 = 4;

/// How to reach and authenticate to a herald server; accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(long, global = true, env = "HERALD_ENDPOINT", default_value = DEFAULT_ENDPOINT, help_heading = "Connection (client commands)")]
    pub endpoint: String,
    /// The user to log in as.
    #[arg(
        long,
        global = true,
        env = "HERALD_USERNAME",
        default_value = "rocketskates",
        help_heading = "Connection (client commands)"
    )]
    pub username: String,
    /// The user's password.
    #[arg(
        long,
        global = true,
        env = "HERALD_PASSWORD",
        default_value = "r0cketsk8ts",
        hide_default_value = true,
        hide_env_values = true,
        help_heading = "Connection (client commands)"
    )]
    pub password: String,
    /// A token to use instead of the username and password.
    #[arg(
        long,
        global = true,
        env = "HERALD_TOKEN",
        hide_env_values = true,
        help_heading = "Connection (client commands)"
    )]
    pub token: Option<String>,
    /// Trust only this PEM certificate (such as herald's generated `tls/cert.pem`).
    #[arg(
        long,
        global = true,
        env = "HERALD_CA_CERT",
        help_heading = "Connection (client commands)"
    )]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the server's TLS certificate.
    #[arg(long, global = true, help_heading = "Connection (client commands)")]
    pub insecure: bool,
}

/// Why a client command failed; each variant has an exit code.
#[derive(Debug, Error)]
pub enum CliError {
    /// An argument is unusable (bad JSON, a bad endpoint URL, an unreadable CA file).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached or the connection failed.
    #[error("cannot reach herald at {endpoint}: {reason}")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What went wrong, with a hint where one helps.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{method} {path}: {status} {}", messages.join("; "))]
    Refused {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The server's messages (DRP's error shape), or the raw body.
        messages: Vec<String>,
    },
    /// The server's answer could not be read.
    #[error("{method} {path}: the answer is not valid JSON: {reason}")]
    BadAnswer {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
        /// The parse error.
        reason: String,
    },
    /// The websocket stream refused a command.
    #[error("the server refused {command:?}: {message}")]
    Stream {
        /// The command sent.
        command: String,
        /// The server's message.
        message: String,
    },
    /// Standard output could not be written.
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

// By hand rather than `#[from]`, which would also expose the cause as `source`.
impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::Output(error)
    }
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            CliError::Refused {
                status: 401 | 403, ..
            } => EXIT_AUTH,
            CliError::Refused { .. } | CliError::BadAnswer { .. } | CliError::Stream { .. } => {
                EXIT_REFUSED
            }
            CliError::Output(_) => EXIT_REFUSED,
        }
    }
}

/// The client subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the event stream, or post an event.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Profiles (keyed by Name), with their params.
    #[command(subcommand)]
    Profiles(WithParams),
    /// Param definitions (keyed by Name).
    #[command(subcommand)]
    Params(ObjectCommand),
    /// Machines (keyed by Uuid), with their params and runner tokens.
    #[command(subcommand)]
    Machines(MachinesCommand),
    /// Clusters (keyed by Uuid).
    #[command(subcommand)]
    Clusters(ObjectCommand),
    /// Resource brokers (keyed by Uuid).
    #[command(subcommand, name = "resource_brokers")]
    ResourceBrokers(ObjectCommand),
    /// Users (keyed by Name) and their tokens.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Roles (keyed by Name).
    #[command(subcommand)]
    Roles(ObjectCommand),
    /// Live connections and the history of closed ones.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
}

/// `herald connections …`.
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// List live connections (websockets and keep-alive REST connections).
    List {
        /// Only this principal, e.g. `runner:<uuid>` or `user:rocketskates`.
        #[arg(long)]
        principal: Option<String>,
        /// Only this type: `websocket` or `api`.
        #[arg(long = "type")]
        kind: Option<String>,
    },
    /// Show one live connection by its remote address (`ip:port`).
    Show {
        /// The connection's RemoteAddr.
        addr: String,
    },
    /// Closed connections, newest first, with why they closed.
    History {
        /// Only this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only connections closed at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `herald events …`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they happen, one JSON object per line; resumes by itself after a drop.
    ///
    /// While the server cannot be reached, at start or after a drop, it retries with growing
    /// pauses (0.1 s to 5 s), saying so on stderr, and resumes after the last event it printed
    /// without missing or repeating one. It gives up only when retrying cannot help: the server
    /// refuses the credentials (exit 4) or the filter (exit 1), its TLS certificate is not
    /// trusted, or it does not speak TLS at an https:// endpoint (exit 3).
    Watch {
        /// `type.action.key`, each field `*` or a comma list.
        #[arg(default_value = "*.*.*")]
        filter: String,
        /// Start after this Seq: replay stored events first, then follow live ones.
        #[arg(long)]
        replay: Option<u64>,
    },
    /// Publish one event (a JSON object) or several (a JSON array); prints the stored Seq.
    ///
    /// Prints the Seq the server stored the event under (for an array, the last event's), once
    /// the event is in the log.
    Post {
        /// The event, such as '{"Type":"machines","Action":"update","Key":"m1"}'.
        json: String,
    },
}

/// What every object type offers.
#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// List objects, optionally only those whose fields equal the given values.
    List {
        /// Equality filters, `Field=Value` (such as `Name=global`).
        filters: Vec<String>,
        /// Skip this many objects.
        #[arg(long)]
        offset: Option<u64>,
        /// Show at most this many objects.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Show one object.
    Show {
        /// The object's key (Name or Uuid).
        key: String,
    },
    /// Create an object from JSON.
    Create {
        /// The object, such as '{"Name":"p1"}'.
        json: String,
    },
    /// Change an object: a JSON object is merged into it; a JSON array is sent as a JSON Patch.
    Update {
        /// The object's key.
        key: String,
        /// Fields to change, or an RFC 6902 patch.
        json: String,
    },
    /// Delete an object.
    Destroy {
        /// The object's key.
        key: String,
    },
}

/// Object commands plus the params of an object.
#[derive(Debug, Subcommand)]
pub enum WithParams {
    #[command(flatten)]
    Object(ObjectCommand),
    #[command(flatten)]
    Param(ParamCommand),
}

/// `… set KEY param NAME to VALUE`, `… remove KEY param NAME`, `… get KEY param NAME`.
#[derive(Debug, Subcommand)]
pub enum ParamCommand {
    /// Set a param: `set KEY param NAME to VALUE` (VALUE is JSON if it parses, else a string).
    Set {
        /// The object's key.
        key: String,
        /// The word `param`.
        #[arg(value_name = "param", value_parser = ["param"], hide_possible_values = true)]
        param_word: String,
        /// The param's name.
        param: String,
        /// The word `to`.
        #[arg(value_name = "to", value_parser = ["to"], hide_possible_values = true)]
        to_word: String,
        /// The value: JSON if it parses (`3`, `true`, `{"a":1}`), else taken as a string.
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Remove a param: `remove KEY param NAME`.
    Remove {
        /// The object's key.
        key: String,
        /// The word `param`.
        #[arg(value_name = "param", value_parser = ["param"], hide_possible_values = true)]
        param_word: String,
        /// The param's name.
        param: String,
    },
    /// Show a param: `get KEY param NAME`, or all params with `get KEY params`.
    Get {
        /// The object's key.
        key: String,
        /// The word `param` (then NAME), or `params` for all of them.
        #[arg(value_name = "param|params", value_parser = ["param", "params"], hide_possible_values = true)]
        param_word: String,
        /// The param's name.
        param: Option<String>,
    },
}

/// `herald machines …`.
#[derive(Debug, Subcommand)]
pub enum MachinesCommand {
    #[command(flatten)]
    Object(ObjectCommand),
    #[command(flatten)]
    Param(ParamCommand),
    /// Get a runner token for a machine (principal `runner:<uuid>`), to act as its agent.
    Token {
        /// The machine's Uuid.
        uuid: String,
        /// Lifetime in seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// List the live connections of a machine's runner.
    Connections {
        /// The machine's Uuid.
        uuid: String,
    },
}

/// `herald users …`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    #[command(flatten)]
    Object(ObjectCommand),
    /// Get a token for a user.
    Token {
        /// The user's name.
        name: String,
        /// Lifetime in seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
}

/// Carries out one client command, printing its answer on standard output.
pub fn run(connection: &Connection, command: Command) -> Result<(), CliError> {
    let client = Client::new(connection)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        Command::Events(EventsCommand::Watch { filter, replay }) => {
            watch(&client, &filter, replay, &mut out)
        }
        Command::Events(EventsCommand::Post { json }) => {
            let body = parse_json_argument("the event", &json)?;
            let seq = post(&client, &body)?;
            writeln!(out, "{seq}")?;
            out.flush()?;
            Ok(())
        }
        Command::Profiles(WithParams::Object(command)) => {
            objects(&client, "profiles", command, &mut out)
        }
        Command::Profiles(WithParams::Param(command)) => {
            params(&client, "profiles", command, &mut out)
        }
        Command::Params(command) => objects(&client, "params", command, &mut out),
        Command::Machines(MachinesCommand::Object(command)) => {
            objects(&client, "machines", command, &mut out)
        }
        Command::Machines(MachinesCommand::Param(command)) => {
            params(&client, "machines", command, &mut out)
        }
        Command::Machines(MachinesCommand::Token { uuid, ttl }) => {
            token(&client, "machines", &uuid, ttl, &mut out)
        }
        Command::Clusters(command) => objects(&client, "clusters", command, &mut out),
        Command::ResourceBrokers(command) => {
            objects(&client, "resource_brokers", command, &mut out)
        }
        Command::Users(UsersCommand::Object(command)) => {
            objects(&client, "users", command, &mut out)
        }
        Command::Users(UsersCommand::Token { name, ttl }) => {
            token(&client, "users", &name, ttl, &mut out)
        }
        Command::Roles(command) => objects(&client, "roles", command, &mut out),
        Command::Machines(MachinesCommand::Connections { uuid }) => {
            let path = client::object_path("machines", &uuid, &["connections"]);
            print_json(&mut out, &client.call("GET", &path, None)?)
        }
        Command::Connections(command) => connections(&client, command, &mut out),
    }
}

/// Publishes one event or an array of them; answers the Seq of the last one stored.
fn post(client: &Client, body: &Value) -> Result<u64, CliError> {
    let (_, headers) = client.call_with_headers("POST", "/api/v3/events", Some(body))?;
    headers
        .get("Herald-Seq")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| CliError::BadAnswer {
            method: "POST".into(),
            path: "/api/v3/events".into(),
            reason: "the answer has no Herald-Seq header with the stored event's Seq".into(),
        })
}

fn connections(
    client: &Client,
    command: ConnectionsCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let query = |pairs: &[(&str, Option<String>)]| -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        let query = query.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    };
    let path = match command {
        ConnectionsCommand::List { principal, kind } => {
            format!(
                "/api/v3/connections{}",
                query(&[("Principal", principal), ("Type", kind)])
            )
        }
        ConnectionsCommand::Show { addr } => client::object_path("connections", &addr, &[]),
        ConnectionsCommand::History {
            principal,
            since,
            limit,
        } => format!(
            "/api/v3/connections/history{}",
            query(&[
                ("principal", principal),
                ("since", since),
                ("limit", limit.map(|l| l.to_string())),
            ])
        ),
    };
    print_json(out, &client.call("GET", &path, None)?)
}

fn objects(
    client: &Client,
    ty: &str,
    command: ObjectCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let answer = match command {
        ObjectCommand::List {
            filters,
            offset,
            limit,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for filter in &filters {
                let Some((field, value)) = filter.split_once('=') else {
                    return Err(CliError::Usage(format!(
                        "filter {filter:?} is not Field=Value (such as Name=global)"
                    )));
                };
                query.append_pair(field, value);
            }
            if let Some(offset) = offset {
                query.append_pair("offset", &offset.to_string());
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            let query = query.finish();
            let path = if query.is_empty() {
                format!("/api/v3/{ty}")
            } else {
                format!("/api/v3/{ty}?{query}")
            };
            client.call("GET", &path, None)?
        }
        ObjectCommand::Show { key } => {
            client.call("GET", &client::object_path(ty, &key, &[]), None)?
        }
        ObjectCommand::Create { json } => {
            let body = parse_json_argument("the object", &json)?;
            client.call("POST", &format!("/api/v3/{ty}"), Some(&body))?
        }
        ObjectCommand::Update { key, json } => {
            let change = parse_json_argument("the change", &json)?;
            update(client, ty, &key, change)?
        }
        ObjectCommand::Destroy { key } => {
            client.call("DELETE", &client::object_path(ty, &key, &[]), None)?
        }
    };
    print_json(out, &answer)
}

/// A JSON object is merged into the current object (RFC 7386) and sent as a JSON Patch that
/// first tests `LastModifiedAt`, so a change made meanwhile is refused rather than overwritten.
fn update(client: &Client, ty: &str, key: &str, change: Value) -> Result<Value, CliError> {
    let path = client::object_path(ty, key, &[]);
    let patch = match change {
        Value::Array(_) => change,
        Value::Object(_) => {
            let current = client.call("GET", &path, None)?;
            let mut merged = current.clone();
            json_patch::merge(&mut merged, &change);
            let mut ops = Vec::new();
            if let Some(stamp) = current.get("LastModifiedAt") {
                ops.push(
                    serde_json::json!({"op": "test", "path": "/LastModifiedAt", "value": stamp}),
                );
            }
            let diff =
                serde_json::to_value(json_patch::diff(&current, &merged)).unwrap_or_default();
            match diff {
                Value::Array(diff) if diff.is_empty() => return Ok(current),
                Value::Array(diff) => ops.extend(diff),
                _ => {}
            }
            Value::Array(ops)
        }
        _ => {
            return Err(CliError::Usage(
                "the change must be a JSON object (fields to merge) or a JSON array (a JSON Patch)"
                    .into(),
            ));
        }
    };
    client.call("PATCH", &path, Some(&patch))
}

fn params(
    client: &Client,
    ty: &str,
    command: ParamCommand,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let answer = match command {
        ParamCommand::Set {
            key, param, value, ..
        } => {
            let value = param_value(&value);
            client.call(
                "POST",
                &client::object_path(ty, &key, &["params", &param]),
                Some(&value),
            )?
        }
        ParamCommand::Remove { key, param, .. } => client.call(
            "DELETE",
            &client::object_path(ty, &key, &["params", &param]),
            None,
        )?,
        ParamCommand::Get {
            key,
            param_word,
            param,
        } => match (param_word.as_str(), param) {
            ("params", None) => {
                client.call("GET", &client::object_path(ty, &key, &["params"]), None)?
            }
            ("param", Some(param)) => client.call(
                "GET",
                &client::object_path(ty, &key, &["params", &param]),
                None,
            )?,
            _ => {
                return Err(CliError::Usage(
                    "use `get KEY param NAME` for one param or `get KEY params` for all".into(),
                ));
            }
        },
    };
    print_json(out, &answer)
}

fn token(
    client: &Client,
    ty: &str,
    key: &str,
    ttl: Option<u64>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut path = client::object_path(ty, key, &["token"]);
    if let Some(ttl) = ttl {
        path.push_str(&format!("?ttl={ttl}"));
    }
    let answer = client.call("GET", &path, None)?;
    print_json(out, &answer)
}

/// A param value as drpcli reads it: JSON if it parses, else the text as a string.
pub fn param_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn parse_json_argument(what: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text)
        .map_err(|e| CliError::Usage(format!("{what} is not valid JSON: {e}")))
}

fn print_json(out: &mut impl Write, value: &Value) -> Result<(), CliError> {
    if value.is_null() {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn param_values_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(param_value("blatz"), json!("blatz"));
        assert_eq!(param_value("3"), json!(3));
        assert_eq!(param_value("true"), json!(true));
        assert_eq!(param_value("\"quoted\""), json!("quoted"));
        assert_eq!(param_value("{\"a\":[1]}"), json!({"a": [1]}));
        assert_eq!(param_value("{broken"), json!("{broken"));
        assert_eq!(param_value(""), json!(""));
    }

    #[test]
    fn each_failure_has_its_exit_code() {
        let refused = |status| CliError::Refused {
            method: "GET".into(),
            path: "/".into(),
            status,
            messages: vec![],
        };
        assert_eq!(refused(401).exit_code(), EXIT_AUTH);
        assert_eq!(refused(403).exit_code(), EXIT_AUTH);
        assert_eq!(refused(404).exit_code(), EXIT_REFUSED);
        assert_eq!(CliError::Usage(String::new()).exit_code(), EXIT_USAGE);
        let unreachable = CliError::Unreachable {
            endpoint: String::new(),
            reason: String::new(),
        };
        assert_eq!(unreachable.exit_code(), EXIT_UNREACHABLE);
    }
}

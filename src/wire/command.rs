//! Client commands on the websocket (`docs/protocol.md` §3.1): `register`, `deregister` and
//! `replay`.
//!
//! Every text frame is parsed here, in one place, into a [`Command`]; the connection applies it
//! in one `match` and answers each frame with exactly one reply.

use crate::wire::filter::{Filter, FilterError};

/// The longest `Key` of an error reply, in bytes, so a 4 KiB command is not echoed whole.
pub const ERROR_KEY_MAX_BYTES: usize = 256;

/// The commands, for messages that tell the client what it could have sent.
const USAGE: &str = "register FILTER, deregister FILTER or replay SEQ [EPOCH]";

/// Why a command frame was rejected; the message goes back to the client in the error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The frame holds nothing but whitespace.
    #[error("empty command; send {USAGE}")]
    Empty,
    /// The first word is not one of the (case-sensitive) verbs.
    #[error("unknown command \"{verb}\"; send {USAGE}")]
    UnknownVerb {
        /// The first word of the frame.
        verb: String,
    },
    /// The verb came without an argument.
    #[error("{verb} needs an argument: {usage}")]
    MissingArgument {
        /// The verb that was sent.
        verb: &'static str,
        /// How the verb is used.
        usage: &'static str,
    },
    /// The filter of a `register` or `deregister` does not parse.
    #[error(transparent)]
    BadFilter(#[from] FilterError),
    /// The argument of `replay` is not `SEQ` or `SEQ EPOCH`.
    #[error(
        "replay takes SEQ or SEQ EPOCH, with SEQ a decimal number from 0 to 18446744073709551615; \
         got \"{argument}\""
    )]
    BadReplay {
        /// The argument as sent.
        argument: String,
    },
}

/// One parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start delivering events that match this filter (idempotent per filter text).
    Register(Filter),
    /// Stop delivering events for the filter with exactly this text.
    Deregister(Filter),
    /// Restart the stream after a sequence number (`docs/protocol.md` §4).
    Replay(Replay),
}

/// The argument of a `replay` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Deliver events with a `Seq` greater than this.
    pub seq: u64,
    /// The log epoch the client last saw, if it sent one.
    pub epoch: Option<String>,
}

/// Parses one text frame; on success also returns the argument verbatim (the reply's Key).
pub fn parse(frame: &str) -> Result<(Command, &str), CommandError> {
    let text = frame.trim();
    if text.is_empty() {
        return Err(CommandError::Empty);
    }
    let (verb, argument) = text.split_once(' ').unwrap_or((text, ""));
    let present = |verb, usage| match argument {
        "" => Err(CommandError::MissingArgument { verb, usage }),
        _ => Ok(argument),
    };
    let command = match verb {
        "register" => Command::Register(Filter::parse(present("register", "register FILTER")?)?),
        "deregister" => {
            Command::Deregister(Filter::parse(present("deregister", "deregister FILTER")?)?)
        }
        "replay" => Command::Replay(parse_replay(present("replay", "replay SEQ [EPOCH]")?)?),
        _ => {
            return Err(CommandError::UnknownVerb {
                verb: verb.to_owned(),
            });
        }
    };
    Ok((command, argument))
}

/// Parses `SEQ` or `SEQ EPOCH`.
fn parse_replay(argument: &str) -> Result<Replay, CommandError> {
    let bad = || CommandError::BadReplay {
        argument: argument.to_owned(),
    };
    let mut words = argument.split_whitespace();
    let (Some(seq), epoch, None) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    // `u64::from_str` would also take a leading `+`, which is not a decimal SEQ.
    if !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seq = seq.parse::<u64>().map_err(|_| bad())?;
    Ok(Replay {
        seq,
        epoch: epoch.map(str::to_owned),
    })
}

/// The Key of an error reply: the frame's trimmed text cut to at most 256 bytes on a char boundary.
pub fn error_key(frame: &str) -> &str {
    let text = frame.trim();
    let mut end = text.len().min(ERROR_KEY_MAX_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> Filter {
        match Filter::parse(text) {
            Ok(filter) => filter,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    #[test]
    fn register_and_deregister_carry_their_filter_and_return_the_argument_verbatim() {
        assert_eq!(
            parse("register profiles.save,update.*"),
            Ok((
                Command::Register(filter("profiles.save,update.*")),
                "profiles.save,update.*"
            ))
        );
        assert_eq!(
            parse("deregister machines.*.abc"),
            Ok((
                Command::Deregister(filter("machines.*.abc")),
                "machines.*.abc"
            ))
        );
    }

    #[test]
    fn the_frame_is_trimmed_but_the_argument_is_kept_verbatim() {
        assert_eq!(
            parse(" \r\n register  a . b.c \n"),
            Ok((Command::Register(filter(" a . b.c")), " a . b.c"))
        );
    }

    #[test]
    fn dotted_keys_reach_the_filter_whole() {
        let frame = "register connections.create.user:a.b@example.com";
        let parsed = parse(frame).map(|(command, _)| command);
        assert_eq!(
            parsed,
            Ok(Command::Register(filter(
                "connections.create.user:a.b@example.com"
            )))
        );
    }

    #[test]
    fn verbs_are_case_sensitive_and_unknown_ones_are_rejected() {
        for (frame, verb) in [
            ("Register a.b.c", "Register"),
            ("REPLAY 1", "REPLAY"),
            ("subscribe a.b.c", "subscribe"),
            ("register\ta.b.c", "register\ta.b.c"),
        ] {
            assert_eq!(
                parse(frame),
                Err(CommandError::UnknownVerb {
                    verb: verb.to_owned()
                }),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn an_empty_frame_is_rejected() {
        assert_eq!(parse(""), Err(CommandError::Empty));
        assert_eq!(parse(" \t\r\n"), Err(CommandError::Empty));
    }

    #[test]
    fn a_verb_without_an_argument_is_rejected() {
        for (frame, verb) in [
            ("register", "register"),
            ("deregister   ", "deregister"),
            ("  replay", "replay"),
        ] {
            assert!(
                matches!(parse(frame), Err(CommandError::MissingArgument { verb: v, .. }) if v == verb),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn register_and_deregister_reject_filters_with_fewer_than_three_fields() {
        for frame in ["register a.b", "deregister a.b", "register *"] {
            assert!(
                matches!(
                    parse(frame),
                    Err(CommandError::BadFilter(FilterError::TooFewFields { .. }))
                ),
                "{frame:?}"
            );
        }
        let message = parse("register a.b").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("filter \"a.b\" has 2 fields; a filter is type.action.key")
        );
    }

    #[test]
    fn replay_takes_a_seq_and_an_optional_epoch() {
        assert_eq!(
            parse("replay 0"),
            Ok((
                Command::Replay(Replay {
                    seq: 0,
                    epoch: None
                }),
                "0"
            ))
        );
        assert_eq!(
            parse("replay 1042 4f1c-epoch"),
            Ok((
                Command::Replay(Replay {
                    seq: 1042,
                    epoch: Some("4f1c-epoch".to_owned())
                }),
                "1042 4f1c-epoch"
            ))
        );
        assert_eq!(
            parse("replay 18446744073709551615").map(|(c, _)| c),
            Ok(Command::Replay(Replay {
                seq: u64::MAX,
                epoch: None
            }))
        );
    }

    #[test]
    fn replay_rejects_anything_but_seq_or_seq_epoch() {
        for argument in [
            "-1",
            "+1",
            "1.5",
            "abc",
            "18446744073709551616",
            "1 epoch extra",
            "0x10",
        ] {
            let frame = format!("replay {argument}");
            assert_eq!(
                parse(&frame),
                Err(CommandError::BadReplay {
                    argument: argument.to_owned()
                }),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn error_key_is_the_trimmed_frame_cut_to_256_bytes_on_a_char_boundary() {
        assert_eq!(error_key("  foo bar \n"), "foo bar");
        assert_eq!(error_key(""), "");
        let long = "a".repeat(300);
        assert_eq!(error_key(&long).len(), 256);
        // 255 ASCII bytes then a 3-byte char straddling byte 256: the char is dropped whole.
        let straddling = format!("{}€tail", "a".repeat(255));
        assert_eq!(error_key(&straddling), "a".repeat(255));
        let exact = format!("{}é", "a".repeat(254));
        assert_eq!(error_key(&exact), exact);
    }

    #[test]
    fn error_messages_say_what_to_send() {
        let messages = ["", "frobnicate", "register", "replay x"]
            .map(|frame| parse(frame).err().map(|e| e.to_string()));
        assert_eq!(
            messages,
            [
                Some("empty command; send register FILTER, deregister FILTER or replay SEQ [EPOCH]".to_owned()),
                Some("unknown command \"frobnicate\"; send register FILTER, deregister FILTER or replay SEQ [EPOCH]".to_owned()),
                Some("register needs an argument: register FILTER".to_owned()),
                Some("replay takes SEQ or SEQ EPOCH, with SEQ a decimal number from 0 to 18446744073709551615; got \"x\"".to_owned()),
            ]
        );
    }
}

//! `replay SEQ [EPOCH]`: the reply with the log's bounds, then the stored events after the
//! resume point, read from the log chunk by chunk, until the connection has caught up with the
//! live fan-out and is handed over to it with no gap and no duplicate.

use std::rc::Rc;
use std::time::Instant;

use super::Core;
use super::connection::{CloseReason, WsConn};
use crate::net::notify::Notify;
use crate::wire::command;
use crate::wire::event::{self, EncodedEvent};

/// Events read from the log per replay step.
const REPLAY_CHUNK: usize = 1000;

/// Bytes a replay keeps queued to one connection before waiting for its writer: small, so a
/// thousand clients replaying at once hold megabytes, not gigabytes, and never more than half
/// the outbound budget, so a replay never trips the slow-consumer close.
const REPLAY_HIGH_WATER: usize = 64 * 1024;

/// Replay progress of one connection, while it catches up from the log.
pub(super) struct Replaying {
    cursor: u64,
    /// Wakes the replay task when this core's fan-out moves, its cursor moves or it is stopped.
    pub(super) fanned_out: Rc<Notify>,
}

fn replay_high_water(conn: &WsConn) -> usize {
    REPLAY_HIGH_WATER.min(conn.budget() / 2)
}

impl Core {
    /// Applies `replay SEQ [EPOCH]`: replies with the log's bounds, then streams the stored
    /// events after the resume point until the connection has caught up with the live stream.
    pub(crate) fn start_replay(
        self: &Rc<Self>,
        conn: &Rc<WsConn>,
        argument: &str,
        replay: command::Replay,
    ) {
        let status = &self.shared.log_status;
        let (first, last) = (status.first_seq(), status.last_seq());
        let epoch_matches = replay.epoch.as_deref().is_none_or(|e| e == status.epoch);
        // A replay that does not recover starts after the newest gap: Seqs skipped after an
        // unclean stop are never stored, and streaming across them would look like a trim.
        let oldest_held = first.saturating_sub(1).max(status.resumed_after());
        let (recovered, cursor) = if !epoch_matches {
            (false, oldest_held)
        } else if replay.seq > last {
            (false, self.last_delivered.get())
        } else if replay.seq < status.resumed_after() || replay.seq + 1 < first {
            // Events after SEQ are trimmed, or may have been seen before an unclean stop and lost.
            (false, oldest_held)
        } else {
            (true, replay.seq)
        };
        let object = serde_json::json!({
            "Epoch": status.epoch, "FirstSeq": first, "LastSeq": last, "Recovered": recovered,
        })
        .to_string();
        conn.queue_control(&event::reply_frame("replay", argument, Some(&object)));
        conn.restart_resume_point(cursor);
        let result = if recovered { "recovered" } else { "gap" };
        metrics::counter!(crate::metrics::REPLAY_REQUESTS, "result" => result).increment(1);
        self.bookmarked
            .borrow_mut()
            .insert(conn.slot, (cursor, Instant::now()));
        if cursor == self.last_delivered.get() {
            // Live from here; a replay task left from an earlier `replay` must stop, or it would
            // go on sending from that replay's older cursor.
            self.stop_replay(conn.slot);
            return;
        }
        let mut replaying = self.replaying.borrow_mut();
        if let Some(running) = replaying.get_mut(&conn.slot) {
            // The running task goes on from the new cursor.
            running.cursor = cursor;
            running.fanned_out.notify();
            return;
        }
        replaying.insert(
            conn.slot,
            Replaying {
                cursor,
                fanned_out: Rc::default(),
            },
        );
        drop(replaying);
        monoio::spawn(replay_task(self.clone(), conn.clone()));
    }

    /// Ends a connection's replay, if one runs: its task wakes, finds it gone, and stops.
    pub(super) fn stop_replay(&self, slot: u32) {
        if let Some(stopped) = self.replaying.borrow_mut().remove(&slot) {
            stopped.fanned_out.notify();
        }
    }
}

/// Streams stored events to a replaying connection, chunk by chunk, never holding more than
/// half its budget queued, then hands it over to the live fan-out with no gap and no duplicate.
async fn replay_task(core: Rc<Core>, conn: Rc<WsConn>) {
    loop {
        if conn.is_closing() {
            break;
        }
        let Some((cursor, fanned_out)) = core
            .replaying
            .borrow()
            .get(&conn.slot)
            .map(|r| (r.cursor, r.fanned_out.clone()))
        else {
            break;
        };
        let delivered = core.last_delivered.get();
        if cursor > delivered {
            // The log's bounds run ahead of this core's fan-out while a batch is on its way
            // here: switching now would let the fan-out send events up to `cursor` again.
            fanned_out.notified().await;
            continue;
        }
        if cursor == delivered {
            // Caught up: from here the fan-out delivers. No await between the check and the
            // switch, so no batch can slip between them.
            core.replaying.borrow_mut().remove(&conn.slot);
            if let Some(mark) = core.bookmarked.borrow_mut().get_mut(&conn.slot) {
                mark.0 = cursor;
            }
            break;
        }
        if conn.queued_bytes() > replay_high_water(&conn) {
            conn.drained().notified().await;
            continue;
        }
        let reader = core.shared.log_reader.clone();
        // Read no more than the connection can queue now: a read finished while its core is
        // busy waits in memory, and a thousand replays each holding a full chunk peaked at 1 GB.
        let room = replay_high_water(&conn).saturating_sub(conn.queued_bytes());
        let read = move || reader.read_after_within(cursor, REPLAY_CHUNK, room);
        let rows = match monoio::spawn_blocking(read).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                tracing::warn!(%error, "replay read failed");
                conn.begin_close(CloseReason::ServerShutdown, 1011, "replay failed".into());
                break;
            }
            Err(_) => break,
        };
        if core.replaying.borrow().get(&conn.slot).map(|r| r.cursor) != Some(cursor) {
            // A `replay` during the read moved the cursor, and its reply is already queued:
            // these rows follow the old cursor, so queuing them would resend what it skips.
            continue;
        }
        let next_stored = rows
            .first()
            .map_or_else(|| core.shared.log_reader.first_seq(), |(seq, _)| *seq);
        if next_stored > cursor.saturating_add(1) {
            // Retention removed events this replay had yet to send. Going on would skip them
            // silently; closing as a slow consumer names the resume point, and a `replay` from
            // there answers `Recovered: false`, so the client knows to re-read state.
            // Logged at debug: the close itself is logged as a slow consumer's.
            tracing::debug!(
                conn = conn.slot,
                cursor,
                next_stored,
                "retention overtook a replay; closing it with its resume point"
            );
            conn.begin_close(CloseReason::SlowConsumer, 4008, String::new());
            break;
        }
        let limit = core.last_delivered.get();
        let mut next = cursor;
        let mut full = false;
        let mut replayed = 0;
        for (seq, json) in rows {
            if seq > limit {
                break;
            }
            let Some(event) = EncodedEvent::from_stored(seq, &json) else {
                next = seq;
                continue;
            };
            if conn
                .filters
                .borrow()
                .iter()
                .any(|f| f.matches(&event.ty, &event.action, &event.key))
            {
                // A chunk can hold far more than the budget: stop at the high-water mark and go on once
                // the writer drains, or a client that reads at full speed is closed as slow.
                let queued = conn.queued_bytes();
                if queued > 0 && queued + event.frame().len() > replay_high_water(&conn) {
                    full = true;
                    break;
                }
                conn.queue_event(&event);
                replayed += 1;
            }
            next = seq;
        }
        if let Some(r) = core.replaying.borrow_mut().get_mut(&conn.slot) {
            r.cursor = next;
        }
        metrics::counter!(crate::metrics::EVENTS_REPLAYED).increment(replayed);
        if full {
            conn.drained().notified().await;
        } else if next == cursor {
            // Delivered but not yet readable: with `batched` durability the log serves only
            // flushed events, and the sequencer wakes this replay at its next flush, a few
            // milliseconds away. Registered before the check, so a flush between them counts.
            let flushed = core.shared.log_status.next_flush();
            if core.shared.log_reader.last_seq() <= cursor {
                let _ = flushed.recv_async().await;
            }
        }
    }
}

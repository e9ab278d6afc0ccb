//! The fan-out: each sequenced batch to every connection of this core whose filters match,
//! by reference to the batch's frames, at most once per connection and event.

use std::rc::Rc;

use super::Core;
use super::connection::CloseReason;
use crate::net::outbound::SharedFrames;
use crate::sequencer::{Batch, SequencedBatch};

impl SharedFrames for SequencedBatch {
    fn frame(&self, index: usize) -> Option<&[u8]> {
        self.events.get(index).map(|event| event.frame())
    }
}

impl Core {
    /// Fans one batch out to every matching connection of this core.
    pub(crate) fn deliver(&self, batch: Batch) {
        // One reference count per core for the batch; connections share it without atomics.
        let batch = Rc::new(batch);
        if batch.gap_before {
            self.close_all_after_gap();
        }
        let mut slow = Vec::new();
        {
            let index = self.index.borrow();
            let conns = self.conns.borrow();
            let replaying = self.replaying.borrow();
            for (position, event) in batch.events.iter().enumerate() {
                // A batch sent while this core was starting may hold events from before its
                // start, which its connections never asked for.
                if event.seq <= self.last_delivered.get() {
                    continue;
                }
                let stamp = self.stamp.get() + 1;
                self.stamp.set(stamp);
                index.for_each_candidate(&event.ty, &event.action, &event.key, |ids| {
                    for &id in ids {
                        let Some(conn) = conns.get(id as usize) else {
                            continue;
                        };
                        if conn.stamp.replace(stamp) == stamp {
                            continue;
                        }
                        if !replaying.is_empty() && replaying.contains_key(&id) {
                            continue;
                        }
                        if !conn.queue_live(&batch, position) {
                            slow.push(conn.clone());
                        }
                    }
                });
                self.last_delivered.set(event.seq);
            }
            // A replay waiting for this core's fan-out to reach its cursor may go on.
            for replay in replaying.values() {
                replay.fanned_out.notify();
            }
        }
        for conn in slow {
            self.remove_filters(&conn);
        }
    }

    /// Closes every websocket with 4008 and its resume point: the events after it are gone
    /// from the cluster's stream, and a `replay` from there tells the client so.
    fn close_all_after_gap(&self) {
        let conns: Vec<_> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for conn in conns {
            self.stop_replay(conn.slot);
            self.remove_filters(&conn);
            conn.begin_close(CloseReason::StreamGap, 4008, "stream gap".into());
        }
    }

    /// Receives batches from the sequencer until it stops.
    pub(crate) async fn receive_batches(self: Rc<Self>, inbox: flume::Receiver<Batch>) {
        while let Ok(batch) = inbox.recv_async().await {
            self.deliver(batch);
        }
    }
}

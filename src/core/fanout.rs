//! The fan-out: each sequenced batch to every connection of this core whose filters match,
//! by reference to the batch's frames, at most once per connection and event.

use std::rc::Rc;

use super::Core;
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
        let mut slow = Vec::new();
        {
            let index = self.index.borrow();
            let conns = self.conns.borrow();
            let replaying = self.replaying.borrow();
            for (position, event) in batch.events.iter().enumerate() {
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

    /// Receives batches from the sequencer until it stops.
    pub(crate) async fn receive_batches(self: Rc<Self>, inbox: flume::Receiver<Batch>) {
        while let Ok(batch) = inbox.recv_async().await {
            self.deliver(batch);
        }
    }
}

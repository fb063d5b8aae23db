//! The registry half of [`Live`] (on a stream's home shard): claims, the publisher grace
//! period, announcements to every shard, and live/offline to the danmaku room.

use std::rc::Rc;

use super::engine::{Claim, ClaimAnswer, Live};
use super::{Msg, StreamId};

impl Live {
    // --- registry (home shard) ---------------------------------------------------------

    /// On the stream's home shard: may `from` publish `stream`?
    pub fn claim(self: &Rc<Self>, stream: StreamId, from: usize) -> ClaimAnswer {
        let epoch = self.next_epoch.get() + 1;
        self.next_epoch.set(epoch);
        let resumed = {
            let mut reg = self.registry.borrow_mut();
            match reg.get_mut(&stream) {
                Some(c) if c.connected => return ClaimAnswer::Busy,
                Some(c) => {
                    c.owner = from;
                    c.connected = true;
                    c.epoch = epoch;
                    true
                }
                None => {
                    reg.insert(
                        stream.clone(),
                        Claim {
                            owner: from,
                            connected: true,
                            epoch,
                        },
                    );
                    false
                }
            }
        };
        self.announce(&stream, Some(from));
        if !resumed {
            self.ctx.events.live(&stream, true);
        }
        ClaimAnswer::Granted { resumed }
    }

    /// On the home shard: the publisher of `stream` on `from` stopped. `for_good` (an
    /// explicit unpublish) ends the stream now; otherwise it waits for the grace period.
    pub fn release(self: &Rc<Self>, stream: StreamId, from: usize, for_good: bool) {
        let epoch = {
            let mut reg = self.registry.borrow_mut();
            let Some(c) = reg.get_mut(&stream) else {
                return;
            };
            if c.owner != from || !c.connected {
                return;
            }
            c.connected = false;
            c.epoch
        };
        if for_good {
            return self.end(&stream);
        }
        let grace = self.settings().publisher_grace;
        let me = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep(grace).await;
            let expired = me
                .registry
                .borrow()
                .get(&stream)
                .is_some_and(|c| !c.connected && c.epoch == epoch);
            if expired {
                me.end(&stream);
            }
        });
    }

    fn end(self: &Rc<Self>, stream: &StreamId) {
        if self.registry.borrow_mut().remove(stream).is_none() {
            return;
        }
        self.announce(stream, None);
        self.ctx.events.live(stream, false);
        self.ctx.events.clock(stream, None);
    }

    /// On the home shard: stop the stream's publisher (its room was closed).
    pub fn stop(&self, stream: &StreamId) {
        if let Some(c) = self.registry.borrow().get(stream) {
            let _ = self.submit(
                c.owner,
                Msg::Stop {
                    stream: stream.clone(),
                },
            );
        }
    }

    fn announce(&self, stream: &StreamId, owner: Option<usize>) {
        // A full ring here would leave that shard with a stale owner until the next
        // announcement; it is counted by the mesh as overflow.
        for s in 0..self.ctx.port.shards() {
            let msg = Msg::Announce {
                stream: stream.clone(),
                owner,
            };
            let _ = self.submit(s, msg);
        }
    }
}

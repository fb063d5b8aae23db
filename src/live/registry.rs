//! The registry half of [`Live`] (on a stream's home shard): claims, the publisher grace
//! period, announcements to every shard, and live/offline to the danmaku room.

use std::rc::Rc;

use super::engine::{submit, Claim, ClaimAnswer, Live};
use super::{Msg, StreamId};
use crate::danmaku::PostBody;
use crate::shard::{Shard, ShardMsg};

impl Live {
    // --- registry (home shard) ---------------------------------------------------------

    /// On the stream's home shard: may `from` publish `stream`?
    pub fn claim(&self, shard: &Rc<Shard>, stream: StreamId, from: usize) -> ClaimAnswer {
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
        self.announce(shard, &stream, Some(from));
        if !resumed {
            shard
                .danmaku
                .system_post(shard, stream, PostBody::Live { live: true });
        }
        ClaimAnswer::Granted { resumed }
    }

    /// On the home shard: the publisher of `stream` on `from` stopped. `for_good` (an
    /// explicit unpublish) ends the stream now; otherwise it waits for the grace period.
    pub fn release(&self, shard: &Rc<Shard>, stream: StreamId, from: usize, for_good: bool) {
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
            return self.end(shard, &stream);
        }
        let grace = Self::settings(shard).publisher_grace;
        let shard = shard.clone();
        monoio::spawn(async move {
            monoio::time::sleep(grace).await;
            let expired = shard
                .live
                .registry
                .borrow()
                .get(&stream)
                .is_some_and(|c| !c.connected && c.epoch == epoch);
            if expired {
                shard.live.end(&shard, &stream);
            }
        });
    }

    fn end(&self, shard: &Rc<Shard>, stream: &StreamId) {
        if self.registry.borrow_mut().remove(stream).is_none() {
            return;
        }
        self.announce(shard, stream, None);
        shard
            .danmaku
            .system_post(shard, stream.clone(), PostBody::Live { live: false });
        let clock = crate::danmaku::Msg::MediaClock {
            room: stream.clone(),
            media_ms: None,
        };
        let _ = shard
            .ctx
            .mesh
            .submit_to(shard.id(), ShardMsg::Danmaku(clock));
    }

    /// On the home shard: stop the stream's publisher (its room was closed).
    pub fn stop(&self, shard: &Shard, stream: &StreamId) {
        if let Some(c) = self.registry.borrow().get(stream) {
            let _ = submit(
                shard,
                c.owner,
                Msg::Stop {
                    stream: stream.clone(),
                },
            );
        }
    }

    /// Whether `stream` is live (on its home shard).
    pub fn is_claimed(&self, stream: &str) -> bool {
        self.registry
            .borrow()
            .get(stream)
            .is_some_and(|c| c.connected)
    }

    fn announce(&self, shard: &Shard, stream: &StreamId, owner: Option<usize>) {
        for s in 0..shard.ctx.count {
            let msg = Msg::Announce {
                stream: stream.clone(),
                owner,
            };
            if s == shard.id() {
                let _ = shard.ctx.mesh.submit_to(s, ShardMsg::Live(msg));
            } else {
                // A full ring here would leave that shard with a stale owner until the next
                // announcement; it is counted by the mesh as overflow.
                let _ = submit(shard, s, msg);
            }
        }
    }
}

//! The registry half of [`Live`] (on a stream's home shard): claims, the publisher grace
//! period, announcements to every shard, and live/offline to the danmaku room.

use std::rc::Rc;

use super::engine::{Claim, ClaimAnswer, Live};
use super::{Msg, StreamId};
use crate::media::timeline::Resume;

impl Live {
    // --- registry (home shard) ---------------------------------------------------------

    /// On the stream's home shard: may `from` publish `stream`?
    pub fn claim(self: &Rc<Self>, stream: StreamId, from: usize) -> ClaimAnswer {
        self.claim_as(stream, from, false)
    }

    /// [`Live::claim`], for a stream pulled from another node (`pulled`): its room hears
    /// live and offline from that node, so this one says nothing.
    pub(super) fn claim_as(
        self: &Rc<Self>,
        stream: StreamId,
        from: usize,
        pulled: bool,
    ) -> ClaimAnswer {
        let resumed = {
            let mut reg = self.registry.borrow_mut();
            match reg.get_mut(&stream) {
                Some(c) if c.connected => return ClaimAnswer::Busy,
                Some(c) => {
                    c.owner = from;
                    c.connected = true;
                    c.released = None;
                    c.pulled = pulled;
                    true
                }
                None => {
                    reg.insert(
                        stream.clone(),
                        Claim {
                            owner: from,
                            connected: true,
                            released: None,
                            resume: None,
                            pulled,
                        },
                    );
                    false
                }
            }
        };
        self.announce(&stream, Some(from));
        if !resumed && !pulled {
            self.ctx.events.live(&stream, true);
        }
        ClaimAnswer::Granted { resumed }
    }

    /// On the home shard: where `stream`'s clock stopped, for its next publisher (the
    /// stream clock carries on across a reconnect, [`crate::media::timeline`]).
    pub fn resume_point(&self, stream: &str) -> Option<Resume> {
        self.registry.borrow().get(stream).and_then(|c| c.resume)
    }

    /// On the home shard: the publisher of `stream` on `from` stopped, its clock at
    /// `resume`. `for_good` (an explicit unpublish) ends the stream now; otherwise it
    /// waits for the grace period.
    pub fn release(
        self: &Rc<Self>,
        stream: StreamId,
        from: usize,
        for_good: bool,
        resume: Option<Resume>,
    ) {
        let now = self.now();
        {
            let mut reg = self.registry.borrow_mut();
            let Some(c) = reg.get_mut(&stream) else {
                return;
            };
            if c.owner != from || !c.connected {
                return;
            }
            c.connected = false;
            c.released = Some(now);
            c.resume = resume.or(c.resume);
        }
        if for_good {
            return self.end(&stream);
        }
        // Woken when the grace is up; what it decides is on the engine's clock.
        let grace = self.settings().publisher_grace;
        let me = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep(grace).await;
            me.end_lapsed();
        });
    }

    /// Ends every stream whose publisher has been gone for the grace period (a reconnect
    /// within it took the claim back).
    pub fn end_lapsed(self: &Rc<Self>) {
        let (now, grace) = (self.now(), self.settings().publisher_grace);
        let lapsed: Vec<StreamId> = self
            .registry
            .borrow()
            .iter()
            .filter(|(_, c)| {
                !c.connected
                    && c.released
                        .is_some_and(|t| now.saturating_duration_since(t) >= grace)
            })
            .map(|(s, _)| s.clone())
            .collect();
        for s in lapsed {
            self.end(&s);
        }
    }

    fn end(self: &Rc<Self>, stream: &StreamId) {
        let Some(claim) = self.registry.borrow_mut().remove(stream) else {
            return;
        };
        self.announce(stream, None);
        // The cluster-wide claim goes with the stream (a no-op for one pulled here).
        if let Some(cluster) = &self.settings().cluster {
            cluster.release(stream);
        }
        if !claim.pulled {
            self.ctx.events.live(stream, false);
        }
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

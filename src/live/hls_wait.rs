//! Low-Latency HLS requests that wait (draft-pantos-hls-rfc8216bis §6.2.5.2): a playlist
//! asked for with `_HLS_msn` (and `_HLS_part`), answered once it lists that segment (or
//! part), and a part asked for before it exists (the `#EXT-X-PRELOAD-HINT`), answered
//! once it is made.
//!
//! **Parked on the owner.** The serving shard sends the stream's owner a call carrying a
//! oneshot sender. The owner answers at once when it can; otherwise it parks the sender
//! on the stream's entry. Each change of the stream's playlist (a part, a segment, the
//! end; [`Segmenter::version`]) wakes the waiters whose condition came true: one check
//! per waiter per change, on the owner, and no polling anywhere.
//!
//! **Bounded.** At most [`MAX_PARKED`] waiters per owner shard (past it: 503 at once);
//! each waits at most three target durations ([`block_wait`]), then gets a 503; a
//! waiter whose requester gave up is dropped at the next sweep (every second). A request
//! more than two segments, or three parts, past the live edge is refused at once with a
//! 400, as the draft asks, so nobody parks for what is far away.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::hls::{Entry, HlsState, PlaylistAnswer, SegmentAnswer};
use crate::http::query_param;
use crate::live::engine::Live;
use crate::media::hls::{PartState, Position, Segmenter};
use crate::port::Call;

/// Waiters one owner shard holds at most, over all its streams.
pub const MAX_PARKED: usize = 10_000;

/// How long a blocking request waits: three target durations (the draft's bound for a
/// blocking playlist reload).
pub fn block_wait(settings: &crate::live::Settings) -> Duration {
    Duration::from_millis(u64::from(settings.hls.target_ms) * 3)
}

/// What a blocking playlist request waits for: segment `msn` finished, or with `part`,
/// that part of it made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub msn: u64,
    pub part: Option<u32>,
}

impl Blocking {
    /// From a request's query: `None` without `_HLS_msn`; an error for `_HLS_part`
    /// alone or a value that is not a number.
    pub fn from_query(query: &str) -> Result<Option<Blocking>, &'static str> {
        let number = |name| -> Result<Option<u64>, &'static str> {
            match query_param(query, name) {
                None => Ok(None),
                Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| "_HLS_msn/_HLS_part out of range"),
                Some(_) => Err("_HLS_msn and _HLS_part must be whole numbers"),
            }
        };
        let msn = number("_HLS_msn")?;
        let part = number("_HLS_part")?;
        match (msn, part) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err("_HLS_part needs _HLS_msn"),
            (Some(msn), part) => Ok(Some(Blocking {
                msn,
                part: part
                    .map(|p| u32::try_from(p).map_err(|_| "_HLS_part out of range"))
                    .transpose()?,
            })),
        }
    }

    /// The segmenter has what is waited for (or never will: the stream ended or was
    /// refused), so the playlist can be answered.
    fn ready(self, seg: &Segmenter) -> bool {
        if seg.is_ended() || seg.refused().is_some() {
            return true;
        }
        seg.listed() > 0
            && match self.part {
                Some(part) => seg.has_part(Position {
                    msn: self.msn,
                    part,
                }),
                None => seg.has_segment(self.msn),
            }
    }

    /// More than two segments, or three parts, past the live edge.
    fn too_far(self, seg: &Segmenter) -> bool {
        too_far(seg, self.msn, self.part.unwrap_or(0))
    }
}

fn too_far(seg: &Segmenter, msn: u64, part: u32) -> bool {
    let next = seg.next_part();
    msn > next.msn.saturating_add(1)
        || (msn == next.msn.saturating_add(1) && part > 2)
        || (msn == next.msn && part > next.part.saturating_add(2))
}

/// What the owner answers a blocking playlist request.
pub enum PlaylistReply {
    Ready(PlaylistAnswer),
    Missing,
    TooFar,
    Busy,
}

/// A parked request: what it waits for, and where the answer goes.
pub(super) enum Parked {
    Playlist {
        want: Blocking,
        tx: oneshot::Sender<PlaylistReply>,
    },
    Part {
        at: Position,
        tx: oneshot::Sender<SegmentAnswer>,
    },
}

pub(super) struct Waiter {
    until: Instant,
    parked: Parked,
}

impl Waiter {
    fn gave_up(&self, now: Instant) -> bool {
        self.until <= now
            || match &self.parked {
                Parked::Playlist { tx, .. } => tx.is_canceled(),
                Parked::Part { tx, .. } => tx.is_canceled(),
            }
    }
}

/// Answers the waiters of `e` whose condition came true since the playlist last changed;
/// `parked` counts the owner shard's waiters.
pub(super) fn wake(parked: &Cell<usize>, e: &mut Entry) {
    let version = e.seg.version();
    if e.seen == version || e.waiters.is_empty() {
        e.seen = version;
        return;
    }
    e.seen = version;
    let before = e.waiters.len();
    let mut kept = Vec::with_capacity(before);
    for w in e.waiters.drain(..) {
        match w.parked {
            Parked::Playlist { want, tx } if want.ready(&e.seg) => {
                let _ = tx.send(PlaylistReply::Ready(PlaylistAnswer::of(&e.seg)));
            }
            Parked::Part { at, tx } => match e.seg.part(at) {
                PartState::Ready(data) => {
                    let _ = tx.send(SegmentAnswer::Found(data));
                }
                PartState::Gone => {
                    let _ = tx.send(SegmentAnswer::Missing);
                }
                PartState::Coming => kept.push(Waiter {
                    until: w.until,
                    parked: Parked::Part { at, tx },
                }),
            },
            parked => kept.push(Waiter {
                until: w.until,
                parked,
            }),
        }
    }
    parked.set(parked.get().saturating_sub(before - kept.len()));
    e.waiters = kept;
}

impl HlsState {
    /// On the owner: answers a blocking playlist request now, or parks it until `until`.
    pub(super) fn park_playlist(
        &self,
        stream: &str,
        want: Blocking,
        until: Instant,
        tx: oneshot::Sender<PlaylistReply>,
    ) {
        let mut streams = self.streams.borrow_mut();
        let Some(e) = streams.get_mut(stream) else {
            let _ = tx.send(PlaylistReply::Missing);
            return;
        };
        if want.ready(&e.seg) {
            let _ = tx.send(PlaylistReply::Ready(PlaylistAnswer::of(&e.seg)));
        } else if want.too_far(&e.seg) {
            let _ = tx.send(PlaylistReply::TooFar);
        } else if self.parked.get() >= MAX_PARKED {
            let _ = tx.send(PlaylistReply::Busy);
        } else {
            self.parked.set(self.parked.get() + 1);
            e.waiters.push(Waiter {
                until,
                parked: Parked::Playlist { want, tx },
            });
        }
    }

    /// On the owner: answers a part request now, or parks it until `until` when the part
    /// may still come.
    pub(super) fn park_part(
        &self,
        stream: &str,
        at: Position,
        until: Instant,
        tx: oneshot::Sender<SegmentAnswer>,
    ) {
        let mut streams = self.streams.borrow_mut();
        let Some(e) = streams.get_mut(stream) else {
            let _ = tx.send(SegmentAnswer::Missing);
            return;
        };
        if let Some(track) = e.seg.refused() {
            let _ = tx.send(SegmentAnswer::Refused(track.to_string()));
            return;
        }
        match e.seg.part(at) {
            PartState::Ready(data) => {
                let _ = tx.send(SegmentAnswer::Found(data));
            }
            PartState::Coming if !too_far(&e.seg, at.msn, at.part) => {
                if self.parked.get() >= MAX_PARKED {
                    let _ = tx.send(SegmentAnswer::Busy);
                    return;
                }
                self.parked.set(self.parked.get() + 1);
                e.waiters.push(Waiter {
                    until,
                    parked: Parked::Part { at, tx },
                });
            }
            PartState::Coming | PartState::Gone => {
                let _ = tx.send(SegmentAnswer::Missing);
            }
        }
    }

    /// Drops the waiters whose time is up or whose requester is gone, and recounts.
    pub(super) fn sweep_waiters(&self, now: Instant) {
        let mut total = 0;
        for e in self.streams.borrow_mut().values_mut() {
            e.waiters.retain(|w| !w.gave_up(now));
            total += e.waiters.len();
        }
        self.parked.set(total);
    }
}

/// On the serving shard: runs `park` on `owner` with a oneshot sender and waits for the
/// answer at most `wait` (and a little more, for the ring). `None` when the owner's lane
/// is full, the wait ran out, or the owner let the request go.
pub(super) async fn ask_parked<T: Send + 'static>(
    live: &Live,
    owner: usize,
    wait: Duration,
    park: impl FnOnce(&Rc<Live>, oneshot::Sender<T>) + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let call = Call::new(move |o: &Rc<Live>| park(o, tx));
    live.port().submit_to(owner, call.into()).ok()?;
    monoio::time::timeout(wait + Duration::from_millis(500), rx)
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_parameters_are_read_and_checked() {
        assert_eq!(Blocking::from_query("txSecret=ab"), Ok(None));
        assert_eq!(
            Blocking::from_query("_HLS_msn=12&_HLS_part=3"),
            Ok(Some(Blocking {
                msn: 12,
                part: Some(3)
            }))
        );
        assert_eq!(
            Blocking::from_query("a=1&_HLS_msn=7"),
            Ok(Some(Blocking { msn: 7, part: None }))
        );
        assert!(Blocking::from_query("_HLS_part=3").is_err());
        assert!(Blocking::from_query("_HLS_msn=-1").is_err());
        assert!(Blocking::from_query("_HLS_msn=1&_HLS_part=x").is_err());
        assert!(Blocking::from_query("_HLS_msn=99999999999999999999999").is_err());
        assert!(Blocking::from_query("_HLS_msn=1&_HLS_part=4294967296").is_err());
    }
}

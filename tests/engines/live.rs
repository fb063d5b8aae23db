//! The live engine across shards: claims and their announcements, the GOP cache a viewer
//! on any shard starts from, the publisher's grace period and the hand-over to a new
//! owner shard, and the end of a stream — checked on what a viewer's queue holds, parsed
//! as the HTTP-FLV stream a player would read.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use liveshard::live::engine::{ClaimAnswer, Ctx, Proto, Viewer};
use liveshard::live::{Live, Msg, RoomEvents, Settings, StreamId};
use liveshard::media::{MediaKind, MediaMessage};
use liveshard::metrics::{Metrics, Slot};
use liveshard::outbound::{Outbound, OutboundSettings};
use liveshard::outq::{OutQueue, Policy};

use crate::harness::{breathe, config, run, Net, TestStore, VirtualClock};

/// What the engine told the rooms (the danmaku side in the server); the clock's ticks
/// apart.
#[derive(Default)]
struct Events(RefCell<Vec<String>>, RefCell<Vec<u64>>);

impl RoomEvents for Events {
    fn live(&self, room: &StreamId, live: bool) {
        self.0.borrow_mut().push(format!("{room} live={live}"));
    }

    fn clock(&self, room: &StreamId, media_ms: Option<u64>) {
        match media_ms {
            None => self.0.borrow_mut().push(format!("{room} clock=none")),
            Some(ms) => self.1.borrow_mut().push(ms),
        }
    }
}

struct Cluster {
    net: Rc<Net<Msg>>,
    shards: Vec<Rc<Live>>,
    clock: Rc<VirtualClock>,
    events: Rc<Events>,
    _store: TestStore,
    outbound: Option<Outbound>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(o) = self.outbound.take() {
            o.join(Duration::from_secs(1));
        }
    }
}

impl Cluster {
    fn new(n: usize, flags: &[(&str, &str)]) -> Self {
        let store = TestStore::start(false);
        // The push and play keys are made in the data directory: this cluster's own.
        let dir = store.dir().to_string_lossy().into_owned();
        let mut flags = flags.to_vec();
        flags.push(("server.data_dir", &dir));
        let cfg = config(&flags);
        let settings = Arc::new(Settings::from_config(&cfg).expect("settings"));
        let metrics = Arc::new(Metrics::new(
            n,
            shards::DriverInUse::Epoll,
            std::iter::empty::<&'static str>(),
        ));
        let outbound =
            Outbound::start(&OutboundSettings::from_config(&cfg.outbound)).expect("outbound");
        let net = Net::new(n);
        let clock = VirtualClock::new();
        let events = Rc::new(Events::default());
        let shards = (0..n)
            .map(|i| {
                Live::new(Ctx {
                    port: net.port(i),
                    settings: settings.clone(),
                    outbound: outbound.handle(),
                    store: store.handle(),
                    metrics: Slot::new(metrics.clone(), i),
                    events: events.clone(),
                    shutdown: shards::local::Signal::new(),
                    clock: clock.clone(),
                })
            })
            .collect();
        Self {
            net,
            shards,
            clock,
            events,
            _store: store,
            outbound: Some(outbound),
        }
    }

    fn pump(&self) -> usize {
        let mut n = 0;
        while let Some((from, to, msg)) = self.net.pop() {
            self.shards[to].handle(from, msg);
            n += 1;
        }
        n
    }

    /// Pumps until nothing moves for a few turns (calls answer through tasks).
    async fn settle(&self) {
        let mut quiet = 0;
        for _ in 0..10_000 {
            if self.pump() == 0 {
                quiet += 1;
                if quiet >= 3 {
                    return;
                }
            } else {
                quiet = 0;
            }
            breathe().await;
        }
        panic!("the cluster never settled");
    }

    /// What an RTMP publisher connection does on shard `from`: claim on the home (and
    /// learn where the stream's clock stopped), then start the stream here.
    async fn publish(&self, from: usize, stream: &str) -> ClaimAnswer {
        let s: StreamId = stream.into();
        let port = self.shards[from].port().clone();
        let home = port.home_of(stream);
        let claim = monoio::spawn({
            let s = s.clone();
            async move {
                port.call(home, move |h: &Rc<Live>| {
                    let answer = h.claim(s.clone(), from);
                    (answer, h.resume_point(&s))
                })
                .await
            }
        });
        self.settle().await;
        let (answer, resume) = claim.await.expect("the home answers");
        if matches!(answer, ClaimAnswer::Granted { .. }) {
            self.shards[from].start_owned_at(&s, resume);
        }
        answer
    }

    fn ticks(&self) -> Vec<u64> {
        std::mem::take(&mut *self.events.1.borrow_mut())
    }

    fn ingest(&self, owner: usize, stream: &str, m: (MediaKind, u32, &[u8], bool)) {
        let (kind, timestamp, payload, metadata) = m;
        self.shards[owner].ingest(
            &stream.into(),
            MediaMessage {
                kind,
                timestamp,
                payload: Bytes::copy_from_slice(payload),
            },
            metadata,
        );
    }

    fn watch(&self, shard: usize, stream: &str) -> Rc<Viewer> {
        let out = Rc::new(OutQueue::new(4 << 20, Policy::SkipToKeyframe));
        let v = Viewer::new(out, Proto::Flv);
        assert!(
            self.shards[shard].watch(&stream.into(), v.clone()),
            "{stream} is watchable on shard {shard}"
        );
        v
    }

    fn events(&self) -> Vec<String> {
        std::mem::take(&mut *self.events.0.borrow_mut())
    }
}

const META: &[u8] = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09";
const AVC_CONFIG: &[u8] = &[
    0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xee,
];
const AAC_CONFIG: &[u8] = &[0xaf, 0, 0x12, 0x10];

fn meta() -> (MediaKind, u32, &'static [u8], bool) {
    (MediaKind::Data, 0, META, true)
}
fn avc_config() -> (MediaKind, u32, &'static [u8], bool) {
    (MediaKind::Video, 0, AVC_CONFIG, false)
}
fn aac_config() -> (MediaKind, u32, &'static [u8], bool) {
    (MediaKind::Audio, 0, AAC_CONFIG, false)
}
fn keyframe(ts: u32) -> (MediaKind, u32, &'static [u8], bool) {
    const K: &[u8] = &[0x17, 1, 0, 0, 0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
    (MediaKind::Video, ts, K, false)
}
fn inter(ts: u32) -> (MediaKind, u32, &'static [u8], bool) {
    const P: &[u8] = &[0x27, 1, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9a, 0x00];
    (MediaKind::Video, ts, P, false)
}
fn audio(ts: u32) -> (MediaKind, u32, &'static [u8], bool) {
    const A: &[u8] = &[0xaf, 1, 0x21, 0x10, 0x04];
    (MediaKind::Audio, ts, A, false)
}

/// One FLV tag as a player reads it.
#[derive(Debug, PartialEq, Eq)]
enum Tag {
    Meta,
    /// `onStreamTime {start}`: the stream time of the viewer's first frame.
    StreamTime(u32),
    AvcConfig,
    AacConfig,
    Key(u32),
    Inter(u32),
    Audio(u32),
}

/// The viewer's bytes so far: HTTP chunks undone, the FLV header checked once, tags read.
fn tags(v: &Viewer, header_seen: &mut bool) -> Vec<Tag> {
    let raw: Vec<u8> = v
        .outbox
        .take_all()
        .iter()
        .flat_map(|b| b.to_vec())
        .collect();
    let mut body = Vec::new();
    let mut b = &raw[..];
    while !b.is_empty() {
        let line = b.iter().position(|&c| c == b'\r').expect("chunk size line");
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line]).unwrap(), 16).unwrap();
        body.extend_from_slice(&b[line + 2..line + 2 + n]);
        assert_eq!(&b[line + 2 + n..line + 4 + n], b"\r\n");
        b = &b[line + 4 + n..];
    }
    let mut t = &body[..];
    if !*header_seen {
        assert_eq!(&t[..3], b"FLV", "the stream starts with the FLV header");
        t = &t[13..];
        *header_seen = true;
    }
    let mut out = Vec::new();
    while !t.is_empty() {
        let size = u32::from_be_bytes([0, t[1], t[2], t[3]]) as usize;
        let ts = u32::from_be_bytes([t[7], t[4], t[5], t[6]]);
        let data = &t[11..11 + size];
        out.push(match (t[0], data[0], data.get(1)) {
            (18, _, _) if data[3..].starts_with(b"onStreamTime") => {
                // The object's one property, `start`: a number (8-byte double).
                let at = data.windows(5).position(|w| w == b"start").expect("start") + 6;
                let start = f64::from_be_bytes(data[at..at + 8].try_into().unwrap());
                assert_eq!(start as u32, ts, "the tag is stamped at its own start");
                Tag::StreamTime(start as u32)
            }
            (18, _, _) => Tag::Meta,
            (9, 0x17, Some(0)) => Tag::AvcConfig,
            (9, 0x17, _) => Tag::Key(ts),
            (9, _, _) => Tag::Inter(ts),
            (8, _, Some(0)) => Tag::AacConfig,
            (8, _, _) => Tag::Audio(ts),
            other => panic!("unexpected tag {other:?}"),
        });
        t = &t[11 + size + 4..];
    }
    out
}

#[test]
fn a_claim_is_exclusive_and_every_shard_learns_the_owner() {
    run(async {
        let c = Cluster::new(3, &[]);
        assert_eq!(
            c.publish(1, "cam").await,
            ClaimAnswer::Granted { resumed: false }
        );
        c.settle().await;
        for s in &c.shards {
            assert_eq!(s.owner("cam"), Some(1));
        }
        assert_eq!(c.events(), ["cam live=true"]);
        assert_eq!(c.publish(2, "cam").await, ClaimAnswer::Busy);
        assert!(c.events().is_empty());
    });
}

#[test]
fn viewers_on_every_shard_start_on_the_cached_gop_then_follow_the_live_frames() {
    // Every (stream home, owner, viewer) placement on three shards: names vary the home.
    for name in ["a", "b", "c", "d", "e", "f"] {
        for owner in 0..3 {
            for viewer in 0..3 {
                run(async move {
                    let c = Cluster::new(3, &[]);
                    c.publish(owner, name).await;
                    c.settle().await;
                    for m in [meta(), avc_config(), aac_config(), inter(0), keyframe(40)] {
                        c.ingest(owner, name, m);
                    }
                    c.ingest(owner, name, audio(45));
                    c.ingest(owner, name, inter(80));
                    c.settle().await;
                    let v = c.watch(viewer, name);
                    c.settle().await;
                    let mut seen = false;
                    let start = tags(&v, &mut seen);
                    assert_eq!(
                        start,
                        [
                            Tag::StreamTime(40),
                            Tag::Meta,
                            Tag::AvcConfig,
                            Tag::AacConfig,
                            Tag::Key(40),
                            Tag::Audio(45),
                            Tag::Inter(80)
                        ],
                        "{name}: owner {owner}, viewer {viewer}: the first frame's stream \
                         time, metadata and headers, then the GOP from its keyframe (the \
                         inter frame before it is gone)"
                    );
                    c.ingest(owner, name, inter(120));
                    c.ingest(owner, name, keyframe(160));
                    c.settle().await;
                    assert_eq!(tags(&v, &mut seen), [Tag::Inter(120), Tag::Key(160)]);
                });
            }
        }
    }
}

#[test]
fn a_viewer_that_subscribes_before_the_publisher_started_gets_the_stream() {
    run(async {
        let c = Cluster::new(3, &[]);
        // The claim is granted and announced, but the publisher's connection has not yet
        // started the stream on its shard when a viewer elsewhere subscribes.
        let port = c.shards[1].port().clone();
        let home = port.home_of("early");
        let claim = monoio::spawn(async move {
            port.call(home, |h: &Rc<Live>| h.claim("early".into(), 1))
                .await
        });
        c.settle().await;
        assert_eq!(claim.await, Some(ClaimAnswer::Granted { resumed: false }));
        let v = c.watch(2, "early");
        c.settle().await;
        c.shards[1].start_owned(&"early".into());
        c.settle().await;
        for m in [avc_config(), keyframe(0), inter(40)] {
            c.ingest(1, "early", m);
        }
        c.settle().await;
        let mut seen = false;
        assert_eq!(
            tags(&v, &mut seen),
            [
                Tag::AvcConfig,
                Tag::StreamTime(0),
                Tag::Key(0),
                Tag::Inter(40)
            ],
            "the early subscription was kept"
        );
        assert_eq!(c.shards[1].stream_stats()[0].subscribers, 1);
    });
}

#[test]
fn a_publisher_back_within_the_grace_resumes_on_another_shard_for_the_same_viewers() {
    run(async {
        let c = Cluster::new(3, &[("media.publisher_grace_ms", "5000")]);
        c.publish(0, "flaky").await;
        c.settle().await;
        for m in [meta(), avc_config(), keyframe(0)] {
            c.ingest(0, "flaky", m);
        }
        c.settle().await;
        let v = c.watch(2, "flaky");
        c.settle().await;
        let mut seen = false;
        assert_eq!(
            tags(&v, &mut seen),
            [Tag::StreamTime(0), Tag::Meta, Tag::AvcConfig, Tag::Key(0)]
        );
        c.events();
        // The connection drops without an unpublish.
        c.shards[0].publisher_gone(&"flaky".into(), false);
        c.settle().await;
        // Most of the grace goes by on the clock.
        let home = c.shards[0].port().home_of("flaky");
        c.clock.advance(Duration::from_millis(4900));
        c.shards[home].end_lapsed();
        c.settle().await;
        assert_eq!(
            c.publish(1, "flaky").await,
            ClaimAnswer::Granted { resumed: true }
        );
        c.settle().await;
        for s in &c.shards {
            assert_eq!(s.owner("flaky"), Some(1), "the new owner is announced");
        }
        for m in [avc_config(), keyframe(3000), inter(3040)] {
            c.ingest(1, "flaky", m);
        }
        c.settle().await;
        assert_eq!(
            tags(&v, &mut seen),
            [Tag::AvcConfig, Tag::Key(3000), Tag::Inter(3040)],
            "the same viewer follows the new owner"
        );
        // The old release's grace runs out; the new publisher holds the claim.
        c.clock.advance(Duration::from_secs(10));
        c.shards[home].end_lapsed();
        c.settle().await;
        assert_eq!(c.shards[2].owner("flaky"), Some(1));
        assert!(!v.is_ended.get());
        assert!(c.events().is_empty(), "the room never went offline");
        assert!(c.shards[0].stream_stats().is_empty());
        assert_eq!(c.shards[1].stream_stats().len(), 1);
    });
}

#[test]
fn a_publisher_gone_past_the_grace_ends_the_stream_everywhere() {
    run(async {
        let c = Cluster::new(3, &[("media.publisher_grace_ms", "8000")]);
        c.publish(2, "gone").await;
        c.ingest(2, "gone", keyframe(0));
        c.settle().await;
        let viewers: Vec<_> = (0..3).map(|s| c.watch(s, "gone")).collect();
        c.settle().await;
        c.events();
        c.shards[2].publisher_gone(&"gone".into(), false);
        c.settle().await;
        let home = c.shards[0].port().home_of("gone");
        c.clock.advance(Duration::from_millis(7999));
        c.shards[home].end_lapsed();
        c.settle().await;
        assert!(
            c.shards.iter().all(|s| s.owner("gone") == Some(2)),
            "in grace"
        );
        assert!(c.events().is_empty());
        c.clock.advance(Duration::from_millis(1));
        c.shards[home].end_lapsed();
        c.settle().await;
        for s in &c.shards {
            assert_eq!(s.owner("gone"), None);
        }
        assert!(viewers.iter().all(|v| v.is_ended.get()));
        assert_eq!(c.events(), ["gone live=false", "gone clock=none"]);
        // The name is free again.
        assert_eq!(
            c.publish(0, "gone").await,
            ClaimAnswer::Granted { resumed: false }
        );
    });
}

#[test]
fn an_unpublish_ends_the_stream_at_once() {
    run(async {
        let c = Cluster::new(2, &[("media.publisher_grace_ms", "60000")]);
        c.publish(1, "bye").await;
        c.settle().await;
        c.events();
        c.shards[1].publisher_gone(&"bye".into(), true);
        c.settle().await;
        assert!(c.shards.iter().all(|s| s.owner("bye").is_none()));
        assert_eq!(c.events(), ["bye live=false", "bye clock=none"]);
        assert_eq!(c.net.in_flight(), 0);
    });
}

#[test]
fn the_stream_clock_ticks_with_the_video_stops_with_the_publisher_and_carries_on_after_it() {
    run(async {
        let c = Cluster::new(3, &[("media.publisher_grace_ms", "5000")]);
        c.publish(0, "tick").await;
        c.settle().await;
        c.ingest(0, "tick", avc_config());
        // Two seconds of 25 fps video, arriving in real time.
        for f in 0..50u32 {
            let m = if f % 25 == 0 {
                keyframe(f * 40)
            } else {
                inter(f * 40)
            };
            c.ingest(0, "tick", m);
            c.clock.advance(Duration::from_millis(40));
        }
        c.settle().await;
        let v = c.watch(2, "tick");
        c.settle().await;
        let mut seen = false;
        let start = tags(&v, &mut seen);
        assert_eq!(start[..2], [Tag::StreamTime(1000), Tag::AvcConfig]);
        // A tick on the first frame, then on the first frame 500 ms after each tick: the
        // room's clock never runs on more than that between two.
        assert_eq!(c.ticks(), [0, 520, 1040, 1560]);
        assert_eq!(c.events(), ["tick live=true"]);
        // The publisher stops sending, then its connection drops: no tick while frames
        // are missing, nor through the grace.
        c.clock.advance(Duration::from_secs(3));
        c.shards[0].publisher_gone(&"tick".into(), false);
        c.settle().await;
        c.clock.advance(Duration::from_secs(4));
        let home = c.shards[0].port().home_of("tick");
        c.shards[home].end_lapsed();
        c.settle().await;
        assert!(c.ticks().is_empty(), "the clock stopped with the frames");
        assert!(c.events().is_empty(), "still live, in grace");
        // The publisher is back on another shard, its own timestamps from 0 again: the
        // stream clock carries on one frame after where it stopped, for the danmaku room
        // and for the viewer that stayed.
        assert_eq!(
            c.publish(1, "tick").await,
            ClaimAnswer::Granted { resumed: true }
        );
        c.settle().await;
        for m in [avc_config(), keyframe(0), inter(40), audio(45)] {
            c.ingest(1, "tick", m);
            c.clock.advance(Duration::from_millis(40));
        }
        c.settle().await;
        assert_eq!(c.ticks(), [2000]);
        assert_eq!(
            tags(&v, &mut seen),
            [
                Tag::AvcConfig,
                Tag::Key(2000),
                Tag::Inter(2040),
                Tag::Audio(2045)
            ]
        );
        // A viewer joining now is told the stream time of its first frame.
        let w = c.watch(0, "tick");
        c.settle().await;
        let mut seen_w = false;
        assert_eq!(tags(&w, &mut seen_w)[0], Tag::StreamTime(2000));
    });
}

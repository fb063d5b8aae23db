//! The fMP4 muxer's unit tests.

use super::*;
use crate::media::kind::MediaKind;

/// A box read back: its type, and the range of its contents in the input.
#[derive(Debug)]
pub(crate) struct Read<'a> {
    pub name: [u8; 4],
    pub body: &'a [u8],
}

/// Splits `data` into boxes, checking that their sizes tile it exactly.
pub(crate) fn boxes(mut data: &[u8]) -> Vec<Read<'_>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 8, "a box header is cut: {data:?}");
        let size = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        assert!(
            size >= 8 && size <= data.len(),
            "box size {size} of {}",
            data.len()
        );
        out.push(Read {
            name: data[4..8].try_into().unwrap(),
            body: &data[8..size],
        });
        data = &data[size..];
    }
    out
}

pub(crate) fn child<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let b = boxes(data).into_iter().find(|b| &b.name == *first)?;
    if rest.is_empty() {
        Some(b.body)
    } else {
        // Skip a sample description's fixed fields and the counts of list boxes.
        let skip = match &b.name {
            b"stsd" | b"dref" => 8,
            b"avc1" | b"hvc1" => 78,
            b"mp4a" => 28,
            _ => 0,
        };
        child(&b.body[skip..], rest)
    }
}

fn avc_record() -> Vec<u8> {
    vec![
        1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 2, 0x68, 0xEE,
    ]
}

fn hevc_record() -> Vec<u8> {
    let mut r = vec![1u8; 22];
    r[21] = 0x0F; // lengthSizeMinusOne = 3
    r.push(0); // no arrays
    r
}

fn hvc(packet_and_frame: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![packet_and_frame];
    v.extend(b"hvc1");
    v.extend(rest);
    v
}

fn mux(m: &mut Fmp4Muxer, kind: MediaKind, ts: u32, payload: &[u8]) -> Muxed {
    m.mux_classified(&Class::of(kind, payload), ts, payload)
}

#[test]
fn the_init_segment_has_a_track_per_configured_codec() {
    let mut m = Fmp4Muxer::new();
    assert!(m.init_segment().is_none());
    let mut h = vec![0x17, 0, 0, 0, 0];
    h.extend(avc_record());
    assert_eq!(mux(&mut m, MediaKind::Video, 0, &h), Muxed::Config);
    assert_eq!(
        mux(&mut m, MediaKind::Audio, 0, &[0xAF, 0, 0x12, 0x10]),
        Muxed::Config
    );
    let init = m.init_segment().unwrap();
    let top = boxes(&init);
    assert_eq!(
        top.iter().map(|b| b.name).collect::<Vec<_>>(),
        [*b"ftyp", *b"moov"]
    );
    let moov = child(&init, &[b"moov"]).unwrap();
    let names: Vec<_> = boxes(moov).iter().map(|b| b.name).collect();
    assert_eq!(names, [*b"mvhd", *b"trak", *b"trak", *b"mvex"]);
    let stsd = [b"trak", b"mdia", b"minf", b"stbl", b"stsd"];
    let avcc = child(
        &init,
        &[
            b"moov", stsd[0], stsd[1], stsd[2], stsd[3], stsd[4], b"avc1", b"avcC",
        ],
    )
    .unwrap();
    assert_eq!(avcc, &avc_record()[..]);
    // mvhd's timescale; two trex.
    let mvhd = child(moov, &[b"mvhd"]).unwrap();
    assert_eq!(&mvhd[12..16], &TIMESCALE.to_be_bytes());
    let mvex = child(moov, &[b"mvex"]).unwrap();
    assert_eq!(boxes(mvex).len(), 2);
    // The same configuration again: the same shared bytes.
    mux(&mut m, MediaKind::Video, 0, &h);
    assert_eq!(m.init_segment().unwrap().as_ptr(), init.as_ptr());
}

#[test]
fn fragments_carry_samples_with_durations_flags_and_offsets() {
    let mut m = Fmp4Muxer::new();
    assert_eq!(
        mux(&mut m, MediaKind::Video, 0, &hvc(0x90, &hevc_record())),
        Muxed::Config
    );
    mux(&mut m, MediaKind::Audio, 0, &[0xAF, 0, 0x12, 0x10]);
    let init = m.init_segment().unwrap();
    assert!(init.windows(4).any(|w| w == b"hvcC"));
    assert!(init.windows(4).any(|w| w == b"esds"));
    let frame = |cts: u8, n: u8| [0, 0, cts, 0, 0, 0, 2, 0x26, n];
    assert_eq!(
        mux(&mut m, MediaKind::Video, 1000, &hvc(0x91, &frame(80, 1))),
        Muxed::Video { keyframe: true }
    );
    mux(&mut m, MediaKind::Audio, 1000, &[0xAF, 1, 9, 9, 9]);
    mux(&mut m, MediaKind::Video, 1040, &hvc(0xA1, &frame(0, 2)));
    mux(&mut m, MediaKind::Audio, 1023, &[0xAF, 1, 8, 8]);
    let frag = m.fragment(7, Some(1080)).unwrap();
    assert_eq!(m.pending_samples(), 0);
    let top = boxes(&frag);
    assert_eq!(
        top.iter().map(|b| b.name).collect::<Vec<_>>(),
        [*b"moof", *b"mdat"]
    );
    let moof_len = 8 + top[0].body.len();
    assert_eq!(
        top[1].body,
        [0, 0, 0, 2, 0x26, 1, 0, 0, 0, 2, 0x26, 2, 9, 9, 9, 8, 8]
    );
    let trafs: Vec<_> = boxes(top[0].body)
        .into_iter()
        .filter(|b| &b.name == b"traf")
        .collect();
    assert_eq!(trafs.len(), 2);
    let v = trafs[0].body;
    let tfdt = child(v, &[b"tfdt"]).unwrap();
    assert_eq!(tfdt, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xE8]);
    let trun = child(v, &[b"trun"]).unwrap();
    let u = |i: usize| u32::from_be_bytes(trun[i..i + 4].try_into().unwrap());
    assert_eq!(u(4), 2, "two samples");
    assert_eq!(u(8) as usize, moof_len + 8, "data offset");
    assert_eq!((u(12), u(16), u(20), u(24)), (40, 6, SYNC, 80));
    assert_eq!((u(28), u(32), u(36), u(40)), (40, 6, NON_SYNC, 0));
    let trun = child(trafs[1].body, &[b"trun"]).unwrap();
    let u = |i: usize| u32::from_be_bytes(trun[i..i + 4].try_into().unwrap());
    assert_eq!(u(8) as usize, moof_len + 8 + 12);
    assert_eq!((u(12), u(16)), (23, 3));
    assert_eq!((u(20), u(24)), (23, 2), "the last takes the track's gap");
    assert!(m.fragment(8, None).is_none(), "nothing pending");
}

#[test]
fn unusable_input_is_skipped_never_a_panic() {
    let mut m = Fmp4Muxer::new();
    let key = [0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65];
    assert_eq!(
        mux(&mut m, MediaKind::Video, 0, &key),
        Muxed::Skipped(Skip::NoSequenceHeader)
    );
    assert_eq!(
        mux(&mut m, MediaKind::Video, 0, &[0x17, 0, 0, 0, 0, 2]),
        Muxed::Skipped(Skip::Malformed)
    );
    let mut h = vec![0x17, 0, 0, 0, 0];
    h.extend(avc_record());
    mux(&mut m, MediaKind::Video, 0, &h);
    assert_eq!(
        mux(
            &mut m,
            MediaKind::Video,
            0,
            &[0x17, 1, 0, 0, 0, 0, 0, 0x7F, 1, 0x65]
        ),
        Muxed::Skipped(Skip::Malformed)
    );
    assert_eq!(
        mux(&mut m, MediaKind::Video, 0, &[0x17, 1]),
        Muxed::Skipped(Skip::Malformed)
    );
    assert_eq!(
        mux(&mut m, MediaKind::Audio, 0, &[0xAF, 0, 0xF8]),
        Muxed::Skipped(Skip::Malformed)
    );
    assert_eq!(
        mux(&mut m, MediaKind::Video, 0, b"\x90vp09\x01"),
        Muxed::Skipped(Skip::Unsupported)
    );
    // Any bytes at all: no panic.
    let mut x: u32 = 1;
    for len in 0..400usize {
        let p: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for kind in [MediaKind::Video, MediaKind::Audio, MediaKind::Data] {
            mux(&mut m, kind, len as u32, &p);
        }
    }
    let _ = m.init_segment();
    let _ = m.fragment(0, None);
}

#[test]
fn decode_times_go_on_past_the_32_bit_wrap() {
    let mut m = Fmp4Muxer::new();
    mux(&mut m, MediaKind::Audio, 0, &[0xAF, 0, 0x12, 0x10]);
    mux(&mut m, MediaKind::Audio, u32::MAX - 10, &[0xAF, 1, 1]);
    m.fragment(0, None).unwrap();
    mux(&mut m, MediaKind::Audio, 13, &[0xAF, 1, 1]);
    let frag = m.fragment(1, None).unwrap();
    let moof = &boxes(&frag)[0];
    let tfdt = child(moof.body, &[b"traf", b"tfdt"]).unwrap();
    assert_eq!(
        u64::from_be_bytes(tfdt[4..12].try_into().unwrap()),
        (1u64 << 32) + 13
    );
}

#[test]
fn sample_rates_and_channels_from_the_audio_specific_config() {
    assert_eq!(parse_asc(&[0x12, 0x10]), Some((44100, 2)));
    assert_eq!(parse_asc(&[0x11, 0x88]), Some((48000, 1)));
    assert_eq!(parse_asc(&[0x17, 0x80, 0x5D, 0xC0, 0x10]), Some((48000, 2)));
    assert_eq!(parse_asc(&[0x12]), None);
    assert_eq!(parse_asc(&[0x16, 0x80]), None, "reserved index 13");
}

#[test]
fn metadata_gives_the_picture_size() {
    let mut m = Fmp4Muxer::new();
    let mut h = vec![0x17, 0, 0, 0, 0];
    h.extend(avc_record());
    mux(&mut m, MediaKind::Video, 0, &h);
    let meta = amf0::encode_all(&[
        Amf0Value::string("onMetaData"),
        Amf0Value::object([
            ("width", Amf0Value::Number(640.0)),
            ("height", Amf0Value::Number(360.0)),
        ]),
    ]);
    m.mux_classified(&Class::Metadata, 0, &meta);
    let init = m.init_segment().unwrap();
    let tkhd = child(&init, &[b"moov", b"trak", b"tkhd"]).unwrap();
    assert_eq!(&tkhd[tkhd.len() - 8..], &[2, 0x80, 0, 0, 1, 0x68, 0, 0]);
}

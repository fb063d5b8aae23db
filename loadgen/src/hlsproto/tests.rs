use super::m3u8::{date_time_ms, decimal_ms};
use super::*;
use crate::flvproto::MAX_HEAD;

/// Feeds `wire` in pieces of `piece` bytes; the response and whether it completed.
fn read(mut r: Response, wire: &[u8], piece: usize) -> Result<(Response, Feed), ProtoError> {
    let mut last = Feed::NeedMore;
    for p in wire.chunks(piece) {
        last = r.handle_input(p)?;
    }
    Ok((r, last))
}

#[test]
fn a_playlist_is_read_however_the_bytes_are_split() {
    let body = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n";
    let mut sized = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    sized.extend_from_slice(body);
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for c in body.chunks(5) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for wire in [&sized, &chunked] {
        for piece in [1, 3, 7, 64, 4096] {
            let (r, feed) = read(Response::playlist(), wire, piece).unwrap();
            assert_eq!(feed, Feed::Done, "piece {piece}");
            assert_eq!(r.status(), 200);
            assert_eq!(r.body(), body);
            assert_eq!(r.body_len(), body.len() as u64);
        }
    }
}

#[test]
fn media_bodies_are_counted_not_kept() {
    let mut wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec();
    wire.extend(std::iter::repeat_n(0x47, 5000));
    let (r, feed) = read(Response::media(), &wire, 1000).unwrap();
    assert_eq!((feed, r.body_len(), r.body().len()), (Feed::Done, 5000, 0));

    // An error answer keeps the start of its body, for the report.
    let mut wire = b"HTTP/1.1 404 Not Found\r\nContent-Length: 300\r\n\r\n".to_vec();
    wire.extend(std::iter::repeat_n(b'x', 300));
    let (r, _) = read(Response::media(), &wire, 4096).unwrap();
    assert_eq!((r.status(), r.body().len()), (404, 200));
}

#[test]
fn a_body_until_the_close_ends_at_the_close() {
    let mut r = Response::media();
    assert_eq!(
        r.handle_input(b"HTTP/1.0 200 OK\r\n\r\nabc").unwrap(),
        Feed::NeedMore
    );
    assert!(r.head().unwrap().close);
    r.handle_eof().unwrap();
    assert_eq!(r.body_len(), 3);

    let mut r = Response::media();
    assert_eq!(r.handle_eof(), Err(ProtoError("closed before answering")));
    assert!(!r.is_started());
    let mut r = Response::media();
    r.handle_input(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
        .unwrap();
    assert!(r.handle_eof().is_err(), "cut short");
    let mut r = Response::media();
    let feed = r.handle_input(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
    assert_eq!(feed, Feed::Done);
}

#[test]
fn oversized_and_malformed_responses_are_errors() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_PLAYLIST + 1
    );
    assert_eq!(
        Response::playlist()
            .handle_input(big.as_bytes())
            .unwrap_err(),
        ProtoError("playlist larger than 256 KiB")
    );
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_MEDIA + 1
    );
    assert!(Response::media().handle_input(big.as_bytes()).is_err());
    // Chunked bodies are bounded as they arrive.
    let mut r = Response::playlist();
    r.handle_input(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b'#'; 64 << 10];
    let mut err = None;
    for _ in 0..5 {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        if let Err(e) = r.handle_input(&c) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err, Some(ProtoError("playlist larger than 256 KiB")));

    let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab";
    assert!(Response::media().handle_input(extra).is_err());
    assert!(Response::media()
        .handle_input(b"HTTP/1.1 100 Continue\r\n\r\n")
        .is_err());
    assert!(Response::media()
        .handle_input(&vec![b'a'; MAX_HEAD + 1])
        .is_err());
}

/// The Low-Latency playlist liveshard writes (draft-pantos-hls-rfc8216bis).
const LL: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000
#EXT-X-PART-INF:PART-TARGET=0.333
#EXT-X-MEDIA-SEQUENCE:17650000
#EXT-X-MAP:URI=\"cam-17650000.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-12-06T10:49:57.123Z
#EXT-X-PART:DURATION=0.320,URI=\"cam-17650000.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"cam-17650000.1.m4s\"
#EXT-X-PART:DURATION=1.360,URI=\"cam-17650000.2.m4s\"
#EXTINF:2.000,t=0
cam-17650000.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-12-06T10:49:59.123Z
#EXT-X-PART:DURATION=0.320,URI=\"cam-17650001.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-17650001.1.m4s\"
";

#[test]
fn a_low_latency_playlist_lists_parts_by_segment() {
    let pl = parse_playlist(LL.as_bytes()).unwrap();
    assert_eq!(pl.target_duration_ms, 2000);
    assert_eq!(pl.media_sequence, 17_650_000);
    assert!(pl.can_block_reload);
    assert_eq!(
        (pl.part_target_ms, pl.part_hold_back_ms),
        (Some(333), Some(1000))
    );
    assert_eq!(pl.segments.len(), 2);
    let done = &pl.segments[0];
    assert_eq!(done.msn, 17_650_000);
    assert_eq!(done.map.as_deref(), Some("cam-17650000.mp4"));
    assert_eq!(done.pdt_ms, Some(1_796_554_197_123));
    assert_eq!(done.parts.len(), 3);
    assert!(done.parts[0].independent && !done.parts[1].independent);
    let whole = done.whole.as_ref().unwrap();
    assert_eq!(
        (whole.uri.as_str(), whole.duration_ms),
        ("cam-17650000.m4s", 2000)
    );
    // Ingested: the date-time plus the parts up to and including this one.
    assert_eq!(done.part_end_ms(1), Some(1_796_554_197_123 + 640));
    assert_eq!(done.end_ms(), Some(1_796_554_199_123));
    let open = &pl.segments[1];
    assert_eq!(
        (open.msn, open.parts.len(), open.whole.is_none()),
        (17_650_001, 1, true)
    );
    assert_eq!(open.map.as_deref(), Some("cam-17650000.mp4"));
    assert_eq!(pl.preload_hint.as_deref(), Some("cam-17650001.1.m4s"));
    assert_eq!(pl.next_part(), (17_650_001, 1));
    assert_eq!(pl.live_edge(), Some((17_650_001, 0)));
    assert!(pl.segment(17_649_999).is_none() && pl.segment(17_650_002).is_none());
}

#[test]
fn a_plain_playlist_with_a_discontinuity_and_its_end() {
    let text = "#EXTM3U\r\n#EXT-X-VERSION:3\r\n#EXT-X-TARGETDURATION:2\r\n\
                #EXT-X-MEDIA-SEQUENCE:7\r\n#EXT-X-DISCONTINUITY-SEQUENCE:1\r\n\
                #EXTINF:2.000,\r\ncam-7.ts?txSecret=ab&txTime=1F\r\n\
                #EXT-X-DISCONTINUITY\r\n#EXTINF:1.9995,\r\ncam-8.ts\r\n\
                # a comment\r\n#EXT-X-ENDLIST\r\n";
    let pl = parse_playlist(text.as_bytes()).unwrap();
    assert!(pl.ended && !pl.can_block_reload);
    assert_eq!(pl.segments.len(), 2);
    assert!(!pl.segments[0].discontinuity && pl.segments[1].discontinuity);
    assert_eq!(pl.segments[1].msn, 8);
    assert_eq!(pl.segments[1].whole.as_ref().unwrap().duration_ms, 2000);
    assert_eq!(
        pl.segments[0].end_ms(),
        None,
        "no date-time, no ingest time"
    );
    assert_eq!(pl.live_edge(), None);
    assert_eq!(pl.next_part(), (9, 0));
}

#[test]
fn malformed_playlists_are_errors_that_say_why() {
    let bad = |text: &str| parse_playlist(text.as_bytes()).unwrap_err().0;
    let head = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n";
    assert_eq!(
        bad("#EXT-X-TARGETDURATION:2\n"),
        "playlist does not start with #EXTM3U"
    );
    assert_eq!(bad("#EXTM3U\n"), "no #EXT-X-TARGETDURATION");
    assert_eq!(
        bad(&format!("{head}cam-1.ts\n")),
        "a segment URI without #EXTINF"
    );
    assert_eq!(
        bad(&format!("{head}#EXTINF:2,\n")),
        "#EXTINF without a segment URI"
    );
    assert_eq!(
        bad(&format!("{head}#EXTINF:abc,\nx.ts\n")),
        "bad #EXTINF duration"
    );
    assert!(bad("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n").contains("multivariant"));
    assert!(bad(&format!("{head}#EXTINF:2,\nhas space.ts\n")).contains("visible ASCII"));
    assert_eq!(
        bad("#EXTM3U\n#EXT-X-TARGETDURATION:0\n"),
        "bad #EXT-X-TARGETDURATION"
    );
    assert_eq!(
        bad(&format!("{head}#EXT-X-PROGRAM-DATE-TIME:yesterday\n")),
        "bad #EXT-X-PROGRAM-DATE-TIME"
    );
    assert_eq!(
        bad(&format!("{head}#EXT-X-PART:DURATION=0.3\n")),
        "#EXT-X-PART without URI"
    );
    assert!(bad(&format!("{head}#EXT-X-MAP:URI=\"x.mp4\n")).contains("unterminated"));
    assert_eq!(
        bad(&format!(
            "{head}#EXTINF:2,\na.ts\n#EXT-X-MEDIA-SEQUENCE:3\n"
        )),
        "#EXT-X-MEDIA-SEQUENCE after the first segment"
    );
    let mut many = head.to_string();
    for i in 0..=MAX_PARTS {
        many.push_str(&format!("#EXT-X-PART:DURATION=0.1,URI=\"p{i}.m4s\"\n"));
    }
    assert_eq!(bad(&many), "more than 1,000 parts in a segment");
    assert_eq!(
        parse_playlist(b"\xff\xfe").unwrap_err().0,
        "playlist is not UTF-8"
    );
    let last = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        u64::MAX
    );
    assert!(bad(&format!("{last}#EXTINF:2,\na.ts\n#EXTINF:2,\nb.ts\n")).contains("overflows"));
}

#[test]
fn durations_and_date_times() {
    assert_eq!(decimal_ms("2"), Some(2000));
    assert_eq!(decimal_ms("0.320"), Some(320));
    assert_eq!(decimal_ms("0.3335"), Some(334));
    assert_eq!(decimal_ms("2."), Some(2000));
    for bad in ["", ".5", "-1", "1e3", "99999999", "0.3x"] {
        assert_eq!(decimal_ms(bad), None, "{bad:?}");
    }
    assert_eq!(date_time_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        date_time_ms("2026-12-06T10:49:57.123Z"),
        Some(1_796_554_197_123)
    );
    assert_eq!(
        date_time_ms("2026-12-06T18:49:57.1234+08:00"),
        Some(1_796_554_197_123)
    );
    assert_eq!(
        date_time_ms("2026-12-06T05:19:57.123-0530"),
        Some(1_796_554_197_123)
    );
    assert_eq!(date_time_ms("2000-02-29T23:59:59Z"), Some(951_868_799_000));
    for bad in [
        "2026-13-01T00:00:00Z",
        "2026-12-06T10:49:57",
        "2026-12-06T10:49:57.Z",
        "1969-12-31T23:59:59Z",
        "2026-12-06T10:49:57+8",
        "2026-12-06",
    ] {
        assert_eq!(date_time_ms(bad), None, "{bad:?}");
    }
}

#[test]
fn playlist_uris_become_request_targets_that_keep_the_signature() {
    let host = "127.0.0.1:8080";
    let base = "/live/cam.m3u8?txSecret=ab&txTime=1F";
    let r = |uri| resolve(host, base, uri);
    assert_eq!(
        r("cam-1.ts").unwrap(),
        "/live/cam-1.ts?txSecret=ab&txTime=1F"
    );
    assert_eq!(
        r("cam-1.ts?txSecret=cd&txTime=2").unwrap(),
        "/live/cam-1.ts?txSecret=cd&txTime=2"
    );
    assert_eq!(
        r("/other/x.m4s").unwrap(),
        "/other/x.m4s?txSecret=ab&txTime=1F"
    );
    assert_eq!(
        r("http://127.0.0.1:8080/live/x.mp4").unwrap(),
        "/live/x.mp4?txSecret=ab&txTime=1F"
    );
    assert!(r("http://example.com/live/x.ts").is_err());
    assert!(r("https://127.0.0.1:8080/live/x.ts").is_err());
    assert!(r("//example.com/x.ts").is_err());
    assert_eq!(
        resolve(host, "/live/cam.m3u8", "cam-1.ts").unwrap(),
        "/live/cam-1.ts"
    );
    assert_eq!(
        with_query(base, "_HLS_msn=5&_HLS_part=0"),
        "/live/cam.m3u8?txSecret=ab&txTime=1F&_HLS_msn=5&_HLS_part=0"
    );
    assert_eq!(
        with_query("/live/cam.m3u8", "_HLS_msn=5"),
        "/live/cam.m3u8?_HLS_msn=5"
    );
}

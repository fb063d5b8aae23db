//! The boxes of an fMP4 init segment and the writer every box goes through.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

pub(super) fn audio_trak(b: &mut Boxes, a: &AudioConfig) {
    b.open(b"trak");
    tkhd(b, AUDIO_TRACK, true, 0, 0);
    b.open(b"mdia");
    mdhd_hdlr(b, b"soun", b"SoundHandler\0");
    b.open(b"minf");
    b.full(b"smhd", 0, 0);
    b.u32(0);
    b.close();
    dinf(b);
    b.open(b"stbl");
    b.full(b"stsd", 0, 0);
    b.u32(1);
    b.open(b"mp4a");
    b.zeros(6);
    b.u16(1); // data reference index
    b.zeros(8);
    b.u16(a.channels);
    b.u16(16); // sample size
    b.zeros(4);
    // 16.16 fixed point: a rate over 65535 Hz does not fit and is left 0 (decoders read
    // it from the AudioSpecificConfig).
    b.u32(if a.sample_rate <= 0xFFFF {
        a.sample_rate << 16
    } else {
        0
    });
    esds(b, &a.asc);
    b.close(); // mp4a
    b.close(); // stsd
    empty_tables(b);
    b.close(); // stbl
    b.close(); // minf
    b.close(); // mdia
    b.close(); // trak
}

pub(super) fn tkhd(b: &mut Boxes, id: u32, audio: bool, width: u16, height: u16) {
    b.full(b"tkhd", 0, 3); // enabled, in movie
    b.u32(0);
    b.u32(0);
    b.u32(id);
    b.u32(0);
    b.u32(0); // duration
    b.zeros(8);
    b.u16(0); // layer
    b.u16(0); // alternate group
    b.u16(if audio { 0x0100 } else { 0 });
    b.u16(0);
    b.matrix();
    b.u32(u32::from(width) << 16);
    b.u32(u32::from(height) << 16);
    b.close();
}

pub(super) fn mdhd_hdlr(b: &mut Boxes, handler: &[u8; 4], name: &[u8]) {
    b.full(b"mdhd", 0, 0);
    b.u32(0);
    b.u32(0);
    b.u32(TIMESCALE);
    b.u32(0);
    b.u16(0x55C4); // "und"
    b.u16(0);
    b.close();
    b.full(b"hdlr", 0, 0);
    b.u32(0);
    b.put(handler);
    b.zeros(12);
    b.put(name);
    b.close();
}

pub(super) fn dinf(b: &mut Boxes) {
    b.open(b"dinf");
    b.full(b"dref", 0, 0);
    b.u32(1);
    b.full(b"url ", 0, 1); // self-contained
    b.close();
    b.close();
    b.close();
}

/// The sample tables of a fragmented file: empty.
pub(super) fn empty_tables(b: &mut Boxes) {
    for name in [b"stts", b"stsc", b"stco"] {
        b.full(name, 0, 0);
        b.u32(0);
        b.close();
    }
    b.full(b"stsz", 0, 0);
    b.u32(0);
    b.u32(0);
    b.close();
}

/// `esds`: an ES_Descriptor holding a DecoderConfigDescriptor (MPEG-4 audio) with the
/// AudioSpecificConfig, and an SLConfigDescriptor.
pub(super) fn esds(b: &mut Boxes, asc: &[u8]) {
    pub(super) fn descriptor(b: &mut Boxes, tag: u8, len: usize) {
        b.buf.put_u8(tag);
        // Four bytes of 7-bit length, the form every reader accepts.
        let len = len as u32;
        b.buf.put_u8(0x80 | ((len >> 21) & 0x7F) as u8);
        b.buf.put_u8(0x80 | ((len >> 14) & 0x7F) as u8);
        b.buf.put_u8(0x80 | ((len >> 7) & 0x7F) as u8);
        b.buf.put_u8((len & 0x7F) as u8);
    }
    let dsi = 5 + asc.len();
    let dcd = 13 + dsi;
    let sl = 5 + 1;
    b.full(b"esds", 0, 0);
    descriptor(b, 0x03, 3 + dcd + sl);
    b.u16(AUDIO_TRACK as u16); // ES_ID
    b.buf.put_u8(0); // flags
    descriptor(b, 0x04, 13 + dsi);
    b.buf.put_u8(0x40); // MPEG-4 audio
    b.buf.put_u8(0x15); // audio stream, upstream 0, reserved 1
    b.zeros(3); // buffer size
    b.u32(0); // max bitrate
    b.u32(0); // average bitrate
    descriptor(b, 0x05, asc.len());
    b.put(asc);
    descriptor(b, 0x06, 1);
    b.buf.put_u8(0x02);
    b.close();
}

/// A box writer: boxes are opened, filled and closed, their sizes patched on close.
pub(super) struct Boxes {
    pub(super) buf: BytesMut,
    open: Vec<usize>,
}

impl Boxes {
    pub(super) fn new(capacity: usize) -> Boxes {
        Boxes {
            buf: BytesMut::with_capacity(capacity),
            open: Vec::with_capacity(8),
        }
    }

    pub(super) fn open(&mut self, name: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.put_u32(0);
        self.buf.put_slice(name);
    }

    /// A full box: a box with a version and 24 bits of flags.
    pub(super) fn full(&mut self, name: &[u8; 4], version: u8, flags: u32) {
        self.open(name);
        self.buf
            .put_u32((u32::from(version) << 24) | (flags & 0xFF_FFFF));
    }

    pub(super) fn close(&mut self) {
        if let Some(at) = self.open.pop() {
            let size = u32::try_from(self.buf.len() - at).unwrap_or(u32::MAX);
            self.buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
    }

    pub(super) fn put(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }

    pub(super) fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }

    pub(super) fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    pub(super) fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }

    pub(super) fn zeros(&mut self, n: usize) {
        self.buf.put_bytes(0, n);
    }

    /// The unity matrix.
    pub(super) fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.buf.put_u32(v);
        }
    }

    pub(super) fn finish(mut self) -> Bytes {
        while !self.open.is_empty() {
            self.close();
        }
        self.buf.freeze()
    }
}

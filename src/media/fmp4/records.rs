//! Reading what a publisher sent before it is kept: decoder configuration records, the
//! AudioSpecificConfig, a frame's NALU lengths.

use super::*;

/// Checks a decoder configuration record; returns its NALU length size.
pub(super) fn parse_record(format: VideoFormat, rec: &[u8]) -> Option<usize> {
    if rec.len() > MAX_CONFIG {
        return None;
    }
    if format == VideoFormat::Av1 {
        // marker 1, version 1; then profile/level, flags, the presentation delay byte.
        return (rec.len() >= 4 && rec[0] == 0x81).then_some(0);
    }
    if rec.first() != Some(&1) {
        return None;
    }
    match format {
        VideoFormat::Av1 => None,
        // configurationVersion, profile, compatibility, level, lengthSizeMinusOne, …
        VideoFormat::Avc => Some(usize::from(*rec.get(4)? & 0x03) + 1),
        // 22 bytes of general fields, the last one's low bits lengthSizeMinusOne, then
        // numOfArrays.
        VideoFormat::Hevc => {
            let size = usize::from(*rec.get(21)? & 0x03) + 1;
            rec.get(22)?;
            Some(size)
        }
    }
}

/// Sample rate and channel count from an AudioSpecificConfig.
pub(super) fn parse_asc(asc: &[u8]) -> Option<(u32, u16)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    if asc.len() < 2 || asc.len() > MAX_CONFIG {
        return None;
    }
    let object_type = asc[0] >> 3;
    if object_type == 0 || object_type == 31 {
        return None;
    }
    let index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
    let (rate, channels) = if index == 15 {
        // An explicit 24-bit rate, then the channel configuration.
        let b = asc.get(1..5)?;
        let bits = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        ((bits >> 7) & 0xFF_FFFF, ((bits >> 3) & 0x0F) as u16)
    } else {
        (
            *RATES.get(usize::from(index))?,
            u16::from((asc[1] >> 3) & 0x0F),
        )
    };
    // Channel configuration 0 (described in-band) is taken as stereo for the entry.
    Some((rate, if channels == 0 { 2 } else { channels }))
}

/// Whether the length-prefixed NALUs of `body` end exactly at its end.
pub(super) fn nalus_fit(mut body: &[u8], length_size: usize) -> bool {
    while !body.is_empty() {
        let Some(prefix) = body.get(..length_size) else {
            return false;
        };
        let len = prefix
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        match body.get(length_size..).and_then(|r| r.get(len..)) {
            Some(rest) => body = rest,
            None => return false,
        }
    }
    true
}

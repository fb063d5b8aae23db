//! ADTS: the AAC configuration read from an AudioSpecificConfig, and the 7-byte header
//! written before each raw AAC frame.

use super::Skip;

/// An ADTS frame length is 13 bits, header included.
pub(super) const ADTS_MAX_FRAME: usize = 0x1FFF;
pub(super) const ADTS_HEADER_LEN: usize = 7;

/// AAC configuration as ADTS needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AacConfig {
    /// ADTS profile: audio object type - 1 (0 Main, 1 LC, 2 SSR, 3 LTP).
    profile: u8,
    sampling_index: u8,
    channels: u8,
}

/// Reads the fields ADTS needs from an AudioSpecificConfig.
pub(super) fn parse_audio_specific_config(asc: &[u8]) -> Result<AacConfig, Skip> {
    if asc.len() < 2 {
        return Err(Skip::Malformed);
    }
    let object_type = asc[0] >> 3;
    let sampling_index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7);
    let channels = (asc[1] >> 3) & 0x0F;
    let profile = match object_type {
        1..=4 => object_type - 1,
        // HE-AAC v1/v2 signalled explicitly: the first sampling index is the core's, and
        // the core is AAC LC; players find SBR/PS in the stream (implicit signalling).
        5 | 29 => 1,
        _ => return Err(Skip::Unsupported),
    };
    // Index 15 is an explicit 24-bit frequency, which ADTS cannot carry; 13 and 14 are
    // reserved.
    if sampling_index >= 13 || channels > 7 {
        return Err(Skip::Unsupported);
    }
    Ok(AacConfig {
        profile,
        sampling_index,
        channels,
    })
}

pub(super) fn adts_header(aac: AacConfig, frame_len: usize) -> [u8; ADTS_HEADER_LEN] {
    let len = frame_len as u16;
    [
        0xFF,
        0xF1, // MPEG-4, layer 0, no CRC
        (aac.profile << 6) | (aac.sampling_index << 2) | (aac.channels >> 2),
        ((aac.channels & 0x03) << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        ((len & 0x07) << 5) as u8 | 0x1F, // buffer fullness 0x7FF: variable rate
        0xFC,                             // fullness continued, one raw data block
    ]
}

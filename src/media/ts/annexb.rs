//! H.264 from AVCC to Annex B: the AVCDecoderConfigurationRecord (its SPS/PPS as
//! start-code-prefixed parameter sets), the NALUs of a length-prefixed frame, and the
//! access unit delimiter.

pub(super) const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// Largest SPS + PPS set (Annex B) taken from an AVCDecoderConfigurationRecord. Real ones
/// are a few hundred bytes; they are written again before every keyframe, so a record
/// the size of a whole message (up to `media.max_message_bytes`) would be copied into
/// every keyframe of every segment. Over it, the record is refused as malformed.
const MAX_PARAMETER_SETS: usize = 64 * 1024;
/// Access unit delimiter, primary_pic_type 7 (any slice type).
pub(super) const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

/// H.264 decoder configuration, from the AVCDecoderConfigurationRecord.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AvcConfig {
    /// Bytes of each NALU length prefix (1, 2, 3 or 4).
    pub(super) length_size: usize,
    /// SPS and PPS NALUs, each after a 4-byte start code.
    pub(super) parameter_sets: Vec<u8>,
}

/// The NALUs of an AVCC frame; sets `malformed` and stops at a length past the end.
pub(super) struct Nalus<'a> {
    rest: &'a [u8],
    length_size: usize,
    pub(super) malformed: bool,
}

impl<'a> Nalus<'a> {
    pub(super) fn new(body: &'a [u8], length_size: usize) -> Self {
        Nalus {
            rest: body,
            length_size,
            malformed: false,
        }
    }
}

impl<'a> Iterator for Nalus<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() || self.malformed {
            return None;
        }
        let Some(len_bytes) = self.rest.get(..self.length_size) else {
            self.malformed = true;
            return None;
        };
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let start = self.length_size;
        let Some(nalu) = self.rest.get(start..start.saturating_add(len)) else {
            self.malformed = true;
            return None;
        };
        self.rest = &self.rest[start + len..];
        Some(nalu)
    }
}

/// Reads an AVCDecoderConfigurationRecord; `None` if it is malformed or has no SPS/PPS.
pub(super) fn parse_avc_config(rec: &[u8]) -> Option<AvcConfig> {
    if rec.len() < 7 || rec[0] != 1 {
        return None;
    }
    let length_size = usize::from(rec[4] & 0x03) + 1;
    let mut parameter_sets = Vec::new();
    let mut pos = 5;
    let mut counts = [0usize; 2];
    for (i, mask) in [0x1Fu8, 0xFF].into_iter().enumerate() {
        let n = usize::from(*rec.get(pos)? & mask);
        pos += 1;
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes([*rec.get(pos)?, *rec.get(pos + 1)?]));
            pos += 2;
            let nalu = rec.get(pos..pos + len)?;
            pos += len;
            if nalu.is_empty() {
                continue;
            }
            if parameter_sets.len() + START_CODE.len() + nalu.len() > MAX_PARAMETER_SETS {
                return None;
            }
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(nalu);
            counts[i] += 1;
        }
    }
    if counts[0] == 0 || counts[1] == 0 {
        return None;
    }
    Some(AvcConfig {
        length_size,
        parameter_sets,
    })
}

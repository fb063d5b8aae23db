//! PSI: the PAT and PMT sections [`TsMuxer::write_tables`] writes, each as one packet
//! with its CRC-32/MPEG-2.

use bytes::{BufMut, BytesMut};

use super::{TsMuxer, AUDIO_PID, PAYLOAD_LEN, PMT_PID, VIDEO_PID};

pub(super) const STREAM_TYPE_H264: u8 = 0x1B;
pub(super) const STREAM_TYPE_AAC: u8 = 0x0F;

impl TsMuxer {
    /// Writes a PAT and a PMT for the tracks configured so far (two packets).
    pub fn write_tables(&mut self, out: &mut BytesMut) {
        let tracks = self.tracks();
        if self.announced.is_some_and(|a| a != tracks) {
            self.pmt_version = (self.pmt_version + 1) & 0x1F;
        }
        self.announced = Some(tracks);

        // PAT: program 1 → PMT_PID.
        let mut pat = Vec::with_capacity(16);
        pat.extend_from_slice(&[0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00]);
        pat.extend_from_slice(&[0x00, 0x01]);
        pat.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
        write_section(out, 0, &mut self.cc_pat, pat);

        let mut pmt = Vec::with_capacity(32);
        let es_count = usize::from(tracks.video) + usize::from(tracks.audio);
        let section_length = 9 + 5 * es_count + 4;
        pmt.push(0x02);
        pmt.extend_from_slice(&(0xB000 | section_length as u16).to_be_bytes());
        pmt.extend_from_slice(&[0x00, 0x01, 0xC1 | (self.pmt_version << 1), 0x00, 0x00]);
        pmt.extend_from_slice(&(0xE000 | self.pcr_pid()).to_be_bytes());
        pmt.extend_from_slice(&[0xF0, 0x00]);
        if tracks.video {
            pmt.push(STREAM_TYPE_H264);
            pmt.extend_from_slice(&(0xE000 | VIDEO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xF0, 0x00]);
        }
        if tracks.audio {
            pmt.push(STREAM_TYPE_AAC);
            pmt.extend_from_slice(&(0xE000 | AUDIO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xF0, 0x00]);
        }
        write_section(out, PMT_PID, &mut self.cc_pmt, pmt);
    }
}

/// Writes one PSI section (PAT or PMT) as a single packet: pointer field, section, CRC,
/// 0xFF fill.
fn write_section(out: &mut BytesMut, pid: u16, cc: &mut u8, mut section: Vec<u8>) {
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    out.put_u8(0x47);
    out.put_u8(0x40 | ((pid >> 8) as u8 & 0x1F));
    out.put_u8(pid as u8);
    out.put_u8(0x10 | (*cc & 0x0F));
    *cc = (*cc + 1) & 0x0F;
    out.put_u8(0); // pointer field
    out.put_slice(&section);
    out.put_bytes(0xFF, PAYLOAD_LEN - 1 - section.len());
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, initial all ones, no final xor).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }
}

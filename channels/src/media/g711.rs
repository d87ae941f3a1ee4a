//! G.711 (ITU-T Recommendation G.711, 11/1988): 8-bit logarithmic
//! companding of 14-bit (µ-law) or 13-bit (A-law) linear samples.
//!
//! Samples here are 16-bit linear PCM, as WAV files and mixers use them; the
//! low bits the laws cannot carry are dropped on encoding and come back as
//! the middle of the quantisation step on decoding.
//!
//! - **µ-law (PCMU, RTP payload type 0)**: bias 33 on the 14-bit magnitude,
//!   eight segments of sixteen steps, all bits inverted on the line. It has
//!   two codes for zero (`0xFF` and `0x7F`); the encoder always produces
//!   `0xFF`.
//! - **A-law (PCMA, payload type 8)**: no bias, a linear first segment,
//!   even bits inverted on the line (XOR `0x55`).
//!
//! Encoding and decoding are `const fn`, so the 256-entry decode tables and
//! the µ-law ↔ A-law transcoding tables the relay uses are computed at
//! compile time.
//!
//! ```
//! use ccu_channels::media::g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};
//!
//! assert_eq!(ulaw_encode(0), 0xFF);
//! assert_eq!(alaw_encode(0), 0xD5);
//! assert_eq!(ulaw_decode(0x80), 32124);
//! assert_eq!(alaw_decode(0xAA), 32256);
//! ```

/// µ-law bias added to the magnitude before the segment search (G.711
/// Table 2a: decision values are offset by 33 in 14-bit units, 132 in
/// 16-bit units).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent once biased (16-bit units).
const ULAW_CLIP: i32 = 32635;

/// Which G.711 law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, PCMU.
    Ulaw,
    /// A-law, PCMA.
    Alaw,
}

impl Law {
    /// The RFC 3551 static payload type (0 for PCMU, 8 for PCMA).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The law for an SDP encoding name (`PCMU`, `PCMA`, any case).
    pub fn from_encoding(name: &str) -> Option<Law> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Law::Ulaw)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Law::Alaw)
        } else {
            None
        }
    }

    /// The SDP encoding name.
    pub fn encoding(self) -> &'static str {
        match self {
            Law::Ulaw => "PCMU",
            Law::Alaw => "PCMA",
        }
    }

    /// The code of silence (linear 0) in this law.
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => ulaw_encode(0),
            Law::Alaw => alaw_encode(0),
        }
    }

    /// Encodes one linear sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => ulaw_encode(sample),
            Law::Alaw => alaw_encode(sample),
        }
    }

    /// Decodes one code.
    pub fn decode(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ULAW_TO_LINEAR[code as usize],
            Law::Alaw => ALAW_TO_LINEAR[code as usize],
        }
    }

    /// Encodes `samples` onto the end of `out`.
    pub fn encode_into(self, samples: &[i16], out: &mut Vec<u8>) {
        out.reserve(samples.len());
        out.extend(samples.iter().map(|&s| self.encode(s)));
    }

    /// Decodes `codes` onto the end of `out`.
    pub fn decode_into(self, codes: &[u8], out: &mut Vec<i16>) {
        out.reserve(codes.len());
        out.extend(codes.iter().map(|&c| self.decode(c)));
    }

    /// Rewrites a payload of this law into `to`, in place. Same law: nothing
    /// to do. µ-law ↔ A-law goes through linear, one table look-up per byte.
    pub fn transcode_in_place(self, to: Law, payload: &mut [u8]) {
        let table = match (self, to) {
            (Law::Ulaw, Law::Alaw) => &ULAW_TO_ALAW,
            (Law::Alaw, Law::Ulaw) => &ALAW_TO_ULAW,
            _ => return,
        };
        for byte in payload {
            *byte = table[*byte as usize];
        }
    }
}

/// Encodes a 16-bit linear sample to µ-law.
pub const fn ulaw_encode(sample: i16) -> u8 {
    let mut value = sample as i32;
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0x00
    };
    if value > ULAW_CLIP {
        value = ULAW_CLIP;
    }
    value += ULAW_BIAS;
    // Segment: position of the highest set bit above bit 7 (values are now
    // at least 0x84, at most 0x7FFF).
    let mut segment = 0;
    let mut probe = value >> 8;
    while probe != 0 {
        segment += 1;
        probe >>= 1;
    }
    let mantissa = (value >> (segment + 3)) & 0x0F;
    !((sign | (segment << 4) | mantissa) as u8)
}

/// Decodes a µ-law code to a 16-bit linear sample.
pub const fn ulaw_decode(code: u8) -> i16 {
    let code = !code;
    let sign = code & 0x80;
    let segment = ((code >> 4) & 0x07) as i32;
    let mantissa = (code & 0x0F) as i32;
    // Middle of the step, then remove the bias.
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    if sign != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Encodes a 16-bit linear sample to A-law.
pub const fn alaw_encode(sample: i16) -> u8 {
    // A-law works on 13 bits: drop the three low bits first.
    let mut value = (sample as i32) >> 3;
    let sign = if value >= 0 {
        0x80
    } else {
        // One's complement for negatives, so -1 (just below zero) lands in
        // the same step as 0 with the other sign, as in G.711 Table 1a.
        value = -value - 1;
        0x00
    };
    if value > 0x0FFF {
        value = 0x0FFF;
    }
    let code = if value < 32 {
        // Segments 0 and 1 share one step size.
        value >> 1
    } else {
        let mut segment = 1;
        let mut probe = value >> 5;
        while probe > 1 {
            segment += 1;
            probe >>= 1;
        }
        (segment << 4) | ((value >> segment) & 0x0F)
    };
    ((sign | code) as u8) ^ 0x55
}

/// Decodes an A-law code to a 16-bit linear sample.
pub const fn alaw_decode(code: u8) -> i16 {
    let code = code ^ 0x55;
    let segment = ((code >> 4) & 0x07) as i32;
    let mantissa = (code & 0x0F) as i32;
    let magnitude = if segment == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (segment - 1)
    };
    if code & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn decode_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match law {
            Law::Ulaw => ulaw_decode(i as u8),
            Law::Alaw => alaw_decode(i as u8),
        };
        i += 1;
    }
    table
}

const fn transcode_table(from: Law) -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = match from {
            Law::Ulaw => alaw_encode(ulaw_decode(i as u8)),
            Law::Alaw => ulaw_encode(alaw_decode(i as u8)),
        };
        i += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = decode_table(Law::Ulaw);
static ALAW_TO_LINEAR: [i16; 256] = decode_table(Law::Alaw);
static ULAW_TO_ALAW: [u8; 256] = transcode_table(Law::Ulaw);
static ALAW_TO_ULAW: [u8; 256] = transcode_table(Law::Alaw);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ulaw_known_values() {
        // Zero, the extremes, and the segment edges of G.711 Table 2a.
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(ulaw_decode(0xDF), 396);
        assert_eq!(ulaw_encode(8), 0xFE);
        assert_eq!(ulaw_encode(100), 0xF2);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_encode(-1000), 0x4E);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        // First step of segment 1 (linear 256 in 16-bit units, 32 in 13-bit).
        assert_eq!(alaw_encode(256), 0xC5);
        assert_eq!(alaw_decode(0xC5), 264);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_encode(-1000), 0x7A);
    }

    /// FNV-1a of the 256 decoded levels as 16-bit little-endian, for codes
    /// 0..=255 in order.
    fn decode_table_hash(law: Law) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for code in 0..=255u8 {
            for byte in law.decode(code).to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    #[test]
    fn decoding_matches_an_independent_implementation() {
        // The hashes of sox 14.4's decoding of every code:
        //   python3 -c "open('codes.raw','wb').write(bytes(range(256)))"
        //   sox -D -t raw -r 8000 -e u-law -b 8 -c 1 codes.raw -t raw -e signed -b 16 u.s16
        //   (and -e a-law), then FNV-1a over each output file.
        assert_eq!(decode_table_hash(Law::Ulaw), 0xb91e_65d6_8481_a1a8);
        assert_eq!(decode_table_hash(Law::Alaw), 0x693a_40ca_62a3_d2a5);
    }

    #[test]
    fn every_alaw_code_round_trips() {
        for code in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(code)), code, "code {code:#04x}");
        }
    }

    #[test]
    fn every_ulaw_code_round_trips_but_negative_zero() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected, "code {code:#04x}");
        }
    }

    #[test]
    fn decoding_is_monotonic_in_the_linear_order_of_codes() {
        // Sorting the codes by decoded value must give strictly increasing
        // values for A-law (no duplicate levels) and for µ-law but its two zeros.
        for law in [Law::Ulaw, Law::Alaw] {
            let mut levels: Vec<i16> = (0..=255u8).map(|c| law.decode(c)).collect();
            levels.sort_unstable();
            levels.dedup();
            let expected = if law == Law::Ulaw { 255 } else { 256 };
            assert_eq!(levels.len(), expected, "{law:?}");
        }
    }

    #[test]
    fn transcoding_keeps_the_level_within_one_step() {
        for code in 0..=255u8 {
            let mut payload = [code];
            Law::Ulaw.transcode_in_place(Law::Alaw, &mut payload);
            let before = i32::from(ulaw_decode(code));
            let after = i32::from(alaw_decode(payload[0]));
            let step = (before.abs() / 16).max(16);
            assert!(
                (before - after).abs() <= step,
                "{code:#04x}: {before} -> {after}"
            );
        }
        let mut same = [1u8, 2, 3];
        Law::Ulaw.transcode_in_place(Law::Ulaw, &mut same);
        assert_eq!(same, [1, 2, 3]);
    }

    #[test]
    fn law_names_and_silence() {
        assert_eq!(Law::from_encoding("pcmu"), Some(Law::Ulaw));
        assert_eq!(Law::from_encoding("PCMA"), Some(Law::Alaw));
        assert_eq!(Law::from_encoding("G722"), None);
        assert_eq!(Law::Ulaw.silence(), 0xFF);
        assert_eq!(Law::Alaw.silence(), 0xD5);
        assert_eq!(Law::Alaw.static_payload_type(), 8);
    }

    proptest! {
        #[test]
        fn quantisation_error_is_bounded_by_the_step(sample in any::<i16>()) {
            for law in [Law::Ulaw, Law::Alaw] {
                let back = i32::from(law.decode(law.encode(sample)));
                let s = i32::from(sample);
                // Steps double per segment: the error is at most half a step
                // of the segment (1/32 of the magnitude, and at least 16 near
                // zero), plus clipping at the top of the range.
                let clip = if law == Law::Ulaw { 32124 } else { 32256 };
                let s_clipped = s.clamp(-clip, clip);
                let bound = (s_clipped.abs() / 16).max(16);
                prop_assert!((back - s_clipped).abs() <= bound,
                    "{law:?} {sample} -> {back}");
                // The sign survives (zero may go either way).
                prop_assert!(s.signum() * back.signum() >= 0);
            }
        }

        #[test]
        fn encoding_is_monotonic(a in any::<i16>(), b in any::<i16>()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            for law in [Law::Ulaw, Law::Alaw] {
                prop_assert!(law.decode(law.encode(lo)) <= law.decode(law.encode(hi)));
            }
        }
    }
}

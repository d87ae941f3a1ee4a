//! Reading prompt and music files: RIFF WAVE, 8 kHz, mono, as 16-bit
//! linear PCM (format 1), A-law (format 6) or µ-law (format 7), plain or
//! in a `WAVE_FORMAT_EXTENSIBLE` wrapper. Anything else is a [`WavError`]
//! that says what the file is, so that whoever recorded the prompt can
//! convert it (`sox in.wav -r 8000 -c 1 -e u-law out.wav`).
//!
//! Chunks other than `fmt ` and `data` (`fact`, `LIST`, `cue `…) are
//! skipped, chunks are padded to even lengths as RIFF requires, and a
//! length that runs past the end of the file is an error, not a silent
//! truncation.
//!
//! ```
//! use ccu_channels::media::wav::{parse, SampleFormat};
//!
//! let mut file = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x07\0\x01\0\x40\x1f\0\0\x40\x1f\0\0\x01\0\x08\0".to_vec();
//! file.extend_from_slice(b"data\x02\0\0\0\xff\x80");
//! let wav = parse(&file).unwrap();
//! assert_eq!(wav.format, SampleFormat::Ulaw);
//! assert_eq!(wav.samples, vec![0, 32124]);
//! ```

use super::g711::Law;

/// The only sample rate of the voice channel.
pub const SAMPLE_RATE: u32 = 8_000;

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Why a file is not a usable prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF file")]
    NotRiff,
    #[error("a RIFF file but not WAVE")]
    NotWave,
    #[error("the {0:?} chunk runs past the end of the file")]
    Truncated(String),
    #[error("no fmt chunk")]
    MissingFormat,
    #[error("fmt chunk of {0} bytes is too short")]
    ShortFormat(u32),
    #[error("no data chunk")]
    MissingData,
    #[error("{0} channels: prompts must be mono")]
    Channels(u16),
    #[error("{0} Hz: prompts must be 8000 Hz")]
    SampleRate(u32),
    #[error(
        "format {tag} with {bits} bits per sample: prompts must be 16-bit PCM, 8-bit µ-law or 8-bit A-law"
    )]
    Format { tag: u16, bits: u16 },
    #[error("16-bit data of odd length {0}")]
    OddLength(u32),
}

/// How the samples were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    Pcm16,
    Ulaw,
    Alaw,
}

/// A decoded WAV file: 8 kHz mono linear samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub format: SampleFormat,
    pub samples: Vec<i16>,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parses a WAV file.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut format: Option<SampleFormat> = None;
    let mut data: Option<&[u8]> = None;
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4);
        let start = at + 8;
        let end = start
            .checked_add(size as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| WavError::Truncated(String::from_utf8_lossy(id).into_owned()))?;
        let body = &bytes[start..end];
        match id {
            b"fmt " => format = Some(read_format(body, size)?),
            b"data" => data = Some(body),
            _ => {}
        }
        // Chunks are padded to an even length (the pad byte may be missing
        // at the very end of a file).
        at = end + (size as usize & 1);
    }
    let format = format.ok_or(WavError::MissingFormat)?;
    let data = data.ok_or(WavError::MissingData)?;
    let samples = match format {
        SampleFormat::Pcm16 => {
            if data.len() % 2 != 0 {
                return Err(WavError::OddLength(data.len() as u32));
            }
            data.chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]))
                .collect()
        }
        SampleFormat::Ulaw => data.iter().map(|&c| Law::Ulaw.decode(c)).collect(),
        SampleFormat::Alaw => data.iter().map(|&c| Law::Alaw.decode(c)).collect(),
    };
    Ok(Wav { format, samples })
}

fn read_format(body: &[u8], size: u32) -> Result<SampleFormat, WavError> {
    if body.len() < 16 {
        return Err(WavError::ShortFormat(size));
    }
    let mut tag = u16_at(body, 0);
    let channels = u16_at(body, 2);
    let rate = u32_at(body, 4);
    let bits = u16_at(body, 14);
    if tag == FORMAT_EXTENSIBLE {
        // cbSize (2), valid bits (2), channel mask (4), then the sub-format
        // GUID whose first two bytes are the format tag.
        if body.len() < 26 {
            return Err(WavError::ShortFormat(size));
        }
        tag = u16_at(body, 24);
    }
    if channels != 1 {
        return Err(WavError::Channels(channels));
    }
    if rate != SAMPLE_RATE {
        return Err(WavError::SampleRate(rate));
    }
    match (tag, bits) {
        (FORMAT_PCM, 16) => Ok(SampleFormat::Pcm16),
        (FORMAT_ULAW, 8) => Ok(SampleFormat::Ulaw),
        (FORMAT_ALAW, 8) => Ok(SampleFormat::Alaw),
        _ => Err(WavError::Format { tag, bits }),
    }
}

/// Writes samples as a 16-bit PCM WAV file (for tests and tools).
pub fn write_pcm16(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(bits) / 8).to_le_bytes());
        fmt.extend_from_slice(&(bits / 8).to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        fmt
    }

    fn file(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        for (id, data) in chunks {
            body.extend_from_slice(*id);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_pcm16_and_the_companded_formats() {
        let pcm = parse(&write_pcm16(&[0, 1000, -1000, i16::MAX])).unwrap();
        assert_eq!(pcm.format, SampleFormat::Pcm16);
        assert_eq!(pcm.samples, vec![0, 1000, -1000, i16::MAX]);
        let alaw = parse(&file(&[
            (b"fmt ", header(6, 1, 8000, 8)),
            (b"data", vec![0xD5, 0x2A]),
        ]))
        .unwrap();
        assert_eq!(alaw.format, SampleFormat::Alaw);
        assert_eq!(alaw.samples, vec![8, -32256]);
        // Odd data length, its pad byte, and a chunk after it; fmt with
        // cbSize (18 bytes) and a fact chunk, as sox writes µ-law.
        let mut fmt18 = header(7, 1, 8000, 8);
        fmt18.extend_from_slice(&[0, 0]);
        let ulaw = parse(&file(&[
            (b"fmt ", fmt18),
            (b"fact", vec![3, 0, 0, 0]),
            (b"data", vec![0xFF, 0x80, 0x00]),
            (b"LIST", b"INFOxxxx".to_vec()),
        ]))
        .unwrap();
        assert_eq!(ulaw.samples, vec![0, 32124, -32124]);
    }

    #[test]
    fn reads_wave_format_extensible() {
        let mut fmt = header(FORMAT_EXTENSIBLE, 1, 8000, 16);
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&4u32.to_le_bytes());
        fmt.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
        ]);
        let wav = parse(&file(&[(b"fmt ", fmt), (b"data", vec![0x10, 0x00])])).unwrap();
        assert_eq!((wav.format, wav.samples), (SampleFormat::Pcm16, vec![16]));
    }

    #[test]
    fn refuses_what_the_voice_channel_cannot_play() {
        assert_eq!(parse(b"RIFX\0\0\0\0WAVE"), Err(WavError::NotRiff));
        assert_eq!(parse(b"RIFF"), Err(WavError::NotRiff));
        assert_eq!(parse(b"RIFF\0\0\0\0AVI "), Err(WavError::NotWave));
        let data = (b"data", vec![0, 0]);
        assert_eq!(
            parse(&file(&[(b"fmt ", header(1, 2, 8000, 16)), data.clone()])),
            Err(WavError::Channels(2))
        );
        assert_eq!(
            parse(&file(&[(b"fmt ", header(1, 1, 44100, 16)), data.clone()])),
            Err(WavError::SampleRate(44100))
        );
        assert_eq!(
            parse(&file(&[(b"fmt ", header(1, 1, 8000, 8)), data.clone()])),
            Err(WavError::Format { tag: 1, bits: 8 })
        );
        assert_eq!(
            parse(&file(&[(b"fmt ", header(3, 1, 8000, 32)), data.clone()])),
            Err(WavError::Format { tag: 3, bits: 32 })
        );
        assert_eq!(
            parse(&file(std::slice::from_ref(&data))),
            Err(WavError::MissingFormat)
        );
        assert_eq!(
            parse(&file(&[(b"fmt ", header(1, 1, 8000, 16))])),
            Err(WavError::MissingData)
        );
        assert_eq!(
            parse(&file(&[(b"fmt ", vec![1, 0, 1, 0]), data])),
            Err(WavError::ShortFormat(4))
        );
        assert_eq!(
            parse(&file(&[
                (b"fmt ", header(1, 1, 8000, 16)),
                (b"data", vec![0, 0, 0])
            ])),
            Err(WavError::OddLength(3))
        );
        let mut truncated = write_pcm16(&[1, 2, 3]);
        truncated.truncate(truncated.len() - 1);
        assert_eq!(parse(&truncated), Err(WavError::Truncated("data".into())));
    }

    proptest! {
        #[test]
        fn pcm16_round_trips(samples in proptest::collection::vec(any::<i16>(), 0..500)) {
            prop_assert_eq!(parse(&write_pcm16(&samples)).unwrap().samples, samples);
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse(&bytes);
            let mut riff = b"RIFF\0\0\0\0WAVE".to_vec();
            riff.extend_from_slice(&bytes);
            let _ = parse(&riff);
        }
    }
}

//! Prompts, the prompt library, and the sans-IO [`Player`] that turns a
//! playlist into one RTP packet every 20 ms.
//!
//! A [`Prompt`] is a decoded 8 kHz WAV file, cut on demand into frames of
//! 160 samples (20 ms, the RFC 3551 §4.5.14 default packetisation for
//! G.711), the last one padded with silence. [`PromptLibrary`] loads a
//! prompt directory laid out as `config/prompts/{language}/{name}.wav` and
//! `config/prompts/music/{name}.wav`, and resolves the prompt names the IVR
//! and the announcer speak in.
//!
//! The player keeps its own SSRC, sequence numbers and timestamps; its
//! packets go through [`super::relay::Relay`] as local packets, which
//! rewrites them into the leg's one stream. It schedules packets on
//! `start + n × 20 ms`, so a late poll does not make the stream drift; if
//! the shell falls more than 60 ms behind, the timestamp skips forward to
//! the wall clock (the receiver's jitter buffer would otherwise hold stale
//! audio) and the marker bit says so.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use ccu_channels::media::g711::Law;
//! use ccu_channels::media::player::{PlayItem, Player, PlayerOutput, Prompt};
//!
//! let beep = Arc::new(Prompt::from_samples("beep", vec![1000; 400])); // 50 ms
//! let mut player = Player::new(Law::Ulaw, 0x1234, 0, 0);
//! let t0 = Instant::now();
//! player.play(t0, [PlayItem::Prompt(beep)]);
//! let mut packets = 0;
//! let mut now = t0;
//! loop {
//!     match player.poll(now) {
//!         Some(PlayerOutput::Packet(_)) => packets += 1,
//!         Some(PlayerOutput::Finished) => break,
//!         None => now = player.next_deadline().unwrap(),
//!     }
//! }
//! assert_eq!(packets, 3); // 400 samples = 2.5 frames
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::g711::Law;
use super::rtp::PacketBuilder;
use super::wav::{self, WavError};

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// One frame.
pub const FRAME: Duration = Duration::from_millis(20);
/// Falling this far behind schedule makes the player skip to the wall clock.
const MAX_LAG: Duration = Duration::from_millis(60);

/// A prompt or music file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Wav { path: PathBuf, source: WavError },
    #[error("{path} holds no audio")]
    Empty { path: PathBuf },
    #[error("no prompt {name:?} for language {language:?}")]
    Missing { language: String, name: String },
}

/// A decoded prompt: 8 kHz mono linear samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    name: String,
    samples: Vec<i16>,
}

impl Prompt {
    pub fn from_samples(name: impl Into<String>, samples: Vec<i16>) -> Prompt {
        Prompt {
            name: name.into(),
            samples,
        }
    }

    /// Decodes a WAV file's bytes (see [`wav::parse`] for what is accepted).
    pub fn from_wav(name: impl Into<String>, bytes: &[u8]) -> Result<Prompt, WavError> {
        Ok(Prompt::from_samples(name, wav::parse(bytes)?.samples))
    }

    /// Reads and decodes a WAV file; an empty one is an error too.
    pub fn load(path: &Path) -> Result<Prompt, PromptError> {
        let bytes = std::fs::read(path).map_err(|source| PromptError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prompt = Prompt::from_wav(name, &bytes).map_err(|source| PromptError::Wav {
            path: path.to_owned(),
            source,
        })?;
        if prompt.samples.is_empty() {
            return Err(PromptError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(prompt)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    /// How many 20 ms frames the prompt takes (the last may be partial).
    pub fn frame_count(&self) -> usize {
        self.samples.len().div_ceil(FRAME_SAMPLES)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples.len() as u64 * 125)
    }

    /// Frame `index` encoded in `law` onto the end of `out`: 160 bytes,
    /// padded with silence past the end of the prompt.
    pub fn encode_frame(&self, index: usize, law: Law, out: &mut Vec<u8>) {
        let start = (index * FRAME_SAMPLES).min(self.samples.len());
        let end = (start + FRAME_SAMPLES).min(self.samples.len());
        law.encode_into(&self.samples[start..end], out);
        out.extend(std::iter::repeat_n(
            law.silence(),
            FRAME_SAMPLES - (end - start),
        ));
    }
}

/// The prompts of every language and the music, by name.
#[derive(Debug, Clone, Default)]
pub struct PromptLibrary {
    prompts: HashMap<(String, String), Arc<Prompt>>,
}

/// The pseudo-language under which music is filed.
pub const MUSIC: &str = "music";

impl PromptLibrary {
    /// Loads every `*.wav` in every sub-directory of `root` (a language,
    /// or `music`). Any file that does not load fails the whole load: a
    /// broken prompt is found at start, not during a citizen's call.
    pub fn load_dir(root: &Path) -> Result<PromptLibrary, PromptError> {
        let read_dir = |path: &Path| {
            std::fs::read_dir(path).map_err(|source| PromptError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let mut library = PromptLibrary::default();
        let mut languages: Vec<PathBuf> = read_dir(root)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        languages.sort();
        for dir in languages {
            let language = dir
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for entry in read_dir(&dir)? {
                let path = entry
                    .map_err(|source| PromptError::Read {
                        path: dir.clone(),
                        source,
                    })?
                    .path();
                if path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("wav"))
                {
                    let prompt = Prompt::load(&path)?;
                    library.insert(&language, prompt);
                }
            }
        }
        Ok(library)
    }

    pub fn insert(&mut self, language: &str, prompt: Prompt) {
        self.prompts
            .insert((language.to_owned(), prompt.name.clone()), Arc::new(prompt));
    }

    pub fn get(&self, language: &str, name: &str) -> Option<Arc<Prompt>> {
        self.prompts
            .get(&(language.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The prompts named, in `language`; the first missing one is an error.
    pub fn resolve<S: AsRef<str>>(
        &self,
        language: &str,
        names: &[S],
    ) -> Result<Vec<Arc<Prompt>>, PromptError> {
        names
            .iter()
            .map(|name| {
                self.get(language, name.as_ref())
                    .ok_or_else(|| PromptError::Missing {
                        language: language.to_owned(),
                        name: name.as_ref().to_owned(),
                    })
            })
            .collect()
    }

    /// The languages that have prompts (music aside), sorted.
    pub fn languages(&self) -> Vec<&str> {
        let mut languages: Vec<&str> = self
            .prompts
            .keys()
            .map(|(l, _)| l.as_str())
            .filter(|l| *l != MUSIC)
            .collect();
        languages.sort_unstable();
        languages.dedup();
        languages
    }

    /// Every prompt, with its language.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Prompt>)> {
        self.prompts.iter().map(|((l, _), p)| (l.as_str(), p))
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }
}

/// One entry of a playlist.
#[derive(Debug, Clone)]
pub enum PlayItem {
    Prompt(Arc<Prompt>),
    /// Silence frames (a pause between prompts).
    Silence(Duration),
    /// Played again and again until [`Player::stop`] or a new
    /// [`Player::play`]; items after it are never reached.
    Loop(Arc<Prompt>),
}

impl PlayItem {
    fn frames(&self) -> usize {
        match self {
            PlayItem::Prompt(p) | PlayItem::Loop(p) => p.frame_count(),
            PlayItem::Silence(d) => (d.as_micros() / FRAME.as_micros()) as usize,
        }
    }
}

/// What the player gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerOutput {
    /// An RTP packet (payload type 0 or 8 as the law says).
    Packet(Vec<u8>),
    /// The playlist has been played to its end (never for a loop).
    Finished,
}

/// Plays playlists of prompts as RTP. See the module documentation.
#[derive(Debug, Clone)]
pub struct Player {
    law: Law,
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    items: VecDeque<PlayItem>,
    /// Next frame of the first item.
    frame: usize,
    /// When the next packet is due; `None` when idle.
    due: Option<Instant>,
    /// When the last packet was sent and its timestamp, for the timestamp
    /// across a pause.
    last_sent: Option<(Instant, u32)>,
    marker: bool,
    finished: bool,
}

impl Player {
    /// A player sending in `law` (payload type 0 or 8) from `ssrc`, with
    /// the first sequence number and timestamp (random, RFC 3550 §5.1).
    pub fn new(law: Law, ssrc: u32, sequence: u16, timestamp: u32) -> Player {
        Player {
            law,
            ssrc,
            sequence,
            timestamp,
            items: VecDeque::new(),
            frame: 0,
            due: None,
            last_sent: None,
            marker: true,
            finished: false,
        }
    }

    /// Replaces whatever is playing with `items`, starting now.
    pub fn play(&mut self, now: Instant, items: impl IntoIterator<Item = PlayItem>) {
        self.items = items.into_iter().collect();
        self.frame = 0;
        self.finished = false;
        if self.due.is_none() {
            self.resume(now);
        }
        self.skip_empty();
    }

    /// Adds to the end of the playlist (after what is playing).
    pub fn enqueue(&mut self, now: Instant, item: PlayItem) {
        let was_idle = self.due.is_none();
        self.items.push_back(item);
        self.finished = false;
        if was_idle {
            self.frame = 0;
            self.resume(now);
        }
        self.skip_empty();
    }

    /// Stops at once; no [`PlayerOutput::Finished`] follows.
    pub fn stop(&mut self) {
        self.items.clear();
        self.frame = 0;
        self.due = None;
        self.finished = false;
    }

    /// Whether something is playing.
    pub fn is_playing(&self) -> bool {
        self.due.is_some()
    }

    /// The next sequence number, for a [`super::dtmf::DtmfSender`] sharing
    /// the stream.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    fn resume(&mut self, now: Instant) {
        // After a pause, the timestamp moves on with the wall clock (RFC
        // 3550 §5.1) and the marker starts a talkspurt.
        // The last packet's audio lasts a frame: the next one is due no
        // earlier than a frame after it, so a playlist that follows another
        // at once (Finished, then play) does not send two frames at once.
        let mut due = now;
        if let Some((at, timestamp)) = self.last_sent {
            due = due.max(at + FRAME);
            let ticks = due.saturating_duration_since(at).as_micros() / 125;
            let ticks = (ticks as u64).clamp(FRAME_SAMPLES as u64, u64::from(u32::MAX / 2));
            self.timestamp = timestamp.wrapping_add(ticks as u32);
        }
        self.marker = true;
        self.due = Some(due);
    }

    fn skip_empty(&mut self) {
        while self.items.front().is_some_and(|i| i.frames() == 0) {
            self.items.pop_front();
        }
        if self.items.is_empty() && self.due.is_some() {
            self.due = None;
            self.finished = true;
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            // Finished is to be reported now.
            return self.last_sent.map(|(at, _)| at).or(self.due);
        }
        self.due
    }

    pub fn poll(&mut self, now: Instant) -> Option<PlayerOutput> {
        if self.finished {
            self.finished = false;
            return Some(PlayerOutput::Finished);
        }
        let due = self.due?;
        if now < due {
            return None;
        }
        if now.saturating_duration_since(due) > MAX_LAG {
            let behind = now.saturating_duration_since(due);
            let frames = (behind.as_micros() / FRAME.as_micros()) as u32;
            self.timestamp = self
                .timestamp
                .wrapping_add(frames.wrapping_mul(FRAME_SAMPLES as u32));
            self.due = Some(due + FRAME * frames);
            self.marker = true;
        }
        let item = self.items.front()?;
        let mut payload = Vec::with_capacity(FRAME_SAMPLES);
        match item {
            PlayItem::Prompt(p) | PlayItem::Loop(p) => {
                p.encode_frame(self.frame, self.law, &mut payload)
            }
            PlayItem::Silence(_) => payload.resize(FRAME_SAMPLES, self.law.silence()),
        }
        let packet = PacketBuilder::new(
            self.law.static_payload_type(),
            self.sequence,
            self.timestamp,
            self.ssrc,
        )
        .marker(self.marker)
        .build(&payload)
        .ok()?;
        self.marker = false;
        self.last_sent = Some((now, self.timestamp));
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        self.due = self.due.map(|d| d + FRAME);
        self.frame += 1;
        let (frames, looping) = (item.frames(), matches!(item, PlayItem::Loop(_)));
        if self.frame >= frames {
            self.frame = 0;
            if !looping {
                self.items.pop_front();
                self.skip_empty();
            }
        }
        Some(PlayerOutput::Packet(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp;

    fn prompt(name: &str, frames: usize, level: i16) -> Arc<Prompt> {
        Arc::new(Prompt::from_samples(
            name,
            vec![level; frames * FRAME_SAMPLES],
        ))
    }

    /// Polls until nothing is due at `until`, jumping to each deadline.
    fn run(player: &mut Player, from: Instant, until: Instant) -> Vec<(Instant, PlayerOutput)> {
        let mut out = Vec::new();
        let mut now = from;
        loop {
            while let Some(o) = player.poll(now) {
                out.push((now, o));
            }
            match player.next_deadline() {
                Some(d) if d <= until => now = d.max(now),
                _ => return out,
            }
        }
    }

    fn packets(out: &[(Instant, PlayerOutput)]) -> Vec<(Instant, rtp::PacketBuilder, Vec<u8>)> {
        out.iter()
            .filter_map(|(t, o)| match o {
                PlayerOutput::Packet(b) => {
                    let p = rtp::parse(b).unwrap();
                    Some((*t, p.to_builder(), p.payload.to_vec()))
                }
                PlayerOutput::Finished => None,
            })
            .collect()
    }

    #[test]
    fn frames_are_160_samples_with_the_last_padded() {
        let p = Prompt::from_samples("p", vec![1000; 170]);
        assert_eq!(p.frame_count(), 2);
        assert_eq!(p.duration(), Duration::from_micros(21_250));
        let mut frame = Vec::new();
        p.encode_frame(1, Law::Alaw, &mut frame);
        assert_eq!(frame.len(), 160);
        assert!(frame[..10].iter().all(|&b| b == Law::Alaw.encode(1000)));
        assert!(frame[10..].iter().all(|&b| b == 0xD5));
        frame.clear();
        p.encode_frame(9, Law::Ulaw, &mut frame);
        assert_eq!(frame, vec![0xFF; 160]);
    }

    #[test]
    fn a_playlist_plays_every_20_ms_in_order_then_finishes() {
        let t0 = Instant::now();
        let mut player = Player::new(Law::Ulaw, 7, 100, 1000);
        player.play(
            t0,
            [
                PlayItem::Prompt(prompt("a", 2, 1000)),
                PlayItem::Silence(Duration::from_millis(40)),
                PlayItem::Prompt(prompt("b", 1, -1000)),
            ],
        );
        let out = run(&mut player, t0, t0 + Duration::from_secs(1));
        let p = packets(&out);
        assert_eq!(p.len(), 5);
        for (i, (t, b, _)) in p.iter().enumerate() {
            assert_eq!(*t, t0 + FRAME * i as u32);
            assert_eq!(b.sequence, 100 + i as u16);
            assert_eq!(b.timestamp, 1000 + 160 * i as u32);
            assert_eq!((b.ssrc, b.payload_type), (7, 0));
            assert_eq!(b.marker, i == 0);
        }
        assert_eq!(p[0].2[0], Law::Ulaw.encode(1000));
        assert_eq!(p[2].2[0], 0xFF);
        assert_eq!(p[4].2[0], Law::Ulaw.encode(-1000));
        assert_eq!(out.last().unwrap().1, PlayerOutput::Finished);
        assert_eq!(
            out.iter()
                .filter(|(_, o)| *o == PlayerOutput::Finished)
                .count(),
            1
        );
        assert!(!player.is_playing());
        assert_eq!(player.next_deadline(), None);
    }

    #[test]
    fn music_loops_until_stopped_and_a_new_playlist_continues_the_stream() {
        let t0 = Instant::now();
        let mut player = Player::new(Law::Alaw, 7, 0, 0);
        player.play(t0, [PlayItem::Loop(prompt("music", 3, 500))]);
        let out = run(&mut player, t0, t0 + Duration::from_millis(190));
        assert_eq!(packets(&out).len(), 10);
        assert!(!out.iter().any(|(_, o)| *o == PlayerOutput::Finished));
        player.stop();
        assert_eq!(player.poll(t0 + Duration::from_secs(5)), None);
        // Half a second later an announcement: the timestamp has moved on by
        // the time that passed, the marker is set, sequence numbers go on.
        let t1 = t0 + Duration::from_millis(180 + 500);
        player.play(t1, [PlayItem::Prompt(prompt("n", 1, 0))]);
        let out = run(&mut player, t1, t1 + Duration::from_secs(1));
        let p = packets(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1.sequence, 10);
        assert_eq!(p[0].1.timestamp, 9 * 160 + 500 * 8);
        assert!(p[0].1.marker);
        assert_eq!(p[0].1.payload_type, 8);
    }

    #[test]
    fn a_late_shell_skips_forward_without_drifting() {
        let t0 = Instant::now();
        let mut player = Player::new(Law::Ulaw, 1, 0, 0);
        player.play(t0, [PlayItem::Prompt(prompt("p", 10, 0))]);
        assert!(player.poll(t0).is_some());
        // Polled 30 ms late: one frame catches up (no skip), on schedule.
        let late = t0 + Duration::from_millis(50);
        assert!(player.poll(late).is_some());
        assert!(player.poll(late).is_some());
        assert_eq!(player.poll(late), None);
        assert_eq!(player.next_deadline(), Some(t0 + Duration::from_millis(60)));
        // 200 ms late: skip forward to the clock.
        let very_late = t0 + Duration::from_millis(260);
        let Some(PlayerOutput::Packet(b)) = player.poll(very_late) else {
            panic!("no packet")
        };
        let p = rtp::parse(&b).unwrap();
        assert!(p.marker);
        assert_eq!(p.sequence, 3);
        assert_eq!(p.timestamp, 260 * 8);
        assert_eq!(
            player.next_deadline(),
            Some(t0 + Duration::from_millis(280))
        );
    }

    #[test]
    fn a_playlist_started_on_finished_keeps_the_20_ms_cadence() {
        // Regression: music started when the announcement's Finished came
        // (in the same instant as its last packet) sent two frames at once.
        let t0 = Instant::now();
        let mut player = Player::new(Law::Ulaw, 1, 0, 0);
        player.play(t0, [PlayItem::Prompt(prompt("a", 2, 0))]);
        let first = run(&mut player, t0, t0 + Duration::from_secs(1));
        let finished_at = first.last().unwrap().0;
        assert_eq!(finished_at, t0 + FRAME);
        player.play(finished_at, [PlayItem::Loop(prompt("music", 1, 0))]);
        assert_eq!(player.poll(finished_at), None);
        assert_eq!(player.next_deadline(), Some(t0 + FRAME * 2));
        let Some(PlayerOutput::Packet(b)) = player.poll(t0 + FRAME * 2) else {
            panic!("no packet")
        };
        let p = rtp::parse(&b).unwrap();
        assert_eq!((p.sequence, p.timestamp, p.marker), (2, 320, true));
    }

    #[test]
    fn enqueue_appends_and_an_empty_playlist_finishes_at_once() {
        let t0 = Instant::now();
        let mut player = Player::new(Law::Ulaw, 1, 0, 0);
        player.play(t0, []);
        assert_eq!(player.poll(t0), Some(PlayerOutput::Finished));
        assert_eq!(player.poll(t0), None);
        player.enqueue(t0, PlayItem::Prompt(prompt("a", 1, 0)));
        player.enqueue(t0, PlayItem::Prompt(prompt("b", 1, 0)));
        let out = run(&mut player, t0, t0 + Duration::from_secs(1));
        assert_eq!(packets(&out).len(), 2);
        assert_eq!(out.last().unwrap().1, PlayerOutput::Finished);
    }

    #[test]
    fn the_library_resolves_names_per_language() {
        let mut library = PromptLibrary::default();
        library.insert("it", Prompt::from_samples("welcome", vec![0; 10]));
        library.insert("en", Prompt::from_samples("welcome", vec![1; 10]));
        library.insert(MUSIC, Prompt::from_samples("hold", vec![2; 10]));
        assert_eq!(library.languages(), vec!["en", "it"]);
        assert_eq!(
            library.resolve("en", &["welcome"]).unwrap()[0].samples()[0],
            1
        );
        let err = library.resolve("it", &["welcome", "goodbye"]).unwrap_err();
        assert!(
            matches!(err, PromptError::Missing { ref name, .. } if name == "goodbye"),
            "{err}"
        );
        assert!(library.get(MUSIC, "hold").is_some());
    }

    #[test]
    fn loading_a_directory_reports_the_broken_file() {
        let dir = std::env::temp_dir().join(format!("ccu-prompts-{}", std::process::id()));
        let it = dir.join("it");
        std::fs::create_dir_all(&it).unwrap();
        std::fs::write(it.join("ok.wav"), wav::write_pcm16(&[1, 2, 3])).unwrap();
        std::fs::write(it.join("notes.txt"), "not a prompt").unwrap();
        let library = PromptLibrary::load_dir(&dir).unwrap();
        assert_eq!(library.len(), 1);
        assert_eq!(library.get("it", "ok").unwrap().samples(), &[1, 2, 3]);
        std::fs::write(it.join("bad.wav"), b"RIFF").unwrap();
        let err = PromptLibrary::load_dir(&dir).unwrap_err();
        assert!(err.to_string().contains("bad.wav"), "{err}");
        std::fs::write(it.join("bad.wav"), wav::write_pcm16(&[])).unwrap();
        assert!(matches!(
            PromptLibrary::load_dir(&dir),
            Err(PromptError::Empty { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            PromptLibrary::load_dir(&dir),
            Err(PromptError::Read { .. })
        ));
    }
}

//! The committed prompt set (config/prompts, made by tools/make-prompts.sh)
//! loads, is complete in every language, and plays as 20 ms G.711 frames.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ccu_channels::media::announce::{number, position_and_wait};
use ccu_channels::media::g711::Law;
use ccu_channels::media::player::{MUSIC, PlayItem, Player, PlayerOutput, Prompt, PromptLibrary};
use ccu_channels::media::rtp;

fn prompts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/prompts")
}

/// Every prompt the IVR example menu, the announcer and the closed path use.
const REQUIRED: &[&str] = &[
    "welcome",
    "menu_anagrafe",
    "menu_tributi",
    "menu_mobilita",
    "menu_sociale",
    "menu_edilizia",
    "menu_polizia_locale",
    "menu_scuola",
    "menu_aziende",
    "menu_urp",
    "menu_language",
    "aziende_acqua",
    "aziende_trasporti",
    "menu_back",
    "invalid",
    "no_input",
    "closed",
    "please_hold",
    "you_are_number",
    "in_queue",
    "wait_is",
    "minute",
    "minutes",
    "less_than_a_minute",
    "callback_offer",
    "callback_confirmed",
    "goodbye",
];

#[test]
fn every_committed_prompt_loads_as_8khz_audio() {
    let library = PromptLibrary::load_dir(&prompts_dir()).expect("the prompt set loads");
    assert_eq!(library.languages(), vec!["en", "it"]);
    let mut total_bytes = 0u64;
    for (language, prompt) in library.iter() {
        let path = prompts_dir()
            .join(language)
            .join(format!("{}.wav", prompt.name()));
        total_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let d = prompt.duration();
        assert!(
            d >= Duration::from_millis(200) && d <= Duration::from_secs(15),
            "{language}/{}: {d:?}",
            prompt.name()
        );
        // Not silence: speech or music reaches a real level.
        let peak = prompt
            .samples()
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap_or(0);
        assert!(peak > 8000, "{language}/{} peaks at {peak}", prompt.name());
    }
    assert!(
        total_bytes > 0 && total_bytes < 4 * 1024 * 1024,
        "{total_bytes} bytes of prompts"
    );
    assert!(
        library
            .get(MUSIC, "hold")
            .is_some_and(|m| m.duration() >= Duration::from_secs(4))
    );
}

#[test]
fn both_languages_have_every_prompt_and_number() {
    let library = PromptLibrary::load_dir(&prompts_dir()).expect("the prompt set loads");
    for language in ["it", "en"] {
        for name in REQUIRED {
            assert!(
                library.get(language, name).is_some(),
                "{language}/{name} is missing"
            );
        }
        for n in 1..=99 {
            library
                .resolve(language, &number(n))
                .unwrap_or_else(|e| panic!("{n} in {language}: {e}"));
        }
        library
            .resolve(
                language,
                &position_and_wait(Some(3), Some(Duration::from_secs(240))),
            )
            .expect("the announcement resolves");
    }
    // The same names in both languages.
    let names = |l: &str| {
        let mut v: Vec<String> = library
            .iter()
            .filter(|(lang, _)| *lang == l)
            .map(|(_, p)| p.name().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("it"), names("en"));
}

#[test]
fn an_announcement_plays_as_continuous_20ms_packets() {
    let library = PromptLibrary::load_dir(&prompts_dir()).expect("the prompt set loads");
    let prompts = library
        .resolve(
            "it",
            &position_and_wait(Some(3), Some(Duration::from_secs(240))),
        )
        .expect("resolves");
    let samples: usize = prompts.iter().map(|p| p.frame_count()).sum();
    let mut player = Player::new(Law::Alaw, 42, 0, 0);
    let t0 = Instant::now();
    player.play(t0, prompts.into_iter().map(PlayItem::Prompt));
    let mut now = t0;
    let mut seen = Vec::new();
    loop {
        match player.poll(now) {
            Some(PlayerOutput::Packet(bytes)) => {
                let p = rtp::parse(&bytes).expect("the player's packets parse");
                assert_eq!(p.payload.len(), 160);
                assert_eq!(p.payload_type, 8);
                seen.push((now, p.sequence, p.timestamp));
            }
            Some(PlayerOutput::Finished) => break,
            None => now = player.next_deadline().expect("a deadline while playing"),
        }
    }
    assert_eq!(seen.len(), samples);
    for (i, (at, seq, ts)) in seen.iter().enumerate() {
        assert_eq!(*at, t0 + Duration::from_millis(20 * i as u64));
        assert_eq!(*seq, i as u16);
        assert_eq!(*ts, 160 * i as u32);
    }
    // The µ-law files are sent as PCMU without loss.
    let welcome = std::fs::read(prompts_dir().join("it/welcome.wav")).expect("read");
    let decoded = Prompt::from_wav("welcome", &welcome).expect("decodes");
    let mut frame = Vec::new();
    decoded.encode_frame(10, Law::Ulaw, &mut frame);
    let data_start = welcome
        .windows(4)
        .position(|w| w == b"data")
        .expect("data chunk")
        + 8;
    let raw = &welcome[data_start + 1600..data_start + 1760];
    let normalise = |b: u8| if b == 0x7F { 0xFF } else { b };
    assert_eq!(frame, raw.iter().map(|&b| normalise(b)).collect::<Vec<_>>());
}

#!/usr/bin/env bash
# Generates the voice prompts in config/prompts/ (run once; the output is
# committed). Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox).
#
#     tools/make-prompts.sh            # writes config/prompts/{it,en,music}
#
# Every prompt is 8 kHz mono 8-bit µ-law WAV (G.711 PCMU, so the player
# sends it without re-encoding and the files stay small), normalised to
# -3 dBFS, leading and trailing silence trimmed and 150 ms of silence added
# at the end, so that prompts composed into one announcement ("you are
# number" "3" "in the queue") flow without long gaps.
#
# The menu prompts follow the demo city's queues in config/default.toml and
# the example menu in docs/media.md. The hold music is synthesised with
# sox: a slow pentatonic arpeggio over a soft pad, eight seconds, starting
# and ending quietly so that it loops without a click.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/config/prompts"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

command -v espeak-ng >/dev/null || { echo "espeak-ng is missing" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox is missing" >&2; exit 1; }

# say VOICE FILE TEXT
say() {
  local voice="$1" file="$2" text="$3"
  espeak-ng -v "$voice" -s 150 -w "$tmp/raw.wav" "$text"
  sox "$tmp/raw.wav" -r 8000 -c 1 -e u-law -b 8 "$file" \
    gain -6 highpass 150 norm -3 \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse \
    pad 0 0.15
}

italian() {
  local d="$out/it"
  mkdir -p "$d"
  say it "$d/welcome.wav" "Benvenuto nel Contact Center Unico del Comune di Monteverde."
  say it "$d/menu_anagrafe.wav" "Per anagrafe e stato civile, prema 1."
  say it "$d/menu_tributi.wav" "Per i tributi locali, IMU e TARI, prema 2."
  say it "$d/menu_mobilita.wav" "Per mobilità, ZTL e permessi, prema 3."
  say it "$d/menu_sociale.wav" "Per i servizi sociali, prema 4."
  say it "$d/menu_edilizia.wav" "Per edilizia privata e SUAP, prema 5."
  say it "$d/menu_polizia_locale.wav" "Per la polizia locale, per richieste non urgenti, prema 6."
  say it "$d/menu_scuola.wav" "Per scuola e servizi educativi, prema 7."
  say it "$d/menu_aziende.wav" "Per acqua, rifiuti e trasporto pubblico, prema 8."
  say it "$d/menu_urp.wav" "Per informazioni generali, prema 0."
  say en "$d/menu_language.wav" "For English, press 9."
  say it "$d/aziende_acqua.wav" "Per acqua e rifiuti: bollette, guasti e ritiro ingombranti, prema 1."
  say it "$d/aziende_trasporti.wav" "Per il trasporto pubblico: abbonamenti, orari e oggetti smarriti, prema 2."
  say it "$d/menu_back.wav" "Per tornare al menu principale, prema asterisco."
  say it "$d/invalid.wav" "La scelta non è valida."
  say it "$d/no_input.wav" "Non abbiamo ricevuto alcuna scelta."
  say it "$d/closed.wav" "Gli uffici sono chiusi in questo momento. Può lasciarci una richiesta con il modulo online sul sito del Comune: le risponderemo appena possibile."
  say it "$d/please_hold.wav" "La preghiamo di restare in linea: un operatore le risponderà appena possibile."
  say it "$d/you_are_number.wav" "Lei è il numero"
  say it "$d/in_queue.wav" "in coda."
  say it "$d/wait_is.wav" "Il tempo di attesa stimato è di"
  say it "$d/minute.wav" "minuto."
  say it "$d/minutes.wav" "minuti."
  say it "$d/less_than_a_minute.wav" "meno di un minuto."
  say it "$d/callback_offer.wav" "Se preferisce essere richiamato, prema 9."
  say it "$d/callback_confirmed.wav" "Grazie. La richiameremo appena un operatore sarà disponibile."
  say it "$d/max_wait.wav" "Ci scusiamo per l'attesa: in questo momento tutti gli operatori sono occupati. La preghiamo di richiamare più tardi, o di scriverci con il modulo online sul sito del Comune."
  say it "$d/callback_dialing.wav" "Richiamata in corso: stiamo chiamando il cittadino, resti in linea."
  say it "$d/callback_no_answer.wav" "Il cittadino non ha risposto. La richiamata sarà ripetuta più tardi."
  say it "$d/voicemail.wav" "Può lasciare un messaggio dopo il segnale acustico: un operatore la richiamerà. Per terminare, riagganci."
  say it "$d/goodbye.wav" "Grazie per aver chiamato. Arrivederci."
  local words=(zero uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici quattordici quindici sedici diciassette diciotto diciannove venti)
  local n
  for n in $(seq 1 20); do say it "$d/number_$n.wav" "${words[$n]}"; done
  local tens=([3]=trenta [4]=quaranta [5]=cinquanta [6]=sessanta [7]=settanta [8]=ottanta [9]=novanta)
  for n in 3 4 5 6 7 8 9; do say it "$d/number_${n}0.wav" "${tens[$n]}"; done
}

english() {
  local d="$out/en"
  mkdir -p "$d"
  say en "$d/welcome.wav" "Welcome to the Contact Center of the City of Monteverde."
  say en "$d/menu_anagrafe.wav" "For the registry office and civil status, press 1."
  say en "$d/menu_tributi.wav" "For local taxes, press 2."
  say en "$d/menu_mobilita.wav" "For mobility, limited traffic zones and permits, press 3."
  say en "$d/menu_sociale.wav" "For social services, press 4."
  say en "$d/menu_edilizia.wav" "For building permits and business services, press 5."
  say en "$d/menu_polizia_locale.wav" "For the local police, for non urgent requests, press 6."
  say en "$d/menu_scuola.wav" "For schools and education services, press 7."
  say en "$d/menu_aziende.wav" "For water, waste and public transport, press 8."
  say en "$d/menu_urp.wav" "For general information, press 0."
  say it "$d/menu_language.wav" "Per l'italiano, prema 9."
  say en "$d/aziende_acqua.wav" "For water and waste: bills, faults and bulky waste collection, press 1."
  say en "$d/aziende_trasporti.wav" "For public transport: passes, timetables and lost property, press 2."
  say en "$d/menu_back.wav" "To go back to the main menu, press star."
  say en "$d/invalid.wav" "That choice is not valid."
  say en "$d/no_input.wav" "We did not receive a choice."
  say en "$d/closed.wav" "Our offices are closed at the moment. You can leave us a request with the online form on the City's website: we will answer as soon as possible."
  say en "$d/please_hold.wav" "Please hold: an operator will answer as soon as possible."
  say en "$d/you_are_number.wav" "You are number"
  say en "$d/in_queue.wav" "in the queue."
  say en "$d/wait_is.wav" "The estimated waiting time is"
  say en "$d/minute.wav" "minute."
  say en "$d/minutes.wav" "minutes."
  say en "$d/less_than_a_minute.wav" "less than a minute."
  say en "$d/callback_offer.wav" "If you would rather be called back, press 9."
  say en "$d/callback_confirmed.wav" "Thank you. We will call you back as soon as an operator is available."
  say en "$d/max_wait.wav" "We are sorry for the wait: all our operators are busy. Please call again later, or write to us with the form on the city's website."
  say en "$d/callback_dialing.wav" "Callback in progress: we are calling the citizen, please hold."
  say en "$d/callback_no_answer.wav" "The citizen did not answer. The callback will be tried again later."
  say en "$d/voicemail.wav" "You may leave a message after the tone: an operator will call you back. To finish, hang up."
  say en "$d/goodbye.wav" "Thank you for calling. Goodbye."
  local words=(zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty)
  local n
  for n in $(seq 1 20); do say en "$d/number_$n.wav" "${words[$n]}"; done
  local tens=([3]=thirty [4]=forty [5]=fifty [6]=sixty [7]=seventy [8]=eighty [9]=ninety)
  for n in 3 4 5 6 7 8 9; do say en "$d/number_${n}0.wav" "${tens[$n]}"; done
}

music() {
  local d="$out/music"
  mkdir -p "$d"
  # A major pentatonic, two bars of four notes each, twice, over a pad.
  local notes=(A3 C#4 E4 F#4 E4 C#4 B3 E4 A3 C#4 E4 A4 F#4 E4 C#4 B3)
  local parts=() i=0 note
  for note in "${notes[@]}"; do
    sox -n -r 8000 -c 1 -b 16 "$tmp/note$i.wav" synth 0.5 pluck "$note" fade q 0.01 0.5 0.25 vol 0.5
    parts+=("$tmp/note$i.wav")
    i=$((i + 1))
  done
  sox "${parts[@]}" "$tmp/melody.wav"
  sox -n -r 8000 -c 1 -b 16 "$tmp/pad.wav" synth 8 sine A2 sine E3 remix - fade h 1 8 1 vol 0.12
  sox -m "$tmp/melody.wav" "$tmp/pad.wav" -r 8000 -c 1 -e u-law -b 8 "$d/hold.wav" \
    norm -6 fade h 0.05 8 0.05
  # The tone before a voice message is recorded: 1 kHz for 0.4 s.
  sox -n -r 8000 -c 1 -e u-law -b 8 "$d/beep.wav" synth 0.4 sine 1000 vol 0.5 fade q 0.01 0.4 0.01
}

italian
english
music
du -sh "$out"

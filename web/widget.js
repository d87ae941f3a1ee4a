// ccu chat widget. Embed with one tag:
//   <script src="https://ccu.example/widget.js" data-topic="urp" defer></script>
// Optional: data-lang="it|en|de|fr", data-title="...". It adds a launcher
// button and a chat panel, talks /ws/chat on the script's own origin, and
// loads its stylesheet from there too (no inline styles: it runs under a
// strict Content-Security-Policy). Every text from the server, operators or
// the citizen is inserted with textContent, never as HTML.
(function () {
  'use strict';
  const script = document.currentScript;
  if (!script || window.__ccuWidget) return;
  window.__ccuWidget = true;
  const origin = new URL(script.src, location.href).origin;
  const wsUrl = origin.replace(/^http/, 'ws') + '/ws/chat';
  const STORE = 'ccu.chat.' + origin;

  const TEXT = {
    it: {
      launcher: 'Chatta con noi', title: 'Chat con il Comune', close: 'Riduci la chat',
      intro: 'Scriva a un operatore. Nome ed e-mail sono facoltativi.',
      topic: 'Argomento', language: 'Lingua', name: 'Nome (facoltativo)', email: 'E-mail (facoltativa)',
      website: 'Lasciare vuoto', start: 'Inizia la chat', connecting: 'Connessione in corso…',
      position: (p) => `Lei è in posizione ${p} nella coda.`,
      wait: (s) => `Attesa stimata: circa ${Math.max(1, Math.round(s / 60))} min.`,
      waitUnknown: 'Un operatore le risponderà appena possibile.',
      assigned: (n) => `${n} ha preso in carico la conversazione.`,
      you: 'Lei', operator: 'Operatore', message: 'Messaggio', send: 'Invia', end: 'Termina la chat',
      typing: "L'operatore sta scrivendo…",
      reference: (r) => `Riferimento: ${r}`,
      lost: 'Connessione persa: riconnessione in corso…', back: 'Connessione ristabilita.',
      webform: 'Compila il modulo online',
      endedCitizen: 'Ha terminato la conversazione.', endedOperator: "L'operatore ha chiuso la conversazione.",
      transcript: 'Ricevere la trascrizione per e-mail', transcriptSend: 'Invia trascrizione',
      transcriptSent: 'La trascrizione le arriverà per e-mail.',
      rating: 'Come valuta questa conversazione?', ratingScale: '1 = pessima, 5 = ottima',
      comment: 'Commento (facoltativo)', rate: 'Invia valutazione', thanks: 'Grazie per la sua valutazione.',
      newChat: 'Nuova chat', expired: 'La conversazione precedente è scaduta. Può iniziarne una nuova.',
      error: 'Si è verificato un errore.', rateLimited: 'Troppe richieste: attenda qualche istante.'
    },
    en: {
      launcher: 'Chat with us', title: 'Chat with the City', close: 'Minimise the chat',
      intro: 'Write to an operator. Name and e-mail are optional.',
      topic: 'Topic', language: 'Language', name: 'Name (optional)', email: 'E-mail (optional)',
      website: 'Leave empty', start: 'Start chat', connecting: 'Connecting…',
      position: (p) => `You are number ${p} in the queue.`,
      wait: (s) => `Estimated wait: about ${Math.max(1, Math.round(s / 60))} min.`,
      waitUnknown: 'An operator will answer as soon as possible.',
      assigned: (n) => `${n} has taken your conversation.`,
      you: 'You', operator: 'Operator', message: 'Message', send: 'Send', end: 'End chat',
      typing: 'The operator is typing…',
      reference: (r) => `Reference: ${r}`,
      lost: 'Connection lost: reconnecting…', back: 'Connection restored.',
      webform: 'Fill in the online form',
      endedCitizen: 'You ended the conversation.', endedOperator: 'The operator ended the conversation.',
      transcript: 'Receive the transcript by e-mail', transcriptSend: 'Send transcript',
      transcriptSent: 'The transcript will reach you by e-mail.',
      rating: 'How would you rate this conversation?', ratingScale: '1 = very poor, 5 = excellent',
      comment: 'Comment (optional)', rate: 'Send rating', thanks: 'Thank you for your rating.',
      newChat: 'New chat', expired: 'The previous conversation has expired. You can start a new one.',
      error: 'Something went wrong.', rateLimited: 'Too many requests: please wait a moment.'
    }
  };
  const LANGUAGES = [['it', 'Italiano'], ['en', 'English'], ['de', 'Deutsch'], ['fr', 'Français']];

  let uiLang = (script.dataset.lang || document.documentElement.lang || 'it').slice(0, 2);
  const tr = () => TEXT[uiLang] || TEXT.en;

  // ---- DOM helpers (text only) ----
  let seq = 0;
  const uid = (name) => `ccu-w-${name}-${++seq}`;
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, '');
      else node.setAttribute(k, String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function field(label, input, hint) {
    input.id = input.id || uid('f');
    const parts = [el('label', { for: input.id, text: label })];
    if (hint) {
      const h = el('span', { class: 'ccu-w-hint', id: uid('h'), text: hint });
      input.setAttribute('aria-describedby', h.id);
      parts.push(h);
    }
    parts.push(input);
    return el('div', { class: 'ccu-w-field' }, ...parts);
  }

  // ---- state ----
  let saved = {};
  try { saved = JSON.parse(sessionStorage.getItem(STORE) || '{}') || {}; } catch (e) { saved = {}; }
  const state = {
    token: saved.token || null,
    reference: saved.reference || null,
    // The last message id this page shows: after a reload the page shows
    // nothing yet, so the resume asks for everything.
    lastId: 0,
    pending: saved.pending || [], // [{client_id, text}] not yet acknowledged
    phase: saved.token ? (saved.phase || 'chat') : 'start', // start | chat | ended | done
    open: !!saved.open,
    shown: new Set(),
    ws: null,
    attempts: 0,
    reconnectTimer: null,
    typingSent: false,
    typingTimer: null
  };
  function persist() {
    if (!state.token) { sessionStorage.removeItem(STORE); return; }
    sessionStorage.setItem(STORE, JSON.stringify({
      token: state.token, reference: state.reference, lastId: state.lastId,
      pending: state.pending, phase: state.phase, open: state.open
    }));
  }

  // ---- stylesheet from our origin ----
  const link = el('link', { rel: 'stylesheet', href: origin + '/static/widget.css' });
  document.head.append(link);

  // ---- building the UI ----
  const root = el('div', { class: 'ccu-w', lang: uiLang });
  const launcher = el('button', { type: 'button', class: 'ccu-w-launcher', id: 'ccu-chat-launcher', 'aria-expanded': 'false', 'aria-controls': 'ccu-chat-panel' });
  const panel = el('section', { class: 'ccu-w-panel', id: 'ccu-chat-panel', hidden: true, 'aria-labelledby': 'ccu-chat-title' });
  root.append(launcher, panel);

  const title = el('h2', { id: 'ccu-chat-title', class: 'ccu-w-title' });
  const closeBtn = el('button', { type: 'button', class: 'ccu-w-close', id: 'ccu-chat-minimise' });
  closeBtn.append(el('span', { 'aria-hidden': 'true', text: '×' }));
  const closeLabel = el('span', { class: 'ccu-w-sr' });
  closeBtn.append(closeLabel);
  const head = el('div', { class: 'ccu-w-head' }, title, closeBtn);
  // Announcements (queue position, assignment, connection) for screen readers.
  const status = el('p', { class: 'ccu-w-status', id: 'ccu-chat-status', role: 'status', 'aria-live': 'polite' });
  const body = el('div', { class: 'ccu-w-body' });
  panel.append(head, status, body);

  function setStatus(text) { status.textContent = text || ''; }

  function render() {
    root.lang = uiLang;
    launcher.textContent = tr().launcher;
    title.textContent = tr().title;
    closeLabel.textContent = tr().close;
    body.replaceChildren();
    if (state.phase === 'start') body.append(startView());
    else if (state.phase === 'chat') body.append(chatView());
    else if (state.phase === 'ended') body.append(chatView(), endedView());
    else if (state.phase === 'closed') body.append(closedView());
    else body.append(doneView());
  }

  // Start form
  let topics = [];
  let closedInfo = null;
  function startView() {
    const form = el('form', { class: 'ccu-w-form', id: 'ccu-chat-start', novalidate: true });
    const topic = el('select', { name: 'topic', id: 'ccu-chat-topic', required: true });
    const wanted = script.dataset.topic;
    const list = topics.length ? topics : [{ id: wanted || 'urp', name: wanted || 'URP' }];
    for (const t of list) topic.append(el('option', { value: t.id, text: t.name, selected: t.id === wanted }));
    const language = el('select', { name: 'language', id: 'ccu-chat-language' });
    for (const [code, name] of LANGUAGES) language.append(el('option', { value: code, text: name, lang: code, selected: code === uiLang }));
    language.addEventListener('change', () => {
      if (TEXT[language.value]) { uiLang = language.value; render(); document.getElementById('ccu-chat-language').focus(); }
    });
    const name = el('input', { type: 'text', name: 'name', id: 'ccu-chat-name', autocomplete: 'name', maxlength: 100 });
    const email = el('input', { type: 'email', name: 'email', id: 'ccu-chat-email', autocomplete: 'email', maxlength: 254 });
    // Honeypot: hidden from people (and from assistive technology), filled by bots.
    const website = el('input', { type: 'text', name: 'website', id: 'ccu-chat-website', tabindex: '-1', autocomplete: 'off' });
    const trap = el('div', { class: 'ccu-w-hp', 'aria-hidden': 'true' }, el('label', { for: website.id, text: tr().website }), website);
    const submit = el('button', { type: 'submit', class: 'ccu-w-primary', id: 'ccu-chat-start-button', text: tr().start });
    form.append(el('p', { text: tr().intro }), field(tr().topic, topic), field(tr().language, language), field(tr().name, name), field(tr().email, email), trap, submit);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      submit.disabled = true;
      setStatus(tr().connecting);
      const frame = { type: 'start', topic: topic.value, language: language.value };
      if (name.value.trim()) frame.name = name.value.trim();
      if (email.value.trim()) frame.email = email.value.trim();
      if (website.value) frame.website = website.value;
      connect(frame);
    });
    return form;
  }

  // Conversation
  const messages = el('ol', { class: 'ccu-w-messages', id: 'ccu-chat-messages', 'aria-live': 'polite', 'aria-relevant': 'additions' });
  const typing = el('p', { class: 'ccu-w-typing', id: 'ccu-chat-typing', 'aria-live': 'polite' });
  const referenceLine = el('p', { class: 'ccu-w-ref', id: 'ccu-chat-reference' });
  function chatView() {
    const wrap = el('div', { class: 'ccu-w-chat' });
    referenceLine.textContent = state.reference ? tr().reference(state.reference) : '';
    wrap.append(referenceLine, messages, typing);
    if (state.phase === 'chat') {
      const form = el('form', { class: 'ccu-w-composer', id: 'ccu-chat-composer' });
      const input = el('textarea', { name: 'text', id: 'ccu-chat-input', rows: 2, maxlength: 4000, required: true });
      const send = el('button', { type: 'submit', class: 'ccu-w-primary', id: 'ccu-chat-send', text: tr().send });
      form.append(field(tr().message, input), send);
      input.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
      });
      input.addEventListener('input', () => typingChanged(input.value.length > 0));
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const text = input.value.trim();
        if (!text) return;
        input.value = '';
        typingChanged(false);
        sendMessage(text);
        input.focus();
      });
      const end = el('button', { type: 'button', class: 'ccu-w-secondary', id: 'ccu-chat-end', text: tr().end });
      end.addEventListener('click', () => send({ type: 'end' }));
      wrap.append(form, end);
    }
    return wrap;
  }

  function addMessage(m) {
    if (m.id !== undefined && m.id !== null) {
      if (state.shown.has(m.id)) return;
      state.shown.add(m.id);
      if (m.id > state.lastId) { state.lastId = m.id; persist(); }
    }
    const mine = m.from === 'citizen';
    const who = mine ? tr().you : (m.name || tr().operator);
    const li = el('li', { class: 'ccu-w-msg ' + (mine ? 'ccu-w-mine' : 'ccu-w-theirs') });
    if (m.id !== undefined && m.id !== null) li.dataset.id = m.id;
    if (m.client_id) li.dataset.clientId = m.client_id;
    if (m.pending) li.classList.add('ccu-w-pending');
    li.append(el('span', { class: 'ccu-w-who', text: who }), el('span', { class: 'ccu-w-text', text: m.text }));
    messages.append(li);
    messages.scrollTop = messages.scrollHeight;
    if (!mine) typing.textContent = '';
  }
  function addNote(text) {
    messages.append(el('li', { class: 'ccu-w-note', text }));
    messages.scrollTop = messages.scrollHeight;
  }

  function newClientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function sendMessage(text) {
    const item = { client_id: newClientId(), text };
    state.pending.push(item);
    persist();
    addMessage({ from: 'citizen', text, client_id: item.client_id, pending: true });
    send({ type: 'message', client_id: item.client_id, text });
  }
  function typingChanged(active) {
    clearTimeout(state.typingTimer);
    if (active) state.typingTimer = setTimeout(() => typingChanged(false), 4000);
    if (active !== state.typingSent) {
      state.typingSent = active;
      send({ type: 'typing', active });
    }
  }

  function closedView() {
    const box = el('div', { class: 'ccu-w-closed', id: 'ccu-chat-closed' });
    box.append(el('p', { text: (closedInfo && closedInfo.message) || '' }));
    let href = origin + '/request';
    try {
      const url = new URL((closedInfo && closedInfo.webform) || '/request', origin);
      if (url.protocol === 'https:' || url.protocol === 'http:') href = url.href;
    } catch (e) { /* keep the default */ }
    box.append(el('a', { href, class: 'ccu-w-primary', id: 'ccu-chat-webform', text: tr().webform }));
    const again = el('button', { type: 'button', class: 'ccu-w-secondary', text: tr().newChat });
    again.addEventListener('click', () => { state.phase = 'start'; render(); });
    box.append(again);
    return box;
  }

  function endedView() {
    const box = el('div', { class: 'ccu-w-ended', id: 'ccu-chat-ended' });
    const tform = el('form', { id: 'ccu-chat-transcript' });
    const temail = el('input', { type: 'email', name: 'email', autocomplete: 'email', required: true, maxlength: 254 });
    tform.append(field(tr().transcript, temail), el('button', { type: 'submit', class: 'ccu-w-secondary', text: tr().transcriptSend }));
    tform.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!temail.value.trim()) return;
      send({ type: 'transcript', email: temail.value.trim() });
      tform.replaceChildren(el('p', { text: tr().transcriptSent }));
    });
    const rform = el('form', { id: 'ccu-chat-rating' });
    const fieldset = el('fieldset', {}, el('legend', { text: tr().rating }), el('span', { class: 'ccu-w-hint', text: tr().ratingScale }));
    const stars = el('div', { class: 'ccu-w-stars' });
    for (let i = 1; i <= 5; i++) {
      const id = uid('score');
      stars.append(el('input', { type: 'radio', name: 'score', value: i, id, required: true }), el('label', { for: id, text: String(i) }));
    }
    fieldset.append(stars);
    const comment = el('textarea', { name: 'comment', maxlength: 1000, rows: 2 });
    rform.append(fieldset, field(tr().comment, comment), el('button', { type: 'submit', class: 'ccu-w-primary', text: tr().rate }));
    rform.addEventListener('submit', (e) => {
      e.preventDefault();
      const chosen = rform.querySelector('input[name=score]:checked');
      if (!chosen) return;
      const frame = { type: 'rating', score: Number(chosen.value) };
      if (comment.value.trim()) frame.comment = comment.value.trim();
      send(frame);
      state.phase = 'done';
      persist();
      render();
      setStatus(tr().thanks);
    });
    box.append(tform, rform);
    return box;
  }

  function doneView() {
    const box = el('div', { class: 'ccu-w-done' }, el('p', { text: tr().thanks }));
    const again = el('button', { type: 'button', class: 'ccu-w-secondary', text: tr().newChat });
    again.addEventListener('click', () => { reset(); render(); });
    box.append(again);
    return box;
  }

  function reset() {
    if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
    clearTimeout(state.reconnectTimer);
    state.token = null; state.reference = null; state.lastId = 0; state.pending = [];
    state.phase = 'start'; state.shown.clear(); messages.replaceChildren(); typing.textContent = '';
    persist();
  }

  // ---- the socket ----
  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function connect(first) {
    clearTimeout(state.reconnectTimer);
    let ws;
    try { ws = new WebSocket(wsUrl); } catch (e) { scheduleReconnect(); return; }
    state.ws = ws;
    ws.onopen = () => {
      if (first) ws.send(JSON.stringify(first));
      else if (state.token) ws.send(JSON.stringify({ type: 'resume', token: state.token, last_id: state.lastId || undefined }));
    };
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      handle(frame);
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (state.token && (state.phase === 'chat' || state.phase === 'ended')) {
        setStatus(tr().lost);
        scheduleReconnect();
      } else if (state.phase === 'start') {
        const b = document.getElementById('ccu-chat-start-button');
        if (b) b.disabled = false;
      }
    };
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    // Exponential backoff with jitter, at most 20 s between attempts.
    const delay = Math.min(20000, 500 * 2 ** state.attempts) * (0.75 + Math.random() / 2);
    state.attempts = Math.min(state.attempts + 1, 10);
    state.reconnectTimer = setTimeout(() => connect(null), delay);
  }

  function handle(f) {
    switch (f.type) {
      case 'started':
        state.token = f.token; state.reference = f.reference; state.phase = 'chat'; state.attempts = 0;
        persist(); render(); setStatus(tr().waitUnknown);
        focusComposer();
        break;
      case 'resumed': {
        const wasLost = state.attempts > 0;
        state.attempts = 0;
        if (f.reference) state.reference = f.reference;
        if (f.state === 'closed' || f.state === 'wrap_up' || f.state === 'abandoned') {
          if (state.phase === 'chat') state.phase = 'ended';
        }
        persist(); render();
        if (wasLost) setStatus(tr().back);
        // Messages the server has not acknowledged are sent again; the
        // client_id makes the retry idempotent.
        for (const p of state.pending) send({ type: 'message', client_id: p.client_id, text: p.text });
        break;
      }
      case 'closed':
        closedInfo = f; state.phase = 'closed'; state.token = null; persist(); render();
        setStatus(f.message || '');
        break;
      case 'queue': {
        const parts = [];
        if (f.position) parts.push(tr().position(f.position));
        parts.push(f.estimated_wait_seconds === null || f.estimated_wait_seconds === undefined ? tr().waitUnknown : tr().wait(f.estimated_wait_seconds));
        setStatus(parts.join(' '));
        const q = document.getElementById('ccu-chat-queue');
        if (q) q.textContent = parts.join(' ');
        break;
      }
      case 'assigned':
        setStatus(tr().assigned(f.operator || tr().operator));
        addNote(tr().assigned(f.operator || tr().operator));
        break;
      case 'ack': {
        state.pending = state.pending.filter((p) => p.client_id !== f.client_id);
        const li = messages.querySelector(`li[data-client-id="${CSS.escape(String(f.client_id))}"]`);
        if (li) { li.classList.remove('ccu-w-pending'); li.dataset.id = f.id; }
        state.shown.add(f.id);
        if (f.id > state.lastId) state.lastId = f.id;
        persist();
        break;
      }
      case 'message':
        addMessage({ id: f.id, from: f.from, name: f.name, text: f.text });
        break;
      case 'transcript_queued':
        setStatus(tr().transcriptSent);
        break;
      case 'rated':
        setStatus(tr().thanks);
        break;
      case 'typing':
        typing.textContent = f.active ? tr().typing : '';
        break;
      case 'ended':
        state.phase = 'ended'; state.pending = []; persist(); render();
        setStatus(f.by === 'citizen' ? tr().endedCitizen : tr().endedOperator);
        addNote(f.by === 'citizen' ? tr().endedCitizen : tr().endedOperator);
        break;
      case 'error':
        if (f.field === 'token' || f.code === 'bad_token' || f.code === 'not_started' || /^not_started/.test(f.message || '')) {
          reset(); render(); setStatus(tr().expired);
        } else {
          setStatus(f.code === 'rate_limited' ? tr().rateLimited : (f.message || tr().error));
          const b = document.getElementById('ccu-chat-start-button');
          if (b) b.disabled = false;
        }
        break;
      default:
        break;
    }
  }

  function focusComposer() {
    const input = document.getElementById('ccu-chat-input');
    if (input && state.open) input.focus();
  }

  function setOpen(open) {
    state.open = open;
    panel.hidden = !open;
    launcher.setAttribute('aria-expanded', String(open));
    persist();
    if (open) {
      const first = panel.querySelector('select, textarea, input:not([tabindex="-1"]), button:not(.ccu-w-close)');
      if (first) first.focus();
    } else {
      launcher.focus();
    }
  }
  launcher.addEventListener('click', () => setOpen(panel.hidden));
  closeBtn.addEventListener('click', () => setOpen(false));
  panel.addEventListener('keydown', (e) => { if (e.key === 'Escape') setOpen(false); });

  function mount() {
    document.body.append(root);
    render();
    if (state.open) { panel.hidden = false; launcher.setAttribute('aria-expanded', 'true'); }
    // Back after a reload: resume the same conversation.
    if (state.token && state.phase !== 'done') {
      for (const p of state.pending) addMessage({ from: 'citizen', text: p.text, client_id: p.client_id, pending: true });
      connect(null);
    }
    fetch(origin + '/widget/topics', { credentials: 'omit' })
      .then((r) => (r.ok ? r.json() : []))
      .then((list) => {
        if (Array.isArray(list) && list.length) {
          topics = list;
          if (state.phase === 'start') {
            const focused = document.activeElement && document.activeElement.id;
            render();
            if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
          }
        }
      })
      .catch(() => {});
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount);
  else mount();
})();

// ccu operator console: /ws/operator (docs/websocket.md). The server is the
// memory: on every (re)connection `hello` carries the presence, every open
// conversation with its messages and the pending offers, and the page
// rebuilds from it, so a reload or a lost connection loses nothing.
// Every text from citizens, operators and the server goes in with
// textContent (ccu.el), never as HTML.
(function () {
  'use strict';
  const { t, el } = window.ccu;

  const state = {
    ws: null,
    attempts: 0,
    me: null,
    presence: null,
    queues: new Map(), // id -> queue view
    conversations: new Map(), // id -> view
    offers: new Map(), // offer id -> view
    selected: Number(sessionStorage.getItem('ccu.console.selected')) || null,
    canned: []
  };

  const $ = (id) => document.getElementById(id);
  function announce(text) { $('announce').textContent = text; }

  // ---- normalisation of the server's shapes ----
  function fromOf(m) {
    if (m.from) return m.from;
    if (m.direction === 'inbound') return 'citizen';
    if (m.direction === 'outbound') return 'operator';
    return 'system';
  }
  function normMessage(m) {
    return { id: m.id, from: fromOf(m), name: m.name, text: m.text !== undefined ? m.text : (m.body || ''), at: m.at, client_id: m.client_id };
  }
  function queueName(id) {
    const q = state.queues.get(id);
    return q ? q.name : (id || '');
  }
  function time(ms) {
    if (!ms) return '';
    return new Date(ms).toLocaleTimeString(window.ccu.lang === 'en' ? 'en-GB' : 'it-IT', { hour: '2-digit', minute: '2-digit' });
  }
  function dateTime(ms) {
    if (!ms) return '';
    return new Date(ms).toLocaleString(window.ccu.lang === 'en' ? 'en-GB' : 'it-IT', { dateStyle: 'short', timeStyle: 'short' });
  }

  // ---- socket ----
  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify(frame));
      return true;
    }
    announce(t('conn.lost'));
    return false;
  }

  function connect() {
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws/operator');
    state.ws = ws;
    ws.onopen = () => {
      state.attempts = 0;
      $('connection').textContent = t('conn.ok');
      $('connection').className = 'status-line conn-ok';
    };
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      handle(frame);
    };
    ws.onclose = async () => {
      if (state.ws !== ws) return;
      state.ws = null;
      $('connection').textContent = t('conn.lost');
      $('connection').className = 'status-line conn-lost';
      // A session that ended (logout elsewhere, expiry) goes back to login.
      try {
        const r = await fetch('/api/v1/me', { credentials: 'same-origin' });
        if (r.status === 401) { location.assign('/?next=/console'); return; }
      } catch (e) { /* the server is down: retry below */ }
      const delay = Math.min(15000, 500 * 2 ** state.attempts) * (0.75 + Math.random() / 2);
      state.attempts = Math.min(state.attempts + 1, 10);
      setTimeout(connect, delay);
    };
  }

  function handle(f) {
    switch (f.type) {
      case 'hello': return onHello(f);
      case 'presence': return setPresence(f.presence);
      case 'offer': return addOffer(f);
      case 'offer_withdrawn': return removeOffer(f.offer, t('offer.withdrawn'));
      case 'assigned': return onAssigned(f);
      case 'message': return onMessage(f);
      case 'ack': return onAck(f);
      case 'typing': return onTyping(f);
      case 'ended': return onEnded(f);
      case 'wrap_up': return onWrapUp(f);
      case 'closed': return removeConversation(f.conversation_id);
      case 'error': announce(`${t('error')}: ${f.message || f.code}`); showError(f); return undefined;
      default: return undefined;
    }
  }

  function showError(f) {
    const view = state.conversations.get(state.selected);
    if (view) view.errorLine.textContent = `${t('error')}: ${f.message || f.code}`;
  }

  function onHello(f) {
    if (f.user) { state.me = f.user; $('user-name').textContent = f.user.display_name || f.user.username || ''; }
    for (const q of f.queues || []) if (!state.queues.has(q.id)) state.queues.set(q.id, q);
    setPresence(f.presence || { presence: 'offline' });
    // Rebuild everything from what the server holds.
    for (const id of [...state.offers.keys()]) removeOffer(id);
    for (const id of [...state.conversations.keys()]) removeConversation(id, true);
    for (const item of f.conversations || []) addConversation(item, false);
    for (const offer of f.offers || []) addOffer(offer);
    const keep = state.conversations.has(state.selected) ? state.selected : (state.conversations.keys().next().value || null);
    select(keep, false);
  }

  // ---- presence ----
  function setPresence(raw) {
    state.presenceRaw = raw;
    const p = window.ccu.presenceOf(raw);
    const presence = p.presence || 'offline';
    state.presence = presence;
    const badge = $('presence-badge');
    const shown = p.status && p.status !== presence && p.status !== 'idle' && p.status !== 'offline' ? p.status : presence;
    badge.className = `presence-badge presence-${shown}`;
    badge.textContent = t(`presence.${shown}`) + (p.reason ? ` (${p.reason})` : '');
    badge.dataset.presence = presence;
    const sel = $('presence-select');
    if ([...sel.options].some((o) => o.value === presence)) sel.value = presence;
    $('reason-field').hidden = sel.value !== 'break';
    showPresenceSince();
  }

  // Time in the current presence, kept current by a slow clock.
  function showPresenceSince() {
    const since = state.presenceRaw && state.presenceRaw.since;
    const badge = $('presence-badge');
    badge.title = since ? `${t('presence.since')} ${dateTime(since)}` : '';
    badge.dataset.since = since ? window.ccu.duration((Date.now() - since) / 1000) : '';
  }
  setInterval(showPresenceSince, 15000);

  // Colleagues for a transfer: name, live presence, conversations in hand.
  async function loadColleagues(select) {
    try {
      const r = await fetch('/api/v1/operators', { credentials: 'same-origin' });
      if (!r.ok) return;
      const list = await r.json();
      const keep = select.value;
      select.replaceChildren(el('option', { value: '', text: '—' }));
      const rank = (c) => { const k = window.ccu.presenceOf(c).presence; return k === 'available' ? 0 : k === 'offline' ? 2 : 1; };
      list.sort((a, b) => rank(a) - rank(b) || a.display_name.localeCompare(b.display_name));
      for (const c of list) {
        const p = window.ccu.presenceOf(c);
        const label = `${c.display_name} · ${t(`presence.${p.presence || 'offline'}`)}` + (c.active ? ` · ${c.active}` : '');
        select.append(el('option', { value: String(c.id), text: label }));
      }
      select.value = keep;
    } catch (_) { /* offline: the queue list still works */ }
  }

  // ---- offers ----
  function addOffer(f) {
    const offerId = f.offer;
    removeOffer(offerId);
    const c = f.conversation || {};
    const contact = c.contact || {};
    const received = Date.now();
    const countdown = el('span', { class: 'countdown', 'aria-live': 'off' });
    const accept = el('button', { type: 'button', class: 'offer-accept', i18n: 'offer.accept' });
    const decline = el('button', { type: 'button', class: 'secondary offer-decline', i18n: 'offer.decline' });
    const waited = el('dd', {});
    const card = el('article', { class: 'card offer', 'data-offer': offerId, 'aria-label': t('offer.title') },
      el('h3', { i18n: 'offer.title' }),
      el('dl', { class: 'facts' },
        el('dt', { i18n: 'offer.topic' }), el('dd', { text: c.queue_name || queueName(c.queue || c.queue_id) }),
        el('dt', { i18n: 'offer.channel' }), el('dd', { text: t(`channel.${c.channel}`) }),
        el('dt', { i18n: 'offer.contact' }), el('dd', { text: contact.name || contact.email || contact.phone || t('citizen.anonymous') }),
        c.subject ? el('dt', { i18n: 'subject' }) : null, c.subject ? el('dd', { text: c.subject }) : null,
        el('dt', { i18n: 'offer.waited' }), waited,
        el('dt', { i18n: 'reference' }), el('dd', { text: c.reference || '' })),
      el('p', {}, el('span', { i18n: 'offer.expires' }), ' ', countdown),
      el('div', { class: 'row' }, accept, decline));
    function tick() {
      const left = Math.max(0, Math.ceil((f.expires_at - Date.now()) / 1000));
      countdown.textContent = `${left} ${t('seconds')}`;
      waited.textContent = window.ccu.duration(((c.waited_ms || 0) + Date.now() - received) / 1000);
      if (left <= 0) { accept.disabled = true; decline.disabled = true; }
    }
    tick();
    const timer = setInterval(tick, 1000);
    accept.addEventListener('click', () => { accept.disabled = true; decline.disabled = true; send({ type: 'accept', offer: offerId }); });
    decline.addEventListener('click', () => { accept.disabled = true; decline.disabled = true; if (send({ type: 'decline', offer: offerId })) removeOffer(offerId); });
    state.offers.set(offerId, { card, timer, conversationId: c.id });
    $('offers').append(card);
    $('offers-empty').hidden = true;
    if (document.activeElement === document.body || !document.activeElement) accept.focus();
  }
  function removeOffer(id, why) {
    const view = state.offers.get(id);
    if (!view) return;
    clearInterval(view.timer);
    const hadFocus = view.card.contains(document.activeElement);
    view.card.remove();
    state.offers.delete(id);
    $('offers-empty').hidden = state.offers.size > 0;
    if (why) announce(why);
    if (hadFocus) $('offers-title').setAttribute('tabindex', '-1'), $('offers-title').focus();
  }

  // ---- conversations ----
  function onAssigned(f) {
    const item = f.conversation || f;
    const c = item.conversation || item;
    for (const [id, offer] of state.offers) if (offer.conversationId === c.id) removeOffer(id);
    addConversation(item, true);
  }

  function addConversation(item, focus) {
    const c = item.conversation || item;
    const id = c.id;
    removeConversation(id, true);
    const view = {
      id,
      conv: c,
      contact: item.contact || c.contact || {},
      history: item.history || [],
      shown: new Set(),
      ended: false,
      typingSent: false,
      typingTimer: null,
      unread: 0
    };
    const label = view.contact.name || c.reference || `#${id}`;
    view.unreadBadge = el('span', { class: 'unread', hidden: true });
    view.tab = el('button', { type: 'button', role: 'tab', id: `tab-${id}`, 'aria-controls': `panel-${id}`, 'aria-selected': 'false', tabindex: '-1', 'data-conversation': id },
      `${label} · ${t(`channel.${c.channel}`)}`, view.unreadBadge);
    view.tab.addEventListener('click', () => select(id, true));
    view.tab.addEventListener('keydown', onTabKey);

    view.list = el('ol', { class: 'messages', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': t('conversations') });
    view.typing = el('p', { class: 'typing', 'aria-live': 'polite' });
    view.errorLine = el('p', { class: 'error', role: 'alert' });
    const input = el('textarea', { id: `reply-${id}`, name: 'text', maxlength: 4000, rows: 3 });
    view.input = input;
    const sendButton = el('button', { type: 'submit', i18n: 'send' });
    view.composer = el('form', { class: 'composer' },
      el('div', { class: 'grow' }, el('label', { for: input.id, i18n: 'reply' }), input), sendButton);
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); view.composer.requestSubmit(); } });
    input.addEventListener('input', () => typing(view, input.value.length > 0));
    view.composer.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text || view.ended) return;
      const clientId = (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
      if (!send({ type: 'message', conversation_id: id, client_id: clientId, text })) return;
      input.value = '';
      typing(view, false);
      appendMessage(view, { from: 'operator', name: state.me && state.me.display_name, text, client_id: clientId, pending: true });
    });

    view.endButton = el('button', { type: 'button', class: 'danger end-conversation', i18n: 'end' });
    view.endButton.addEventListener('click', () => send({ type: 'end', conversation_id: id }));

    // Transfer
    const tq = el('select', { id: `transfer-queue-${id}` }, el('option', { value: '', text: '—' }));
    for (const q of state.queues.values()) tq.append(el('option', { value: q.id, text: q.name }));
    // Colleagues with their live presence, loaded each time the box opens.
    const to = el('select', { id: `transfer-operator-${id}` }, el('option', { value: '', text: '—' }));
    const transfer = el('form', { class: 'row transfer' },
      el('div', {}, el('label', { for: tq.id, i18n: 'transfer.queue' }), tq),
      el('div', {}, el('label', { for: to.id, i18n: 'transfer.operator' }), to),
      el('button', { type: 'submit', class: 'secondary', i18n: 'transfer.go' }));
    transfer.addEventListener('submit', (e) => {
      e.preventDefault();
      const frame = { type: 'transfer', conversation_id: id };
      if (to.value) frame.operator = Number(to.value);
      else if (tq.value) frame.queue = tq.value;
      else return;
      send(frame);
    });
    view.transfer = el('details', { class: 'transfer-box' }, el('summary', { i18n: 'transfer' }), transfer);
    view.transfer.addEventListener('toggle', () => { if (view.transfer.open) loadColleagues(to); });

    // Wrap-up (shown on `wrap_up`)
    view.wrapCode = el('select', { id: `wrapup-code-${id}`, required: true });
    view.wrapNote = el('textarea', { id: `wrapup-note-${id}`, rows: 2, maxlength: 1000 });
    view.wrapUntil = el('span', { class: 'countdown', 'aria-live': 'off' });
    view.wrapup = el('form', { class: 'card wrapup', hidden: true },
      el('h3', { i18n: 'wrapup' }),
      el('p', {}, el('span', { i18n: 'wrapup.until' }), ' ', view.wrapUntil),
      el('label', { for: view.wrapCode.id, i18n: 'wrapup.code' }), view.wrapCode,
      el('label', { for: view.wrapNote.id, i18n: 'wrapup.note' }), view.wrapNote,
      el('p', {}, el('button', { type: 'submit', i18n: 'wrapup.save' })));
    view.wrapup.addEventListener('submit', (e) => {
      e.preventDefault();
      if (!view.wrapCode.value) return;
      const frame = { type: 'wrap_up', conversation_id: id, code: view.wrapCode.value };
      if (view.wrapNote.value.trim()) frame.note = view.wrapNote.value.trim();
      send(frame);
    });

    view.panel = el('div', { role: 'tabpanel', id: `panel-${id}`, 'aria-labelledby': view.tab.id, hidden: true, 'data-conversation': id },
      el('p', { class: 'hint' }, `${t('reference')}: ${c.reference || ''} · ${queueName(c.queue || c.queue_id)}${c.subject ? ' · ' + c.subject : ''}`),
      view.list, view.typing, view.errorLine, view.composer,
      el('div', { class: 'row' }, view.endButton), view.transfer, view.wrapup);

    state.conversations.set(id, view);
    $('tabs').append(view.tab);
    $('panels').append(view.panel);
    $('conversations-empty').hidden = true;
    for (const m of item.messages || []) appendMessage(view, normMessage(m));
    if (c.state === 'wrap_up') onWrapUp({ conversation_id: id, codes: item.wrap_up_codes || [] });
    if (focus || state.selected === null) select(id, focus);
  }

  function removeConversation(id, silent) {
    const view = state.conversations.get(id);
    if (!view) return;
    clearInterval(view.wrapTimer);
    view.tab.remove();
    view.panel.remove();
    state.conversations.delete(id);
    $('conversations-empty').hidden = state.conversations.size > 0;
    if (!silent) announce(t('closed'));
    if (state.selected === id) {
      const next = state.conversations.keys().next().value || null;
      select(next, !silent && next !== null);
    }
  }

  function select(id, focus) {
    state.selected = id;
    if (id === null) sessionStorage.removeItem('ccu.console.selected');
    else sessionStorage.setItem('ccu.console.selected', String(id));
    for (const [vid, view] of state.conversations) {
      const on = vid === id;
      view.tab.setAttribute('aria-selected', String(on));
      view.tab.tabIndex = on ? 0 : -1;
      view.panel.hidden = !on;
      if (on) { view.unread = 0; view.unreadBadge.hidden = true; }
    }
    renderCitizen();
    const view = state.conversations.get(id);
    if (view && focus) view.tab.focus();
  }

  function onTabKey(e) {
    const tabs = [...$('tabs').querySelectorAll('[role=tab]')];
    const i = tabs.indexOf(e.currentTarget);
    let next = null;
    if (e.key === 'ArrowRight') next = tabs[(i + 1) % tabs.length];
    else if (e.key === 'ArrowLeft') next = tabs[(i - 1 + tabs.length) % tabs.length];
    else if (e.key === 'Home') next = tabs[0];
    else if (e.key === 'End') next = tabs[tabs.length - 1];
    if (next) { e.preventDefault(); select(Number(next.dataset.conversation), true); }
  }

  function appendMessage(view, m) {
    if (m.id !== undefined && m.id !== null) {
      if (view.shown.has(m.id)) return;
      // Our own line coming back before its ack: attach to the pending one.
      if (m.from === 'operator') {
        const pending = [...view.list.querySelectorAll('li.pending')].find((li) => li.dataset.text === m.text);
        if (pending) { pending.classList.remove('pending'); pending.dataset.id = m.id; view.shown.add(m.id); return; }
      }
      view.shown.add(m.id);
    }
    const who = m.from === 'citizen' ? (view.contact.name || t('citizen')) : m.from === 'operator' ? (m.name || (state.me && state.me.display_name) || '') : '';
    const li = el('li', { class: `from-${m.from}${m.pending ? ' pending' : ''}` },
      el('span', { class: 'meta', text: `${who}${m.at ? ' · ' + time(m.at) : ''}` }),
      el('span', { class: 'text', text: m.text }));
    if (m.id !== undefined && m.id !== null) li.dataset.id = m.id;
    if (m.client_id) li.dataset.clientId = m.client_id;
    if (m.pending) li.dataset.text = m.text;
    view.list.append(li);
    view.list.scrollTop = view.list.scrollHeight;
    if (m.from === 'citizen') view.typing.textContent = '';
  }

  function onMessage(f) {
    const view = state.conversations.get(f.conversation_id);
    if (!view) return;
    appendMessage(view, normMessage(f));
    if (state.selected !== view.id && fromOf(f) === 'citizen') {
      view.unread += 1;
      view.unreadBadge.textContent = String(view.unread);
      view.unreadBadge.hidden = false;
    }
  }

  function onAck(f) {
    for (const view of state.conversations.values()) {
      const li = view.list.querySelector(`li[data-client-id="${CSS.escape(String(f.client_id))}"]`);
      if (li) {
        li.classList.remove('pending');
        li.dataset.id = f.id;
        view.shown.add(f.id);
        return;
      }
    }
  }

  function onTyping(f) {
    const view = state.conversations.get(f.conversation_id);
    if (view) view.typing.textContent = f.active ? t('typing.citizen') : '';
  }

  function typing(view, active) {
    clearTimeout(view.typingTimer);
    if (active) view.typingTimer = setTimeout(() => typing(view, false), 4000);
    if (active !== view.typingSent) {
      view.typingSent = active;
      send({ type: 'typing', conversation_id: view.id, active });
    }
  }

  function markEnded(view, by) {
    view.ended = true;
    view.input.disabled = true;
    view.composer.querySelector('button').disabled = true;
    view.endButton.disabled = true;
    view.typing.textContent = '';
    if (by) {
      const text = by === 'citizen' ? t('ended.citizen') : t('ended.operator');
      view.list.append(el('li', { class: 'from-system', text }));
      announce(text);
    }
  }

  function onEnded(f) {
    const view = state.conversations.get(f.conversation_id);
    if (view) markEnded(view, f.by || 'operator');
  }

  function onWrapUp(f) {
    const view = state.conversations.get(f.conversation_id);
    if (!view) return;
    if (!view.ended) markEnded(view, null);
    view.wrapCode.replaceChildren(el('option', { value: '', text: '—' }));
    const codes = f.codes || [];
    for (const code of codes) {
      const value = typeof code === 'string' ? code : code.code || code.id;
      const label = typeof code === 'string' ? code : code.label || code.name || value;
      view.wrapCode.append(el('option', { value, text: label }));
    }
    view.wrapup.hidden = false;
    clearInterval(view.wrapTimer);
    const tick = () => {
      view.wrapUntil.textContent = f.until ? window.ccu.duration((f.until - Date.now()) / 1000) : '–';
    };
    tick();
    view.wrapTimer = setInterval(tick, 1000);
    if (state.selected === view.id) view.wrapCode.focus();
  }

  // ---- citizen panel ----
  function renderCitizen() {
    const body = $('citizen-body');
    body.replaceChildren();
    const view = state.conversations.get(state.selected);
    if (!view) return;
    const ct = view.contact || {};
    body.append(el('dl', { class: 'facts' },
      el('dt', { i18n: 'name' }), el('dd', { text: ct.name || t('citizen.anonymous') }),
      el('dt', { i18n: 'email' }), el('dd', { text: ct.email || '–' }),
      el('dt', { i18n: 'phone' }), el('dd', { text: ct.phone || '–' }),
      el('dt', { i18n: 'reference' }), el('dd', { text: view.conv.reference || '' })));
    body.append(el('h3', { i18n: 'citizen.history' }));
    const earlier = (view.history || []).filter((h) => (h.conversation || h).id !== view.id);
    if (!earlier.length) {
      body.append(el('p', { class: 'hint', i18n: 'citizen.nohistory' }));
      return;
    }
    const list = el('ul', { class: 'plain citizen-history' });
    for (const h of earlier) {
      const c = h.conversation || h;
      list.append(el('li', {},
        el('strong', { text: c.reference || `#${c.id}` }),
        ` · ${t(`channel.${c.channel}`)} · ${queueName(c.queue || c.queue_id)} · ${dateTime(c.created_at)}`,
        c.subject ? el('div', { text: c.subject }) : null));
    }
    body.append(list);
  }

  // ---- canned responses ----
  function renderCanned() {
    const q = $('canned-search').value.trim().toLowerCase();
    const list = $('canned-list');
    list.replaceChildren();
    const hits = state.canned.filter((c) => !q || c.title.toLowerCase().includes(q)
      || (c.keywords || []).some((k) => k.toLowerCase().includes(q)) || c.text.toLowerCase().includes(q));
    for (const c of hits.slice(0, 12)) {
      const b = el('button', { type: 'button', title: c.text }, c.title);
      b.addEventListener('click', () => {
        const view = state.conversations.get(state.selected);
        if (!view || view.ended) return;
        view.input.value = view.input.value ? `${view.input.value} ${c.text}` : c.text;
        view.input.focus();
      });
      list.append(el('li', {}, b));
    }
  }

  // ---- start ----
  document.addEventListener('DOMContentLoaded', async () => {
    const me = await fetch('/api/v1/me', { credentials: 'same-origin' });
    if (me.status === 401) { location.assign('/?next=/console'); return; }
    if (me.ok) {
      const body = await me.json();
      state.me = body.user;
      $('user-name').textContent = body.user.display_name || body.user.username;
    }
    try {
      const r = await fetch('/api/v1/queues', { credentials: 'same-origin' });
      if (r.ok) {
        const body = await r.json();
        for (const q of Array.isArray(body) ? body : body.items || []) state.queues.set(q.id, q);
      }
    } catch (e) { /* names fall back to ids */ }
    fetch('/static/canned.json').then((r) => r.json()).then((list) => { state.canned = list; renderCanned(); }).catch(() => {});
    $('canned-search').addEventListener('input', renderCanned);
    $('presence-select').addEventListener('change', () => { $('reason-field').hidden = $('presence-select').value !== 'break'; });
    $('presence-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const presence = $('presence-select').value;
      const frame = { type: 'presence', presence };
      if (presence === 'break') frame.reason = $('presence-reason').value;
      send(frame);
    });
    $('logout').addEventListener('click', async () => {
      await fetch('/api/v1/auth/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => {});
      location.assign('/');
    });
    window.ccu.onLang(() => { renderCitizen(); if (state.presenceRaw) setPresence(state.presenceRaw); });
    connect();
  });
})();

// ccu supervisor dashboard: /ws/supervisor `snapshot` frames (pushed on
// every change and every few seconds), no polling. Rows are keyed by id and
// updated in place, so a keyboard user's focus on an action survives the
// updates. Names come from the server and go in with textContent.
(function () {
  'use strict';
  const { t, el } = window.ccu;
  const $ = (id) => document.getElementById(id);

  const state = { ws: null, attempts: 0, queues: new Map(), operators: new Map(), snapshot: null, moveQueue: null };

  function announce(text) { $('announce').textContent = text; }
  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(frame)); return true; }
    announce(t('conn.lost'));
    return false;
  }

  // Rates come as fractions (0.8); targets as percents (80).
  function percent(v) {
    if (v === null || v === undefined || Number.isNaN(Number(v))) return null;
    return Number(v) * 100;
  }
  function pctText(v) {
    const p = percent(v);
    return p === null ? '–' : `${p.toFixed(p >= 10 || p === 0 ? 0 : 1)}%`;
  }
  function secs(v) { return v === null || v === undefined ? '–' : window.ccu.duration(Number(v)); }
  function targetOf(q) {
    const tg = q.target || {};
    return {
      percent: tg.percent !== undefined ? tg.percent : (q.target_percent !== undefined ? q.target_percent : q.service_level_target_percent),
      seconds: tg.seconds !== undefined ? tg.seconds : (q.target_seconds !== undefined ? q.target_seconds : q.service_level_target_seconds)
    };
  }
  function byStatus(ops) {
    if (!ops) return '–';
    const entries = Array.isArray(ops) ? ops.map((o) => [o.status || o.presence, o.count]) : Object.entries(ops);
    const parts = entries.filter(([, n]) => n).map(([s, n]) => `${t(`presence.${s}`)} ${n}`);
    return parts.length ? parts.join(' · ') : '0';
  }

  function cell(field, cls) { return el('td', { 'data-field': field, class: cls }); }

  function queueRow(q) {
    let row = state.queues.get(q.id);
    if (!row) {
      const move = el('button', { type: 'button', class: 'secondary move-button', i18n: 'move' });
      move.addEventListener('click', () => openMove(q.id));
      const tr = el('tr', { 'data-queue': q.id },
        el('th', { scope: 'row', 'data-field': 'name' }),
        cell('waiting', 'num-big'), cell('longest_wait'), cell('service_level'), cell('asa'), cell('aht'),
        cell('abandon_rate'), cell('operators'), el('td', {}, move));
      row = { tr, move };
      state.queues.set(q.id, row);
      $('queues').tBodies[0].append(tr);
    }
    const set = (f, text) => { row.tr.querySelector(`[data-field="${f}"]`).textContent = text; };
    set('name', q.name || q.id);
    set('waiting', String(q.waiting ?? 0));
    set('longest_wait', secs(q.longest_wait_seconds));
    set('asa', secs(q.asa_seconds));
    set('aht', secs(q.aht_seconds));
    set('abandon_rate', pctText(q.abandon_rate));
    set('operators', byStatus(q.operators));
    const sl = row.tr.querySelector('[data-field="service_level"]');
    const target = targetOf(q);
    const value = percent(q.service_level);
    sl.replaceChildren(
      el('span', { class: value === null || target.percent === undefined ? '' : value >= target.percent ? 'on-target' : 'below-target', text: pctText(q.service_level) }),
      el('span', { class: 'target', text: `${t('q.target')} ${target.percent ?? '–'}% / ${target.seconds ?? '–'} ${t('seconds')}` }));
    row.move.disabled = !(q.waiting > 0);
    row.data = q;
  }

  function operatorRow(o) {
    let row = state.operators.get(o.id);
    if (!row) {
      const select = el('select', { id: `force-${o.id}`, 'aria-label': `${t('force')}: ${o.name || o.id}` },
        el('option', { value: 'available', i18n: 'presence.available' }),
        el('option', { value: 'break', i18n: 'presence.break' }),
        el('option', { value: 'offline', i18n: 'presence.offline' }));
      const button = el('button', { type: 'submit', class: 'secondary', i18n: 'force' });
      const form = el('form', { class: 'row force-form' }, select, button);
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const frame = { type: 'force_presence', operator: o.id, presence: select.value };
        if (select.value === 'break') frame.reason = 'supervisore';
        send(frame);
      });
      const tr = el('tr', { 'data-operator': o.id },
        el('th', { scope: 'row', 'data-field': 'name' }), cell('presence'), cell('since'), cell('active'), cell('handled_today'),
        el('td', {}, form));
      row = { tr, select };
      state.operators.set(o.id, row);
      $('operators').tBodies[0].append(tr);
    }
    row.data = o;
    const set = (f, text) => { row.tr.querySelector(`[data-field="${f}"]`).textContent = text; };
    set('name', o.name || String(o.id));
    const p = window.ccu.presenceOf(o.presence);
    const shown = o.status && o.status !== 'idle' && o.status !== 'offline' && o.status !== p.presence ? o.status : p.presence;
    const badge = el('span', { class: `presence-badge presence-${shown}`, 'data-presence': p.presence, text: t(`presence.${shown}`) + (p.reason ? ` (${p.reason})` : '') });
    row.tr.querySelector('[data-field="presence"]').replaceChildren(badge);
    set('active', String(Array.isArray(o.active) ? o.active.length : (o.active ?? 0)));
    set('handled_today', String(o.handled_today ?? 0));
    tickOperator(row);
  }

  function tickOperator(row) {
    const since = row.data && row.data.since;
    row.tr.querySelector('[data-field="since"]').textContent = since ? window.ccu.duration((Date.now() - since) / 1000) : '–';
  }

  function onSnapshot(f) {
    state.snapshot = f;
    const seenQ = new Set();
    for (const q of f.queues || []) { queueRow(q); seenQ.add(q.id); }
    for (const [id, row] of state.queues) if (!seenQ.has(id)) { row.tr.remove(); state.queues.delete(id); }
    const seenO = new Set();
    for (const o of f.operators || []) { operatorRow(o); seenO.add(o.id); }
    for (const [id, row] of state.operators) if (!seenO.has(id)) { row.tr.remove(); state.operators.delete(id); }
    const now = f.at || f.now || Date.now();
    $('updated').textContent = new Date(now).toLocaleTimeString(window.ccu.lang === 'en' ? 'en-GB' : 'it-IT');
    $('updated').dateTime = new Date(now).toISOString();
  }

  // ---- move a waiting conversation ----
  async function openMove(queueId) {
    state.moveQueue = queueId;
    const conv = $('move-conversation');
    conv.replaceChildren();
    const target = $('move-queue');
    target.replaceChildren();
    for (const [id, row] of state.queues) if (id !== queueId) target.append(el('option', { value: id, text: row.data.name || id }));
    try {
      const r = await fetch(`/api/v1/conversations?state=queued&queue=${encodeURIComponent(queueId)}&limit=50`, { credentials: 'same-origin' });
      const body = r.ok ? await r.json() : { items: [] };
      for (const c of body.items || []) {
        conv.append(el('option', { value: c.id, text: `${c.reference} · ${c.channel}${c.subject ? ' · ' + c.subject : ''}` }));
      }
    } catch (e) { /* shown as empty */ }
    $('move-empty').hidden = conv.options.length > 0;
    $('move-submit').disabled = conv.options.length === 0;
    $('move-dialog').showModal();
  }

  function connect() {
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws/supervisor');
    state.ws = ws;
    ws.onopen = () => { state.attempts = 0; $('connection').textContent = t('conn.ok'); $('connection').className = 'status-line conn-ok'; };
    ws.onmessage = (event) => {
      let f;
      try { f = JSON.parse(event.data); } catch (e) { return; }
      if (f.type === 'snapshot') onSnapshot(f);
      else if (f.type === 'error') announce(`${t('error')}: ${f.message || f.code}`);
    };
    ws.onclose = async () => {
      if (state.ws !== ws) return;
      state.ws = null;
      $('connection').textContent = t('conn.lost');
      $('connection').className = 'status-line conn-lost';
      try {
        const r = await fetch('/api/v1/me', { credentials: 'same-origin' });
        if (r.status === 401) { location.assign('/?next=/dashboard'); return; }
      } catch (e) { /* retry below */ }
      const delay = Math.min(15000, 500 * 2 ** state.attempts) * (0.75 + Math.random() / 2);
      state.attempts = Math.min(state.attempts + 1, 10);
      setTimeout(connect, delay);
    };
  }

  document.addEventListener('DOMContentLoaded', async () => {
    const me = await fetch('/api/v1/me', { credentials: 'same-origin' });
    if (me.status === 401) { location.assign('/?next=/dashboard'); return; }
    if (me.ok) { const b = await me.json(); $('user-name').textContent = b.user.display_name || b.user.username; }
    $('move-form').addEventListener('submit', (e) => {
      if (e.submitter && e.submitter.value === 'move' && $('move-conversation').value) {
        send({ type: 'move', conversation_id: Number($('move-conversation').value), queue: $('move-queue').value });
      }
    });
    $('move-dialog').addEventListener('close', () => {
      const row = state.queues.get(state.moveQueue);
      if (row) row.move.focus();
    });
    $('logout').addEventListener('click', async () => {
      await fetch('/api/v1/auth/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => {});
      location.assign('/');
    });
    // The "for" column is a clock: advance it locally between snapshots.
    setInterval(() => { for (const row of state.operators.values()) tickOperator(row); }, 1000);
    window.ccu.onLang(() => { if (state.snapshot) onSnapshot(state.snapshot); });
    connect();
  });
})();

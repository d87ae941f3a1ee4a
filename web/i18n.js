// ccu: the staff pages' translations (Italian by default, English selectable).
// Elements carry data-i18n="key" (text), data-i18n-placeholder,
// data-i18n-label (aria-label) or data-i18n-title; apply() fills them with
// textContent, never HTML. The choice is remembered in localStorage and the
// document's lang attribute follows it.
(function () {
  'use strict';
  const DICT = {
    it: {
      'app.title': 'Contact Center Unico',
      'skip': 'Vai al contenuto',
      'lang': 'Lingua',
      'login.title': 'Accesso operatori',
      'login.username': 'Nome utente',
      'login.password': 'Password',
      'login.submit': 'Accedi',
      'login.failed': 'Nome utente o password non corretti.',
      'login.limited': 'Troppi tentativi: riprovi tra qualche minuto.',
      'login.error': 'Accesso non riuscito. Riprovi.',
      'logout': 'Esci',
      'console.title': 'Console operatore',
      'presence': 'Stato',
      'presence.available': 'Disponibile',
      'presence.break': 'In pausa',
      'presence.offline': 'Non in linea',
      'presence.not_ready': 'Non pronto',
      'presence.busy': 'Occupato',
      'presence.wrap_up': 'Post-chiamata',
      'presence.idle': 'Libero',
      'presence.on_break': 'In pausa',
      'presence.reason': 'Motivo della pausa',
      'presence.since': 'Dalle',
      'presence.set': 'Cambia stato',
      'reason.lunch': 'Pranzo',
      'reason.coffee': 'Pausa breve',
      'reason.training': 'Formazione',
      'reason.backoffice': 'Back office',
      'offers': 'Offerte in arrivo',
      'offer.none': 'Nessuna offerta in attesa.',
      'offer.title': 'Nuova conversazione',
      'offer.topic': 'Argomento',
      'offer.channel': 'Canale',
      'offer.waited': 'In attesa da',
      'offer.contact': 'Cittadino',
      'offer.expires': 'Scade tra',
      'offer.accept': 'Accetta',
      'offer.decline': 'Rifiuta',
      'offer.withdrawn': 'Offerta ritirata',
      'conversations': 'Conversazioni',
      'conversations.none': 'Nessuna conversazione aperta.',
      'reply': 'Risposta',
      'send': 'Invia',
      'end': 'Chiudi conversazione',
      'typing.citizen': 'Il cittadino sta scrivendo…',
      'typing.operator': "L'operatore sta scrivendo…",
      'citizen': 'Cittadino',
      'citizen.panel': 'Scheda cittadino',
      'citizen.history': 'Conversazioni precedenti',
      'citizen.nohistory': 'Nessuna conversazione precedente.',
      'citizen.anonymous': 'Anonimo',
      'name': 'Nome',
      'email': 'E-mail',
      'phone': 'Telefono',
      'reference': 'Riferimento',
      'subject': 'Oggetto',
      'wrapup': 'Chiusura (wrap-up)',
      'wrapup.code': 'Esito',
      'wrapup.note': 'Nota',
      'wrapup.save': 'Registra esito',
      'wrapup.until': 'Tempo per la chiusura',
      'transfer': 'Trasferisci',
      'transfer.queue': 'Alla coda',
      'transfer.operator': "All'operatore (id)",
      'transfer.go': 'Trasferisci',
      'canned': 'Risposte predefinite',
      'canned.search': 'Cerca per parola chiave',
      'canned.insert': 'Inserisci',
      'ended.citizen': 'Il cittadino ha chiuso la conversazione.',
      'ended.operator': 'Conversazione chiusa.',
      'closed': 'Conversazione archiviata.',
      'conn.ok': 'Connesso',
      'conn.lost': 'Connessione persa: riconnessione in corso…',
      'channel.chat': 'Chat',
      'channel.voice': 'Telefono',
      'channel.email': 'E-mail',
      'channel.webform': 'Modulo web',
      'seconds': 's',
      'dashboard.title': 'Cruscotto supervisore',
      'queues': 'Code',
      'operators': 'Operatori',
      'q.name': 'Coda',
      'q.waiting': 'In attesa',
      'q.longest': 'Attesa massima',
      'q.sl': 'Livello di servizio oggi',
      'q.asa': 'ASA',
      'q.aht': 'AHT',
      'q.abandon': 'Abbandoni',
      'q.operators': 'Operatori per stato',
      'q.target': 'obiettivo',
      'o.name': 'Operatore',
      'o.presence': 'Stato',
      'o.since': 'Da',
      'o.active': 'Conversazioni attive',
      'o.handled': 'Gestite oggi',
      'o.actions': 'Azioni',
      'force': 'Forza stato',
      'move': 'Sposta conversazione in attesa',
      'move.conversation': 'Conversazione in attesa',
      'move.queue': 'Nuova coda',
      'move.go': 'Sposta',
      'move.none': 'Nessuna conversazione in attesa.',
      'cancel': 'Annulla',
      'updated': 'Aggiornato alle',
      'error': 'Errore'
    },
    en: {
      'app.title': 'Contact Center Unico',
      'skip': 'Skip to content',
      'lang': 'Language',
      'login.title': 'Staff sign-in',
      'login.username': 'Username',
      'login.password': 'Password',
      'login.submit': 'Sign in',
      'login.failed': 'Wrong username or password.',
      'login.limited': 'Too many attempts: try again in a few minutes.',
      'login.error': 'Sign-in failed. Please try again.',
      'logout': 'Sign out',
      'console.title': 'Operator console',
      'presence': 'Status',
      'presence.available': 'Available',
      'presence.break': 'On break',
      'presence.offline': 'Offline',
      'presence.not_ready': 'Not ready',
      'presence.busy': 'Busy',
      'presence.wrap_up': 'Wrap-up',
      'presence.idle': 'Idle',
      'presence.on_break': 'On break',
      'presence.reason': 'Break reason',
      'presence.since': 'Since',
      'presence.set': 'Change status',
      'reason.lunch': 'Lunch',
      'reason.coffee': 'Short break',
      'reason.training': 'Training',
      'reason.backoffice': 'Back office',
      'offers': 'Incoming offers',
      'offer.none': 'No offers waiting.',
      'offer.title': 'New conversation',
      'offer.topic': 'Topic',
      'offer.channel': 'Channel',
      'offer.waited': 'Waiting for',
      'offer.contact': 'Citizen',
      'offer.expires': 'Expires in',
      'offer.accept': 'Accept',
      'offer.decline': 'Decline',
      'offer.withdrawn': 'Offer withdrawn',
      'conversations': 'Conversations',
      'conversations.none': 'No open conversations.',
      'reply': 'Reply',
      'send': 'Send',
      'end': 'End conversation',
      'typing.citizen': 'The citizen is typing…',
      'typing.operator': 'The operator is typing…',
      'citizen': 'Citizen',
      'citizen.panel': 'Citizen',
      'citizen.history': 'Earlier conversations',
      'citizen.nohistory': 'No earlier conversations.',
      'citizen.anonymous': 'Anonymous',
      'name': 'Name',
      'email': 'E-mail',
      'phone': 'Phone',
      'reference': 'Reference',
      'subject': 'Subject',
      'wrapup': 'Wrap-up',
      'wrapup.code': 'Outcome',
      'wrapup.note': 'Note',
      'wrapup.save': 'Save outcome',
      'wrapup.until': 'Wrap-up time left',
      'transfer': 'Transfer',
      'transfer.queue': 'To queue',
      'transfer.operator': 'To operator (id)',
      'transfer.go': 'Transfer',
      'canned': 'Canned responses',
      'canned.search': 'Search by keyword',
      'canned.insert': 'Insert',
      'ended.citizen': 'The citizen ended the conversation.',
      'ended.operator': 'Conversation ended.',
      'closed': 'Conversation archived.',
      'conn.ok': 'Connected',
      'conn.lost': 'Connection lost: reconnecting…',
      'channel.chat': 'Chat',
      'channel.voice': 'Phone',
      'channel.email': 'E-mail',
      'channel.webform': 'Web form',
      'seconds': 's',
      'dashboard.title': 'Supervisor dashboard',
      'queues': 'Queues',
      'operators': 'Operators',
      'q.name': 'Queue',
      'q.waiting': 'Waiting',
      'q.longest': 'Longest wait',
      'q.sl': 'Service level today',
      'q.asa': 'ASA',
      'q.aht': 'AHT',
      'q.abandon': 'Abandoned',
      'q.operators': 'Operators by status',
      'q.target': 'target',
      'o.name': 'Operator',
      'o.presence': 'Status',
      'o.since': 'For',
      'o.active': 'Active conversations',
      'o.handled': 'Handled today',
      'o.actions': 'Actions',
      'force': 'Force status',
      'move': 'Move a waiting conversation',
      'move.conversation': 'Waiting conversation',
      'move.queue': 'New queue',
      'move.go': 'Move',
      'move.none': 'No conversation is waiting.',
      'cancel': 'Cancel',
      'updated': 'Updated at',
      'error': 'Error'
    }
  };
  const KEY = 'ccu.lang';
  let lang = localStorage.getItem(KEY);
  if (!DICT[lang]) lang = 'it';

  function t(key) {
    return (DICT[lang] && DICT[lang][key]) || DICT.it[key] || key;
  }

  function apply(root) {
    const scope = root || document;
    document.documentElement.lang = lang;
    scope.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
    scope.querySelectorAll('[data-i18n-placeholder]').forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
    scope.querySelectorAll('[data-i18n-label]').forEach((el) => { el.setAttribute('aria-label', t(el.dataset.i18nLabel)); });
    scope.querySelectorAll('[data-i18n-title]').forEach((el) => { el.title = t(el.dataset.i18nTitle); });
    scope.querySelectorAll('select.lang-select').forEach((el) => { el.value = lang; });
  }

  const listeners = [];
  function setLang(next) {
    if (!DICT[next]) return;
    lang = next;
    localStorage.setItem(KEY, lang);
    apply();
    listeners.forEach((fn) => fn(lang));
  }

  /** Creates an element with text content only (never HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'i18n') { node.dataset.i18n = v; node.textContent = t(v); }
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (v === true) node.setAttribute(k, '');
      else node.setAttribute(k, String(v));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
    const s = Math.max(0, Math.round(seconds));
    const m = Math.floor(s / 60);
    const h = Math.floor(m / 60);
    if (h > 0) return `${h}:${String(m % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
    return `${m}:${String(s % 60).padStart(2, '0')}`;
  }

  /**
   * The routing engine's presence as JSON is "available", "offline",
   * {"break": {"reason": ...}} or {"not_ready": ...}; frames may wrap it as
   * {"presence": ..., "status": ...}. Returns {presence, reason, status}.
   */
  function presenceOf(p) {
    if (typeof p === 'string') return { presence: p };
    if (!p || typeof p !== 'object') return { presence: 'offline' };
    if ('presence' in p) {
      const inner = presenceOf(p.presence);
      return { presence: inner.presence, reason: p.reason || inner.reason, status: p.status || inner.status };
    }
    const key = Object.keys(p)[0] || 'offline';
    const v = p[key];
    let reason;
    if (typeof v === 'string') reason = v;
    else if (v && typeof v === 'object') reason = v.reason || Object.keys(v)[0];
    return { presence: key, reason };
  }

  document.addEventListener('DOMContentLoaded', () => {
    apply();
    document.querySelectorAll('select.lang-select').forEach((sel) => {
      sel.addEventListener('change', () => setLang(sel.value));
    });
  });

  window.ccu = { t, apply, setLang, onLang: (fn) => listeners.push(fn), get lang() { return lang; }, el, duration, presenceOf };
})();

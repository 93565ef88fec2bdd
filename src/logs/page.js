// The logs page: the last logs as terminal lines, new ones pushed by
// /logs/stream, standings from /results, a band filter.
//
// Every value from the server reaches the page through textContent or a DOM
// property, never as markup: band and album names are user input.
'use strict';

(() => {
  const SNAPSHOT = 20; // lines shown on load
  const SCROLLBACK = 500; // lines kept as new ones arrive
  const STANDINGS_EVERY_MS = 3000;
  const RETRY_MS = 3000;
  const TOP = 10;

  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const status = $('status');
  const bandSelect = $('band');

  let band = new URLSearchParams(location.search).get('band') || '';
  let source = null;
  // Bumped on every (re)connection, so callbacks of an older one do nothing.
  let generation = 0;
  // Ids of the vote lines on screen: the snapshot and the stream overlap.
  let shown = new Set();
  // Stream events that arrive while the snapshot loads; null once it is shown.
  let pending = null;
  // received_at of the oldest snapshot line: a stream event older than that
  // (e.g. a burst from a tail that was idle) would land out of order; /logs
  // has it.
  let floor = '';

  function setStatus(text, kind) {
    status.textContent = text;
    status.className = 'status ' + kind;
  }

  function query(params) {
    const search = new URLSearchParams(params);
    if (band) search.set('band', band);
    const text = search.toString();
    return text ? '?' + text : '';
  }

  function append(text, kind, id) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const line = document.createElement('div');
    line.className = 'line ' + kind;
    line.textContent = text;
    if (id) {
      line.dataset.id = id;
      line.title = id;
    }
    log.appendChild(line);
    while (log.childElementCount > SCROLLBACK) {
      const oldest = log.firstElementChild;
      if (oldest.dataset.id) shown.delete(oldest.dataset.id);
      oldest.remove();
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // `YYYY-MM-DD HH:MM:SS  {record}`
  function show(item) {
    if (shown.has(item.id) || item.received_at < floor) return;
    shown.add(item.id);
    const record = {band: item.band, album: item.album, year: item.year, rank: item.rank, route: item.route};
    append(item.date + ' ' + item.time + '  ' + JSON.stringify(record), 'vote', item.id);
  }

  async function getJson(url) {
    const response = await fetch(url, {cache: 'no-store'});
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // Not JSON (a proxy's error page): the status line says enough.
    }
    if (!response.ok) throw new Error((body && body.error) || response.status + ' ' + response.statusText);
    return body;
  }

  async function loadSnapshot(my) {
    if (pending === null) pending = [];
    let page;
    try {
      page = await getJson('/logs' + query({limit: SNAPSHOT}));
    } catch (e) {
      if (my !== generation) return;
      append('[error] ' + e.message, 'error');
      setTimeout(() => my === generation && loadSnapshot(my), RETRY_MS);
      return;
    }
    if (my !== generation) return;
    log.replaceChildren();
    shown = new Set();
    floor = '';
    page.items.slice().reverse().forEach(show);
    // Fixed-width RFC 3339 UTC instants compare as strings.
    if (page.items.length > 0) floor = page.items[page.items.length - 1].received_at;
    const buffered = pending;
    pending = null;
    buffered.forEach(show);
  }

  // Opens the stream first and loads the snapshot once it is open, so no log
  // falls between the two; the overlap is removed by id.
  function connect() {
    const my = ++generation;
    if (source) source.close();
    log.replaceChildren();
    shown = new Set();
    pending = [];
    floor = '';
    setStatus('connecting…', 'wait');
    source = new EventSource('/logs/stream' + query({}));
    source.addEventListener('open', () => my === generation && loadSnapshot(my));
    source.addEventListener('ready', () => my === generation && setStatus('live', 'live'));
    source.addEventListener('log', (event) => {
      if (my !== generation) return;
      const item = JSON.parse(event.data);
      if (pending === null) {
        show(item);
      } else if (pending.push(item) > SCROLLBACK) {
        pending.shift();
      }
    });
    source.addEventListener('skipped', (event) => {
      if (my !== generation) return;
      append('… ' + JSON.parse(event.data).skipped + ' logs skipped: this connection fell behind', 'note');
    });
    source.addEventListener('error', () => {
      if (my !== generation) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. too many streams): show the logs anyway, retry live later.
        setStatus('live stream unavailable; retrying', 'down');
        loadSnapshot(my);
        setTimeout(() => my === generation && connect(), 5 * RETRY_MS);
      } else {
        setStatus('reconnecting…', 'wait');
      }
    });
  }

  function row(cells) {
    const tr = document.createElement('tr');
    for (const [text, kind] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      if (kind) td.className = kind;
      tr.appendChild(td);
    }
    return tr;
  }

  function option(value, label) {
    const element = document.createElement('option');
    element.value = value;
    element.textContent = label;
    return element;
  }

  function updateBandOptions(bands) {
    const names = new Set(bands);
    if (band) names.add(band);
    const sorted = [...names].sort((a, b) => a.localeCompare(b));
    const current = [...bandSelect.options].slice(1).map((o) => o.value);
    // Rebuilding an unchanged list would close it under the user's pointer.
    if (current.length === sorted.length && current.every((v, i) => v === sorted[i])) return;
    bandSelect.replaceChildren(option('', 'all bands'), ...sorted.map((name) => option(name, name)));
    bandSelect.value = band;
  }

  function renderStandings(s) {
    $('total').textContent = s.total;
    $('routes').replaceChildren(...Object.entries(s.by_route).map(([route, votes]) => row([[route], [votes, 'num']])));
    $('bands').replaceChildren(...s.bands.slice(0, TOP).map((b, i) => row([[i + 1 + '.'], [b.band], [b.votes, 'num']])));
    $('albums').replaceChildren(...s.albums.slice(0, TOP).map((a) =>
      row([[a.album], [a.votes, 'num'], [a.avg_rank === null ? '–' : a.avg_rank.toFixed(2), 'num']])));
    updateBandOptions(s.bands.map((b) => b.band));
  }

  async function refreshStandings() {
    try {
      renderStandings(await getJson('/results'));
      $('standings-error').textContent = '';
    } catch (e) {
      $('standings-error').textContent = '[error] ' + e.message;
    } finally {
      setTimeout(refreshStandings, STANDINGS_EVERY_MS);
    }
  }

  bandSelect.addEventListener('change', () => {
    band = bandSelect.value;
    const url = new URL(location.href);
    if (band) url.searchParams.set('band', band);
    else url.searchParams.delete('band');
    history.replaceState(null, '', url);
    connect();
  });

  updateBandOptions([]);
  connect();
  refreshStandings();
})();

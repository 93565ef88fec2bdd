// The logs page: the last logs as terminal lines (with the voter and what
// the rules decided), new ones pushed by /logs/stream, standings from
// /results drawn as bars, the contest's status, a band filter.
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
  const BAR_CELLS = 12; // the longest bar, in characters
  const EIGHTHS = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
  const OUTCOME_WIDTH = 9; // 'duplicate'
  const VOTER_WIDTH = 12;

  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const status = $('status');
  const bandSelect = $('band');

  let band = new URLSearchParams(location.search).get('band') || '';
  let source = null;
  // Bumped on every (re)connection, so callbacks of an older one do nothing.
  let generation = 0;
  // Keys (lineKey) of the vote lines on screen: the snapshot and the stream
  // overlap.
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

  function span(text, kind) {
    const element = document.createElement('span');
    element.textContent = text;
    if (kind) element.className = kind;
    return element;
  }

  // `parts`: text, or [text, class] for a styled span.
  function append(parts, kind, item) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const line = document.createElement('div');
    line.className = 'line ' + kind;
    line.append(...parts.map((part) => (typeof part === 'string' ? part : span(...part))));
    if (item) {
      line.dataset.id = item.id;
      line.dataset.key = lineKey(item);
      line.title = item.id;
    }
    log.appendChild(line);
    while (log.childElementCount > SCROLLBACK) {
      const oldest = log.firstElementChild;
      if (oldest.dataset.key) shown.delete(oldest.dataset.key);
      oldest.remove();
    }
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  // A duplicate shares its vote id with the vote it repeats, but not its
  // instant (a retry is received again) nor its outcome.
  function lineKey(item) {
    return item.id + ' ' + item.received_at + ' ' + item.outcome;
  }

  // The voter as sent; quoted (JSON) unless it is a plain word, so a voter
  // cannot pass for another column or for `-`, which stands for anonymous.
  function voterText(voter) {
    if (voter === null || voter === undefined) return ['-', 'voter anonymous'];
    const plain = /^[\p{L}\p{N}_.@+:#/-]+$/u.test(voter) && /[\p{L}\p{N}]/u.test(voter);
    return [plain ? voter : JSON.stringify(voter), 'voter'];
  }

  // The spaces after `text` up to the next column, at least two.
  function gap(text, width) {
    return ' '.repeat(Math.max(0, width - [...text].length) + 2);
  }

  // `YYYY-MM-DD HH:MM:SS  <outcome>  <voter>  {record}`
  function show(item) {
    const key = lineKey(item);
    if (shown.has(key) || item.received_at < floor) return;
    shown.add(key);
    const outcome = item.outcome || 'counted';
    const [voter, voterKind] = voterText(item.voter);
    const record = {band: item.band, album: item.album, year: item.year, rank: item.rank, route: item.route};
    append([
      item.date + ' ' + item.time + '  ',
      [outcome, 'outcome ' + outcome],
      gap(outcome, OUTCOME_WIDTH),
      [voter, voterKind],
      gap(voter, VOTER_WIDTH),
      [JSON.stringify(record), 'record'],
    ], 'vote ' + outcome, item);
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
      append(['[error] ' + e.message], 'error');
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
      append(['… ' + JSON.parse(event.data).skipped + ' logs skipped: this connection fell behind'], 'note');
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

  // A terminal bar: `value` of `max` over BAR_CELLS characters, to an
  // eighth of a character.
  function bar(value, max) {
    if (!(value > 0) || !(max > 0)) return '';
    const eighths = Math.round(Math.min(value / max, 1) * BAR_CELLS * 8);
    return '█'.repeat(Math.floor(eighths / 8)) + EIGHTHS[eighths % 8];
  }

  // An RFC 3339 instant as the log lines print it, in UTC.
  function instant(text) {
    const at = new Date(text);
    return isNaN(at) ? text : at.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
  }

  function renderContest(s) {
    const parts = [s.status.replace('_', ' ')];
    if (s.status === 'not_open' && s.opens_at) parts.push('opens ' + instant(s.opens_at));
    else if (s.closes_at) parts.push((s.status === 'open' ? 'closes ' : 'closed ') + instant(s.closes_at));
    const contest = $('contest');
    contest.textContent = parts.join(' · ');
    contest.className = 'contest ' + s.status;
    const digest = s.final ? s.final.digest : '';
    $('digest').hidden = !digest;
    $('digest-value').textContent = digest;
    $('digest').title = s.final ? 'counted to ' + JSON.stringify(s.final.offsets) : '';
  }

  function renderStandings(s) {
    renderContest(s);
    $('total').textContent = s.total;
    $('voters').textContent = s.voters;
    $('received').textContent = s.received;
    $('outcomes').replaceChildren(...Object.entries(s.by_outcome).flatMap(([outcome, n], i) =>
      [i ? ' · ' : '', span(outcome + ' ', 'outcome ' + outcome), span(n, 'num')]));
    $('routes').replaceChildren(...Object.entries(s.by_route).map(([route, votes]) => row([[route], [votes, 'num']])));
    const bands = s.bands.slice(0, TOP);
    const mostVotes = Math.max(0, ...bands.map((b) => b.votes));
    $('bands').replaceChildren(...bands.map((b, i) =>
      row([[i + 1 + '.'], [b.band], [bar(b.votes, mostVotes), 'bar'], [b.votes, 'num']])));
    const albums = s.albums.slice(0, TOP);
    const bestRank = Math.max(0, ...albums.map((a) => a.avg_rank || 0));
    $('albums').replaceChildren(...albums.map((a) =>
      row([[a.album], [bar(a.avg_rank, bestRank), 'bar'],
        [a.avg_rank === null ? '–' : a.avg_rank.toFixed(2), 'num'], [a.votes, 'num dim']])));
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

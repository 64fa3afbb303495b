// The status page served on `/`: one self-contained HTML document (no CDN, no dependencies) that
// polls `/status.json` every second and draws the last ten minutes as inline SVG. Readable on a
// phone. Every figure carries a data-field attribute (the browser test reads them).
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ferry</title>
<style>
  :root { --ok: #2a9d3a; --degraded: #d98b0b; --failing: #c9302c; --fg: #1b1f24; --muted: #5b6570; --line: #d8dde3; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #f6f8fa; }
  header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: baseline; padding: .8rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
  h1 { font-size: 1.2rem; margin: 0; }
  h2 { font-size: 1rem; margin: 1.2rem 0 .5rem; }
  main { padding: 0 1rem 2rem; max-width: 1100px; margin: 0 auto; }
  .badge { padding: .15rem .6rem; border-radius: 1rem; color: #fff; font-weight: 600; text-transform: uppercase; font-size: .8rem; }
  .ok { background: var(--ok); } .degraded { background: var(--degraded); } .failing { background: var(--failing); }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem; margin-top: 1rem; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: .5rem; padding: .6rem .8rem; }
  .card .label { color: var(--muted); font-size: .8rem; }
  .card .value { font-size: 1.4rem; font-weight: 600; font-variant-numeric: tabular-nums; }
  .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: .6rem; }
  .chart { background: #fff; border: 1px solid var(--line); border-radius: .5rem; padding: .5rem; }
  .chart svg { width: 100%; height: 160px; display: block; }
  .legend { font-size: .8rem; color: var(--muted); }
  table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid var(--line); font-size: .9rem; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
  td.state { font-weight: 600; text-transform: uppercase; font-size: .8rem; }
  #classes td { white-space: nowrap; font-variant-numeric: tabular-nums; }
  .muted { color: var(--muted); }
  #error { color: var(--failing); }
</style>
</head>
<body>
<header>
  <h1>Ferry <span class="muted" data-field="gateway"></span></h1>
  <span class="badge" data-field="status">…</span>
  <span class="muted">upstream: <b data-field="upstream">…</b></span>
  <span class="muted" data-field="updated"></span>
  <span id="error"></span>
</header>
<main>
  <section class="cards">
    <div class="card"><div class="label">in, msg/s</div><div class="value" data-field="in">–</div></div>
    <div class="card"><div class="label">out to JetStream, msg/s</div><div class="value" data-field="out">–</div></div>
    <div class="card"><div class="label">backlog, records</div><div class="value" data-field="backlog">–</div></div>
    <div class="card"><div class="label">oldest waiting</div><div class="value" data-field="age">–</div></div>
    <div class="card"><div class="label">drain estimate</div><div class="value" data-field="drain">–</div></div>
    <div class="card" data-card="drain-cap" hidden><div class="label">drain cap (--drain-max-rate)</div><div class="value" data-field="drain-cap">–</div></div>
    <div class="card"><div class="label">forwarding lag / bound</div><div class="value" data-field="lag">–</div></div>
    <div class="card"><div class="label">ingress slowed</div><div class="value" data-field="slowed">–</div></div>
    <div class="card"><div class="label">PUBACKs held</div><div class="value" data-field="held">–</div></div>
    <div class="card"><div class="label">devices connected</div><div class="value" data-field="clients">–</div></div>
    <div class="card"><div class="label">forwarded, total</div><div class="value" data-field="forwarded">–</div></div>
    <div class="card"><div class="label">dropped, total</div><div class="value" data-field="dropped">–</div></div>
  </section>
  <section id="classes-section" hidden>
  <h2>Backlog by priority class</h2>
  <table><thead><tr><th>class</th><th>backlog, records</th><th>bytes</th><th>oldest waiting</th></tr></thead><tbody id="classes"></tbody></table>
  </section>
  <h2>Last 10 minutes</h2>
  <section class="charts">
    <div class="chart"><svg id="rates" viewBox="0 0 600 160" preserveAspectRatio="none"></svg>
      <div class="legend"><span style="color:#1f6fb4">■</span> in &nbsp; <span style="color:#2a9d3a">■</span> out to JetStream (msg/s)</div></div>
    <div class="chart"><svg id="backlog" viewBox="0 0 600 160" preserveAspectRatio="none"></svg>
      <div class="legend"><span style="color:#c9302c">■</span> backlog (records) &nbsp; <span style="color:#d98b0b">■</span> oldest waiting (s)</div></div>
  </section>
  <h2>Checks</h2>
  <table><thead><tr><th>check</th><th>state</th><th>detail</th></tr></thead><tbody id="checks"></tbody></table>
  <h2>Recent drops</h2>
  <table><thead><tr><th>time</th><th>reason</th><th>messages</th></tr></thead><tbody id="drops"><tr><td colspan="3" class="muted">none</td></tr></tbody></table>
</main>
<script>
(function () {
  var $ = function (f) { return document.querySelector('[data-field="' + f + '"]') }
  var fmt = function (n) { return n == null || isNaN(n) ? '–' : Math.round(n).toLocaleString('en') }
  var secs = function (s) {
    if (s == null || isNaN(s)) return 'not draining'
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s'
    if (s < 3600) return Math.floor(s / 60) + ' min ' + Math.round(s % 60) + ' s'
    return Math.floor(s / 3600) + ' h ' + Math.round((s % 3600) / 60) + ' min'
  }
  var size = function (b) {
    if (b == null || isNaN(b)) return '–'
    if (b < 1024) return Math.round(b) + ' B'
    if (b < 1048576) return (b / 1024).toFixed(1) + ' KiB'
    if (b < 1073741824) return (b / 1048576).toFixed(1) + ' MiB'
    return (b / 1073741824).toFixed(2) + ' GiB'
  }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c] }) }
  function path(points, key, max) {
    if (!points.length) return ''
    var t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1
    return points.map(function (p, i) {
      var x = t1 === t0 ? 600 : ((p.t - t0) / (t1 - t0)) * 600
      var y = 150 - (max > 0 ? (p[key] / max) * 140 : 0)
      return (i ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1)
    }).join(' ')
  }
  function chart(id, points, lines) {
    var svg = document.getElementById(id), parts = ['<line x1="0" y1="150" x2="600" y2="150" stroke="#d8dde3"/>']
    lines.forEach(function (l) {
      var max = Math.max.apply(null, points.map(function (p) { return p[l.key] }).concat([1]))
      parts.push('<path d="' + path(points, l.key, max) + '" fill="none" stroke="' + l.color + '" stroke-width="2" vector-effect="non-scaling-stroke"/>')
      parts.push('<text x="4" y="' + (14 + 14 * lines.indexOf(l)) + '" font-size="12" fill="' + l.color + '">max ' + fmt(max) + '</text>')
    })
    svg.innerHTML = parts.join('')
  }
  function render(s) {
    var r = s.readiness
    $('gateway').textContent = s.gatewayId + ' · ' + s.version
    var st = $('status'); st.textContent = r.status; st.className = 'badge ' + r.status
    $('upstream').textContent = r.checks.upstream.status === 'ok' ? 'connected, acknowledging' : r.checks.upstream.detail
    $('upstream').setAttribute('data-state', r.checks.upstream.status)
    var last = s.series.length ? s.series[s.series.length - 1] : null
    $('in').textContent = last ? fmt(last.in) : '–'
    $('out').textContent = last ? fmt(last.out) : '–'
    $('backlog').textContent = fmt(r.backlog.records)
    $('backlog').setAttribute('data-value', r.backlog.records)
    $('age').textContent = r.backlog.records ? secs(r.backlog.oldestAgeSeconds) : '–'
    $('drain').textContent = r.backlog.records ? secs(r.backlog.drainEstimateSeconds) + (r.backlog.drainEstimateCapped && r.backlog.drainEstimateSeconds != null ? ' (at the cap)' : '') : 'empty'
    $('drain').setAttribute('data-capped', r.backlog.drainEstimateCapped ? '1' : '0')
    var cap = r.backlog.drainCapPerSecond
    document.querySelector('[data-card="drain-cap"]').hidden = cap == null
    $('drain-cap').textContent = cap == null ? 'off' : fmt(cap) + ' msg/s'
    $('drain-cap').setAttribute('data-value', cap == null ? '' : cap)
    // One row per priority class, most important first; shown with more than one class (--priority).
    var names = Object.keys(r.classes || {})
    document.getElementById('classes-section').hidden = names.length < 2
    document.getElementById('classes').innerHTML = names.map(function (k) {
      var c = r.classes[k]
      return '<tr data-class="' + esc(k) + '"><td>' + esc(k) + '</td><td data-col="records" data-value="' + c.records + '">' + fmt(c.records) + '</td><td data-col="bytes" data-value="' + c.bytes + '">' + size(c.bytes) +
        '</td><td data-col="age" data-value="' + c.oldestAgeSeconds + '">' + (c.records ? secs(c.oldestAgeSeconds) : '–') + '</td></tr>'
    }).join('')
    var sd = s.slowdown || { maxLagSeconds: 0, lagSeconds: 0, slowed: false, held: 0 }
    $('lag').textContent = sd.lagSeconds.toFixed(1) + ' s / ' + (sd.maxLagSeconds > 0 ? sd.maxLagSeconds + ' s' : 'off')
    $('slowed').textContent = sd.slowed ? 'yes' : 'no'; $('slowed').setAttribute('data-value', sd.slowed ? '1' : '0')
    $('held').textContent = fmt(sd.held); $('held').setAttribute('data-value', sd.held)
    $('clients').textContent = fmt(s.clients); $('clients').setAttribute('data-value', s.clients)
    $('forwarded').textContent = fmt(s.totals.forwarded); $('forwarded').setAttribute('data-value', s.totals.forwarded)
    $('dropped').textContent = fmt(s.totals.dropped); $('dropped').setAttribute('data-value', s.totals.dropped)
    $('updated').textContent = 'updated ' + new Date(s.now).toLocaleTimeString()
    document.getElementById('checks').innerHTML = Object.keys(r.checks).map(function (k) {
      var c = r.checks[k]
      return '<tr data-check="' + k + '"><td>' + k + '</td><td class="state" style="color:var(--' + c.status + ')">' + c.status + '</td><td>' + esc(c.detail) + '</td></tr>'
    }).join('')
    document.getElementById('drops').innerHTML = s.drops.length ? s.drops.slice().reverse().map(function (d) {
      return '<tr' + (d.class ? ' data-class="' + esc(d.class) + '"' : '') + '><td>' + new Date(d.t).toLocaleTimeString() + '</td><td>' + esc(d.reason) + (d.class ? ' <span class="muted">(class ' + esc(d.class) + ')</span>' : '') + '</td><td>' + fmt(d.count) + '</td></tr>'
    }).join('') : '<tr><td colspan="3" class="muted">none</td></tr>'
    chart('rates', s.series, [{ key: 'in', color: '#1f6fb4' }, { key: 'out', color: '#2a9d3a' }])
    chart('backlog', s.series, [{ key: 'backlog', color: '#c9302c' }, { key: 'oldestAgeSeconds', color: '#d98b0b' }])
  }
  function poll() {
    fetch('/status.json', { cache: 'no-store' }).then(function (r) { return r.json() }).then(function (s) {
      document.getElementById('error').textContent = ''
      render(s)
    }).catch(function (e) { document.getElementById('error').textContent = 'gateway unreachable: ' + e.message }).then(function () { setTimeout(poll, 1000) })
  }
  poll()
})()
</script>
</body>
</html>
`

// Live balancer dashboard: one WebSocket message a second updates every chart in place.
"use strict";

const POINTS = 60;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];
const MB = 1024 * 1024;

// What each line chart plots per backend, from one backend row of a snapshot.
const SERIES = {
  rate: (b) => b.requests_per_second,
  streams: (b) => b.streams,
  bandwidth: (b) => b.bandwidth_bytes_per_second / MB,
  response: (b) => b.response_time_ms,
  cpu: (b) => b.cpu_percent,
  memory: (b) => b.memory_bytes / MB,
  score: (b) => b.score,
};

const state = { charts: {}, updates: 0, backends: [], labels: [] };
window.vspDashboard = state;

function lineChart(id) {
  return new Chart(document.getElementById(id), {
    type: "line",
    data: { labels: state.labels, datasets: [] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      elements: { point: { radius: 0 }, line: { borderWidth: 2, tension: 0.2 } },
      scales: { y: { beginAtZero: true }, x: { ticks: { maxTicksLimit: 6 } } },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
    },
  });
}

function setUp() {
  for (const key of Object.keys(SERIES)) state.charts[key] = lineChart(`chart-${key}`);
  state.charts.distribution = new Chart(document.getElementById("chart-distribution"), {
    type: "doughnut",
    data: { labels: [], datasets: [{ data: [], backgroundColor: COLORS }] },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
               plugins: { legend: { position: "bottom" } } },
  });
}

function ensureDatasets(names) {
  if (names.join() === state.backends.join()) return;
  state.backends = names;
  for (const key of Object.keys(SERIES)) {
    state.charts[key].data.datasets = names.map((name, i) => ({
      label: name, data: [], borderColor: COLORS[i % COLORS.length],
      backgroundColor: COLORS[i % COLORS.length],
    }));
  }
  state.charts.distribution.data.labels = names;
}

function push(snapshot) {
  const rows = snapshot.backends;
  ensureDatasets(rows.map((b) => b.name));
  state.labels.push(new Date(snapshot.time * 1000).toLocaleTimeString());
  if (state.labels.length > POINTS) state.labels.shift();
  for (const [key, pick] of Object.entries(SERIES)) {
    const chart = state.charts[key];
    chart.data.labels = state.labels;
    rows.forEach((row, i) => {
      const data = chart.data.datasets[i].data;
      data.push(pick(row));
      if (data.length > POINTS) data.shift();
    });
  }
  state.charts.distribution.data.datasets[0].data = rows.map((b) => b.requests_total);
}

function render(snapshot) {
  document.getElementById("strategy").textContent = `strategy: ${snapshot.strategy}`;
  const t = snapshot.totals;
  document.getElementById("totals").textContent =
    `${t.requests_per_second.toFixed(1)} req/s · ` +
    `${(t.bandwidth_bytes_per_second / MB).toFixed(2)} MB/s · ${t.in_flight} in flight · ` +
    `${t.backends_up}/${snapshot.backends.length} up · ${t.retries_total} retries`;
  const body = document.querySelector("#backends tbody");
  body.replaceChildren(...snapshot.backends.map((b) => {
    const tr = document.createElement("tr");
    tr.className = b.state;
    const cells = [b.name, b.state, b.tier, b.score.toFixed(1), b.requests_per_second.toFixed(1),
      `${(b.share * 100).toFixed(0)}%`, b.in_flight, b.response_time_ms.toFixed(1),
      b.cpu_percent.toFixed(0), (b.memory_bytes / MB).toFixed(0), b.failures_total];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    return tr;
  }));
  for (const chart of Object.values(state.charts)) chart.update("none");
  state.updates += 1;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  const status = document.getElementById("connection");
  socket.onopen = () => { status.textContent = "live"; status.className = "up"; };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    const snapshots = message.type === "history" ? message.snapshots : [message.snapshot];
    if (message.type === "history") {
      // A reconnect replays the history, so start the series over rather than repeat it.
      state.labels.length = 0;
      state.backends = [];
    }
    if (snapshots.length === 0) return;
    snapshots.forEach(push);
    render(snapshots[snapshots.length - 1]);
  };
  socket.onclose = () => {
    status.textContent = "reconnecting…"; status.className = "down";
    setTimeout(connect, 1000);
  };
}

setUp();
connect();

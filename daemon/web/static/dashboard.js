// vlmtrader dashboard: first paint from the JSON endpoints, then live from /events (SSE).
// Every value from the daemon reaches the page as textContent, never as HTML.
"use strict";

(() => {
  const LC = window.LightweightCharts;
  const TOKEN_KEY = "vlmtrader.token";
  const THEME_KEY = "vlmtrader.theme";
  const MAX_ORDERS = 50;
  const MAX_NOTICES = 100;
  const $ = (id) => document.getElementById(id);

  const state = {
    charts: new Map(), // symbol -> {chart, series, markers, list, last}
    pending: new Map(), // symbol -> markers waiting for their bar
    orders: new Map(), // client_order_id -> row element
    rejections: {},
    equity: null,
    equityChart: null,
    selected: null,
    waiting: [], // live events that arrived before the first paint
  };

  // ---- small helpers -------------------------------------------------------------------------
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function row(cells, cls) {
    const tr = el("tr", null, cls);
    for (const [text, cellCls] of cells) tr.append(el("td", text, cellCls));
    return tr;
  }
  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren(...rows);
    if (!rows.length) {
      const tr = el("tr", null, "empty");
      const td = el("td", emptyText);
      td.colSpan = columns;
      tr.append(td);
      tbody.append(tr);
    }
  }
  const money = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const num = (v, d = 4) => (v === null || v === undefined || Number.isNaN(Number(v)) ? "–" : Number(Number(v).toFixed(d)).toString());
  const pct = (v) => (v === null || v === undefined ? "–" : `${(Number(v) * 100).toFixed(2)}%`);
  const seconds = (iso) => Math.floor(Date.parse(iso) / 1000);
  const clock = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "–");
  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  // ---- theme ---------------------------------------------------------------------------------
  function dark() {
    const theme = document.documentElement.dataset.theme;
    if (theme) return theme === "dark";
    return window.matchMedia("(prefers-color-scheme: dark)").matches;
  }
  function chartColors() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      layout: { background: { color: v("--card") }, textColor: v("--fg") },
      grid: { vertLines: { color: v("--line") }, horzLines: { color: v("--line") } },
      rightPriceScale: { borderColor: v("--line") },
      timeScale: { borderColor: v("--line"), timeVisible: true, secondsVisible: false },
    };
  }
  function applyTheme() {
    const saved = localStorage.getItem(THEME_KEY);
    if (saved) document.documentElement.dataset.theme = saved;
    else delete document.documentElement.dataset.theme;
    const options = chartColors();
    for (const c of state.charts.values()) c.chart.applyOptions(options);
    if (state.equityChart) state.equityChart.applyOptions(options);
  }
  $("theme").addEventListener("click", () => {
    localStorage.setItem(THEME_KEY, dark() ? "light" : "dark");
    applyTheme();
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);

  // ---- token and controls --------------------------------------------------------------------
  const tokenInput = $("token");
  tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
  tokenInput.addEventListener("input", () => {
    if (tokenInput.value) sessionStorage.setItem(TOKEN_KEY, tokenInput.value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
  $("token-form").addEventListener("submit", (e) => e.preventDefault());
  $("token-forget").addEventListener("click", () => {
    tokenInput.value = "";
    sessionStorage.removeItem(TOKEN_KEY);
  });

  async function control(command) {
    const result = $("control-result");
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    result.className = "result";
    result.textContent = `${command}…`;
    try {
      const response = await fetch(`/control/${command}`, {
        method: "POST",
        headers,
        body: JSON.stringify({ reason: "dashboard" }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.ok && body.ok) {
        result.className = "result ok";
        result.textContent = `${command}: done`;
      } else {
        const why = body.detail || body.error || body.reason || `HTTP ${response.status}`;
        result.className = "result bad";
        result.textContent = `${command} refused (${response.status}): ${why}`;
      }
    } catch (error) {
      result.className = "result bad";
      result.textContent = `${command} failed: ${error.message}`;
    }
  }
  $("pause").addEventListener("click", () => control("pause"));
  $("resume").addEventListener("click", () => control("resume"));
  $("flatten").addEventListener("click", () => {
    if (window.confirm("Close every position and cancel every working order?")) control("flatten");
  });

  // ---- status --------------------------------------------------------------------------------
  function renderStatus(s) {
    $("mode").textContent = `${s.mode || ""} ${s.account || ""}`.trim();
    const tradingState = $("trading-state");
    tradingState.textContent = s.paused ? "paused" : s.trading_state || s.state || "?";
    tradingState.className = `pill ${s.paused || s.trading_state !== "active" ? "bad" : "ok"}`;
    $("equity").textContent = money(s.equity);
    $("pnl-today").textContent = money(s.pnl_today);
    $("pnl-today").className = Number(s.pnl_today) < 0 ? "sell" : "buy";
    $("cash").textContent = money(s.cash);
    $("drawdown").textContent = pct(s.drawdown);
    $("scorer").textContent = s.scorer || "–";
    $("bundle").textContent = s.bundle_id || "none (rule scorer)";
    $("signal").textContent = s.signal || "–";
    const drift = s.drift;
    $("drift").textContent = drift
      ? `max PSI ${num(drift.max_psi, 3)} on ${(drift.drifted || []).join(", ")}: ${drift.recommendation || ""}`
      : "none reported since start";
    const shadow = s.shadow;
    $("shadow").textContent = shadow
      ? `${shadow.bundle_id}: agrees on direction ${pct(shadow.direction_agreement)} of ${shadow.signals} signals`
      : "no shadow bundle";
    $("risk-state").textContent = s.trading_state || "–";
    $("paused").textContent = s.paused ? "yes" : "no";
    const positions = Object.entries(s.positions || {}).map(([symbol, p]) =>
      row([[symbol], [num(p.quantity), "num"], [num(p.average_price), "num"], [money(p.realized_pnl), "num"]]),
    );
    fill($("positions"), positions, "flat", 4);
    const working = (s.open_orders || []).map((o) =>
      row([[o.client_order_id], [o.symbol], [o.side, o.side], [num(o.quantity), "num"], [num(o.filled_quantity), "num"], [o.status]]),
    );
    fill($("working"), working, "none", 6);
    const live = s.live || {};
    $("footer").textContent = `bars ${s.bars ?? "–"} · orders ${s.orders_submitted ?? "–"} · fills ${s.fills ?? "–"} · last bar ${clock(s.last_bar_ts)} · live clients ${live.clients ?? "–"}`;
  }

  function renderRejections() {
    const rows = Object.entries(state.rejections)
      .sort((a, b) => b[1] - a[1])
      .map(([reason, n]) => row([[reason], [n, "num"]]));
    fill($("rejections"), rows, "none", 2);
  }

  function notice(fields) {
    const list = $("notices");
    const text = Object.entries(fields)
      .filter(([k]) => !["event", "timestamp", "level", "logger"].includes(k))
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
      .join(" ");
    const item = el("li", `${clock(fields.timestamp)} ${fields.event} ${text}`, fields.level === "warning" ? "warn" : "");
    list.prepend(item);
    while (list.children.length > MAX_NOTICES) list.lastChild.remove();
    if (fields.event === "risk.rejected") {
      state.rejections[fields.reason] = (state.rejections[fields.reason] || 0) + 1;
      renderRejections();
    }
  }

  // ---- candles -------------------------------------------------------------------------------
  function chartFor(symbol) {
    let c = state.charts.get(symbol);
    if (c) return c;
    const figure = el("figure");
    figure.dataset.symbol = symbol;
    figure.append(el("figcaption", symbol));
    const box = el("div", null, "chart");
    figure.append(box);
    const boxes = [...$("charts").children];
    const after = boxes.find((f) => f.dataset.symbol > symbol);
    $("charts").insertBefore(figure, after || null);
    const chart = LC.createChart(box, { autoSize: true, ...chartColors() });
    const css = getComputedStyle(document.documentElement);
    const up = css.getPropertyValue("--up").trim();
    const down = css.getPropertyValue("--down").trim();
    const series = chart.addSeries(LC.CandlestickSeries, {
      upColor: up, downColor: down, wickUpColor: up, wickDownColor: down, borderVisible: false,
    });
    c = { chart, series, markers: LC.createSeriesMarkers(series, []), list: [], last: 0 };
    state.charts.set(symbol, c);
    return c;
  }
  function candle(b) {
    return { time: b.time, open: b.open, high: b.high, low: b.low, close: b.close };
  }
  function addBar(b) {
    const c = chartFor(b.symbol);
    if (b.time < c.last) return;
    c.series.update(candle(b));
    c.last = b.time;
    // Orders sent on this batch were announced before its bars: they get this bar's time.
    const waiting = state.pending.get(b.symbol);
    if (waiting) {
      state.pending.delete(b.symbol);
      for (const { coid, m } of waiting) {
        addMarker(b.symbol, { ...m, time: b.time });
        setCell(coid, 0, clock(new Date(b.time * 1000).toISOString()));
      }
    }
  }
  function marker(side, quantity, time) {
    const buy = String(side).toLowerCase() === "buy";
    const css = getComputedStyle(document.documentElement);
    return {
      time,
      position: buy ? "belowBar" : "aboveBar",
      shape: buy ? "arrowUp" : "arrowDown",
      color: css.getPropertyValue(buy ? "--up" : "--down").trim(),
      text: `${buy ? "B" : "S"} ${num(quantity, 2)}`,
    };
  }
  function addMarker(symbol, m) {
    const c = state.charts.get(symbol);
    if (!c) return;
    c.list.push(m);
    c.list.sort((a, b) => a.time - b.time);
    if (c.list.length > 200) c.list.splice(0, c.list.length - 200);
    c.markers.setMarkers(c.list);
  }

  // ---- equity --------------------------------------------------------------------------------
  function equityChart(points) {
    state.equityChart = LC.createChart($("equity-chart"), { autoSize: true, ...chartColors() });
    const css = getComputedStyle(document.documentElement);
    state.equity = state.equityChart.addSeries(LC.AreaSeries, {
      lineColor: css.getPropertyValue("--accent").trim(),
      topColor: "rgba(41, 98, 255, 0.25)",
      bottomColor: "rgba(41, 98, 255, 0.02)",
      lineWidth: 2,
    });
    state.equity.setData(points.map(([time, value]) => ({ time, value })));
    state.equityLast = points.length ? points[points.length - 1][0] : 0;
  }
  function addEquity(time, value) {
    if (!state.equity || time <= state.equityLast) return;
    state.equity.update({ time, value });
    state.equityLast = time;
  }

  // ---- orders --------------------------------------------------------------------------------
  function orderRow(o, fresh) {
    const tr = row([
      [clock(o.created_ts)], [o.client_order_id], [o.symbol], [o.side, o.side],
      [num(o.quantity), "num"], [o.average_fill_price ? num(o.average_fill_price) : "–", "num"],
      [o.status], [o.reason],
    ], fresh ? "fresh" : "");
    tr.dataset.order = o.client_order_id;
    tr.addEventListener("click", () => explain(o.client_order_id));
    state.orders.set(o.client_order_id, tr);
    return tr;
  }
  function prependOrder(o) {
    const tbody = $("orders");
    tbody.querySelector("tr.empty")?.remove();
    if (state.orders.has(o.client_order_id)) return;
    tbody.prepend(orderRow(o, true));
    while (tbody.children.length > MAX_ORDERS) {
      const last = tbody.lastChild;
      state.orders.delete(last.dataset.order);
      last.remove();
    }
  }
  function setCell(coid, index, text) {
    const tr = state.orders.get(coid);
    if (tr && tr.children[index]) tr.children[index].textContent = text;
  }
  function onOrder(e) {
    if (e.event === "order.submitted") {
      prependOrder({ ...e, created_ts: null, status: "submitted", average_fill_price: null });
      const waiting = state.pending.get(e.symbol) || [];
      waiting.push({ coid: e.client_order_id, m: marker(e.side, e.quantity, 0) });
      state.pending.set(e.symbol, waiting);
    } else if (e.event === "order.status_changed") {
      setCell(e.client_order_id, 6, e.status);
    } else if (e.event === "order.cancel_requested") {
      setCell(e.client_order_id, 6, "cancel requested");
    }
  }
  function onFill(e) {
    setCell(e.client_order_id, 5, num(e.price));
    setCell(e.client_order_id, 6, "filled");
  }

  // ---- explanations --------------------------------------------------------------------------
  async function explain(coid) {
    const panel = $("explain");
    for (const tr of state.orders.values()) tr.classList.toggle("selected", tr.dataset.order === coid);
    panel.hidden = false;
    $("explain-order").textContent = coid;
    $("explain-summary").textContent = "loading…";
    const response = await fetch(`/orders/${encodeURIComponent(coid)}/explain`, { headers: { Accept: "application/json" } });
    if (!response.ok) {
      clearExplanation();
      $("explain-summary").textContent = response.status === 404
        ? "No explanation stored for this order (rule scorer, flatten, or explanations off)."
        : `The explanation could not be read (HTTP ${response.status}).`;
      return;
    }
    renderExplanation(await response.json());
  }
  function clearExplanation() {
    $("explain-chart-box").hidden = true;
    $("explain-chart").removeAttribute("src");
    for (const id of ["explain-texts", "explain-patterns", "explain-contributions", "explain-analogs"]) $(id).replaceChildren();
    $("explain-fusion").textContent = "";
    $("explain-risk").textContent = "";
  }
  function renderExplanation(x) {
    clearExplanation();
    $("explain-summary").textContent =
      `${x.side} ${num(x.quantity, 2)} ${x.symbol} at the bar closing ${clock(x.ts)} · scorer ${x.scorer || "–"} · bundle ${x.bundle_id || "–"} · reason ${x.reason || "–"}`;
    if (x.chart && x.chart.url) {
      $("explain-chart").src = x.chart.url;
      $("explain-chart-box").hidden = false;
    }
    fill($("explain-texts"), (x.texts || []).map((t) => row([[t.text], [t.pattern], [num(t.similarity, 3), "num"]])), "none", 3);
    const patterns = Object.entries(x.patterns || {}).sort((a, b) => b[1] - a[1]);
    fill($("explain-patterns"), patterns.map(([name, p]) => row([[name], [pct(p), "num"]])), "none", 2);
    fill($("explain-contributions"), (x.contributions || []).map((c) => row([[c.feature], [num(c.value), "num"]])), "none", 2);
    const f = x.fusion;
    $("explain-fusion").textContent = f
      ? `${f.describe || ""} · P(up) ${num(f.p_up, 3)} · disagreement ${num(f.disagreement, 3)} · entropy ${num(f.entropy, 3)} · ` +
        Object.entries(f.probabilities || {}).map(([k, v]) => `${k} ${num(v, 3)}`).join(", ")
      : "no model fusion (rule scorer)";
    const r = x.risk;
    $("explain-risk").textContent = r ? `${r.accepted ? "accepted" : "rejected"}: ${r.reason || ""}${r.detail ? ` (${r.detail})` : ""}` : "–";
    const analogs = (x.analogs || []).map((a) => {
      const figure = el("figure");
      if (a.chart_url) {
        const img = el("img");
        img.src = a.chart_url;
        img.alt = `${a.symbol} ${a.ts}`;
        figure.append(img);
      }
      const ret = Number(a.forward_return);
      figure.append(el("figcaption", `${a.symbol} ${clock(a.ts)} · then ${pct(ret)} · sim ${num(a.similarity, 3)}`, ret < 0 ? "sell" : "buy"));
      return figure;
    });
    $("explain-analogs").replaceChildren(...analogs);
    if (!analogs.length) $("explain-analogs").append(el("p", "no analogs (the bundle has no analog index)", "muted"));
  }
  $("explain-close").addEventListener("click", () => {
    $("explain").hidden = true;
    for (const tr of state.orders.values()) tr.classList.remove("selected");
  });

  // ---- live ----------------------------------------------------------------------------------
  function connect() {
    const live = $("live");
    const source = new EventSource("/events");
    source.addEventListener("open", () => { live.textContent = "live"; live.className = "pill ok"; });
    source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "pill bad"; });
    // Until the first paint is done, events wait: then they apply on top of it, in order.
    const on = (name, handler) => source.addEventListener(name, (m) => {
      const value = JSON.parse(m.data);
      if (state.waiting) state.waiting.push(() => handler(value));
      else handler(value);
    });
    on("status", renderStatus);
    on("bar", (e) => { for (const b of e.bars) addBar(b); addEquity(e.time, e.equity); });
    on("order", (e) => { onOrder(e); if (e.event !== "order.submitted") notice(e); });
    on("fill", onFill);
    on("notice", notice);
  }

  async function start() {
    applyTheme();
    connect();
    const [bars, orders, equity, risk] = await Promise.all([
      getJson("/api/bars?limit=200"), getJson(`/api/orders?limit=${MAX_ORDERS}`),
      getJson("/api/equity"), getJson("/api/risk"),
    ]);
    for (const [symbol, list] of Object.entries(bars.bars)) {
      const c = chartFor(symbol);
      const data = list.map(candle);
      if (data.length) {
        c.series.setData(data);
        c.last = data[data.length - 1].time;
      }
    }
    fill($("orders"), orders.orders.map((o) => orderRow(o, false)), "no orders yet", 8);
    for (const o of [...orders.orders].reverse()) {
      if (state.charts.has(o.symbol)) addMarker(o.symbol, marker(o.side, o.quantity, seconds(o.created_ts)));
    }
    equityChart(equity.points);
    state.rejections = { ...risk.rejections };
    renderRejections();
    const waiting = state.waiting;
    state.waiting = null;
    for (const apply of waiting) apply();
    document.body.dataset.loaded = "true";
    performance.mark("vlmtrader.painted"); // bench/bench_dashboard.py: first paint with the data
  }
  start().catch((error) => {
    $("control-result").className = "result bad";
    $("control-result").textContent = `dashboard: ${error.message}`;
  });
})();

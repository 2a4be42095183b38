// fedmarket dashboard: renders the coordinator's JSON API (/v1/...) and polls it while a round
// runs. No framework and no innerHTML: every value reaches the page as text, so nothing a task,
// a spec or an account says can become markup. The sentences (status, verdict reasons) come from
// the API (backend/dashboard/status.py); this file only formats numbers, times and hashes.
"use strict";

(() => {
  const POLL_MS = 2000;
  const TOKEN = 10n ** 18n; // FMT has 18 decimals; JSON carries base units as strings
  const SVG_NS = "http://www.w3.org/2000/svg";

  // ---------------------------------------------------------------- DOM

  function append(node, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function build(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    return node;
  }

  const el = (tag, attrs, ...children) => append(build(document.createElement(tag), attrs), children);
  const svg = (tag, attrs, ...children) => append(build(document.createElementNS(SVG_NS, tag), attrs), children);

  function fill(id, ...children) {
    const node = document.getElementById(id);
    node.replaceChildren();
    return append(node, children);
  }

  function table(headers, rows, empty) {
    if (!rows.length) return el("p", { class: "empty" }, empty);
    const head = el("tr", {}, headers.map((h) => (typeof h === "string" ? el("th", {}, h) : el("th", h.attrs, h.text))));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, rows));
  }

  const num = (...children) => el("td", { class: "num" }, children);
  const badge = (text, kind) => el("span", { class: `badge ${kind || text}` }, String(text).replace(/_/g, " "));
  const fact = (label, ...value) => el("div", {}, el("dt", {}, label), el("dd", {}, value));

  // ---------------------------------------------------------------- formats

  function fmt(amount) {
    if (amount === null || amount === undefined) return "—";
    const value = BigInt(String(amount));
    const negative = value < 0n;
    const abs = negative ? -value : value;
    const whole = abs / TOKEN;
    const decimals = (abs % TOKEN).toString().padStart(18, "0").slice(0, 4).replace(/0+$/, "");
    let text = whole.toLocaleString("en-US") + (decimals ? `.${decimals}` : "");
    if (abs > 0n && text === "0") text = "< 0.0001";
    return `${negative ? "−" : ""}${text} FMT`;
  }

  function pct(fixed, digits = 1) {
    // a 1e18 fixed-point share (consensus, agreement, normalized score) as a percentage
    if (fixed === null || fixed === undefined) return "—";
    return `${(Number((BigInt(String(fixed)) * 1000000n) / TOKEN) / 10000).toFixed(digits)}%`;
  }

  const bps = (value) => `${(value / 100).toFixed(value % 100 ? 2 : 0)}%`;
  const loss = (value) => (value === null || value === undefined ? "—" : value.toFixed(4));
  const signed = (value) => (value === null || value === undefined ? "—" : `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(4)}`);
  const score = (entry) => Number(entry) * 1e-9; // a score entry is a loss improvement in units of 1e-9

  // Chain time, not this machine's: deadlines are the chain's, and a devnet's clock can run ahead.
  const clock = { offset: 0 };
  const setClock = (chainTime) => {
    if (chainTime !== null && chainTime !== undefined) clock.offset = chainTime - Date.now() / 1000;
  };
  const chainNow = () => Date.now() / 1000 + clock.offset;

  function span(seconds) {
    const s = Math.round(Math.abs(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d`;
  }

  function relative(t) {
    const delta = t - chainNow();
    if (Math.abs(delta) < 1) return "now";
    return delta > 0 ? `in ${span(delta)}` : `${span(delta)} ago`;
  }

  function renderTime(node) {
    const t = Number(node.dataset.t);
    const rel = relative(t);
    if (node.classList.contains("countdown")) {
      node.textContent = t > chainNow() ? `ends ${rel}` : `deadline passed ${rel}`;
    } else {
      const date = new Date(t * 1000);
      const today = date.toDateString() === new Date(chainNow() * 1000).toDateString();
      node.textContent = `${today ? date.toLocaleTimeString() : date.toLocaleString()} (${rel})`;
      node.title = date.toString();
    }
    return node;
  }

  function when(t) {
    if (!t) return "—";
    return renderTime(el("time", { class: "when", datetime: new Date(t * 1000).toISOString(), "data-t": t }));
  }

  function countdown(t) {
    if (!t) return null;
    return renderTime(el("time", { class: "countdown", datetime: new Date(t * 1000).toISOString(), "data-t": t }));
  }

  function tick() {
    for (const node of document.querySelectorAll("time[data-t]")) renderTime(node);
  }

  const shortHex = (hex) => (hex ? `${hex.slice(0, 6)}…${hex.slice(-4)}` : "—");
  const account = (address) =>
    address ? el("a", { class: "mono", href: `/accounts/${address}`, title: address }, shortHex(address)) : "—";
  const blob = (cid, label) =>
    cid ? el("a", { class: "mono", href: `/v1/blobs/${cid}`, title: cid, download: cid }, label || `${cid.slice(0, 7)}…${cid.slice(-6)}`) : "—";
  const tx = (hash) => (hash ? el("span", { class: "mono", title: hash }, hash) : "—");
  const roundLink = (taskId, round) => el("a", { href: `/tasks/${taskId}/rounds/${round}` }, `round ${round}`);

  // ---------------------------------------------------------------- polling

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path} answered ${response.status}`);
    return response.json();
  }

  const seen = new Map();
  function changed(key, data) {
    // re-render a section only when its data changed: a poll keeps focus, selection and scroll
    const text = JSON.stringify(data);
    if (seen.get(key) === text) return false;
    seen.set(key, text);
    return true;
  }

  function poll(refresh) {
    const live = document.getElementById("live");
    live.hidden = false;
    async function once() {
      try {
        await refresh();
        live.textContent = "live";
        live.className = "live ok";
      } catch (error) {
        live.textContent = `not updating: ${error.message}; retrying`;
        live.className = "live bad";
      }
      setTimeout(once, POLL_MS);
    }
    once();
    setInterval(tick, 1000);
  }

  function statusLine(task, extra) {
    const node = document.getElementById("status");
    node.className = `status-line ${task.status === "open" ? "" : task.status === "completed" ? "done" : "closed"}`;
    const phase = task.phase && task.phase !== "none" && task.status === "open"
      ? el("span", { class: "phase-label" }, "phase ", badge(task.phase)) : null;
    fill("status", el("span", { class: "sentence", id: "status-text" }, task.status_text), phase, countdown(task.phase_deadline), extra);
  }

  // ---------------------------------------------------------------- market

  function marketPage() {
    poll(async () => {
      const list = await getJSON("/v1/tasks");
      setClock(list.chain_time);
      if (!changed("tasks", list.tasks)) return;
      const tasks = [...list.tasks].sort((a, b) => (b.status === "open") - (a.status === "open") || b.task_id - a.task_id);
      const rows = tasks.map((t) =>
        el(
          "tr",
          { class: t.status === "open" ? "open-task" : "closed-task", "data-task-id": t.task_id },
          el("td", {}, el("a", { href: `/tasks/${t.task_id}` }, `#${t.task_id}`)),
          el("td", { class: "name" }, el("a", { href: `/tasks/${t.task_id}` }, t.name || `task ${t.task_id}`)),
          el("td", {}, badge(t.status)),
          el(
            "td",
            {},
            el("span", { class: "sentence status-text" }, t.status_text),
            t.status === "open" && t.phase && t.phase !== "none"
              ? el("span", { class: "sub" }, badge(t.phase), " ", countdown(t.phase_deadline))
              : null,
          ),
          num(fmt(t.terms.reward_pool)),
          num(`${t.rounds_closed} / ${t.terms.rounds}`),
          num(el("span", { title: `needs ${t.terms.min_trainers} to start a round` }, `${t.trainers_joined} / ${t.terms.max_trainers}`)),
          num(el("span", { title: `needs ${t.terms.min_validators} to start a round` }, `${t.validators_joined} / ${t.terms.max_validators}`)),
          num(fmt(t.terms.min_stake), el("span", { class: "sub" }, `validators ≥ ${fmt(t.terms.min_validator_stake)}`)),
        ),
      );
      const headers = ["Task", "Name", "Status", "Now", { text: "Reward pool", attrs: { class: "num" } },
        { text: "Rounds", attrs: { class: "num" } }, { text: "Trainers", attrs: { class: "num" } },
        { text: "Validators", attrs: { class: "num" } }, { text: "Stake", attrs: { class: "num" } }];
      fill("tasks", table(headers, rows, "No task yet: post one with scripts/post_task.py (see the README)."));
    });
  }

  // ---------------------------------------------------------------- task

  const SERIES = {
    accuracy: { label: "accuracy", format: (v) => `${(v * 100).toFixed(1)}%`, floor: 0, ceiling: 1 },
    loss: { label: "loss", format: (v) => v.toFixed(3), floor: 0 },
    loss_drop: { label: "validators' loss drop", format: (v) => v.toFixed(4) },
  };

  function lineChart(points, rounds, keys) {
    // keys[0] on the left axis, keys[1] (if any) on the right; x from round 0 to the task's last
    const W = 1000, H = 250, m = { l: 64, r: keys.length > 1 ? 64 : 24, t: 34, b: 42 };
    const x = (round) => m.l + (round / Math.max(rounds, 1)) * (W - m.l - m.r);
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${keys.map((k) => SERIES[k].label).join(" and ")} per round` });
    const scales = keys.map((key) => {
      const values = points.map((p) => p[key]).filter((v) => v !== null && v !== undefined);
      const spec = SERIES[key];
      let lo = spec.floor !== undefined ? spec.floor : Math.min(0, ...values);
      let hi = spec.ceiling !== undefined ? spec.ceiling : Math.max(...values, lo + 1e-9) * 1.12;
      if (hi <= lo) hi = lo + 1;
      return { key, values, lo, hi, y: (v) => m.t + (1 - (v - lo) / (hi - lo)) * (H - m.t - m.b) };
    });
    for (let i = 0; i <= 4; i++) {
      const y = m.t + (i / 4) * (H - m.t - m.b);
      chart.append(svg("line", { class: "grid", x1: m.l, x2: W - m.r, y1: y, y2: y }));
      scales.forEach((s, side) => {
        const value = s.hi - (i / 4) * (s.hi - s.lo);
        chart.append(svg("text", { class: `s-${s.key}`, x: side ? W - m.r + 8 : m.l - 8, y: y + 4, "text-anchor": side ? "start" : "end" }, SERIES[s.key].format(value)));
      });
    }
    const every = Math.ceil((rounds + 1) / 16);
    for (let r = 0; r <= rounds; r += every) {
      chart.append(svg("text", { x: x(r), y: H - m.b + 18, "text-anchor": "middle" }, String(r)));
    }
    chart.append(svg("text", { x: (m.l + W - m.r) / 2, y: H - 6, "text-anchor": "middle", class: "axis-title" }, "round"));
    chart.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    let legendX = m.l;
    for (const s of scales) {
      const measured = points.filter((p) => p[s.key] !== null && p[s.key] !== undefined);
      if (measured.length > 1) {
        chart.append(svg("polyline", { class: `line s-${s.key}`, points: measured.map((p) => `${x(p.round)},${s.y(p[s.key])}`).join(" ") }));
      }
      for (const p of measured) {
        chart.append(svg("circle", { class: `point s-${s.key}`, cx: x(p.round), cy: s.y(p[s.key]), r: 4.5, "data-round": p.round },
          svg("title", {}, `round ${p.round}: ${SERIES[s.key].label} ${SERIES[s.key].format(p[s.key])}`)));
      }
      chart.append(svg("rect", { class: `s-${s.key}`, x: legendX, y: 9, width: 14, height: 4, rx: 2 }));
      chart.append(svg("text", { class: `axis-title s-${s.key}`, x: legendX + 20, y: 15 }, SERIES[s.key].label));
      legendX += 30 + SERIES[s.key].label.length * 7;
    }
    const count = new Set(scales[0].values.length ? points.filter((p) => p[scales[0].key] !== null).map((p) => p.round) : []).size;
    chart.setAttribute("data-points", String(count));
    if (!count) {
      chart.append(svg("text", { class: "placeholder", x: (m.l + W - m.r) / 2, y: H / 2, "text-anchor": "middle" }, "no point yet: the first one appears when a round settles"));
    }
    return chart;
  }

  function taskPage(taskId) {
    poll(async () => {
      const [task, standings, metrics] = await Promise.all([
        getJSON(`/v1/tasks/${taskId}`),
        getJSON(`/v1/tasks/${taskId}/standings`),
        getJSON(`/v1/tasks/${taskId}/metrics`),
      ]);
      setClock(task.chain_time);
      if (changed("task", { ...task, chain_time: null })) renderTask(task);
      if (changed("metrics", [metrics, task.terms.rounds, task.rounds])) renderMetrics(task, metrics);
      if (changed("standings", standings)) renderStandings(standings);
    });
  }

  function renderTask(task) {
    const terms = task.terms;
    fill("title", `Task ${task.task_id}`, task.name ? ` · ${task.name}` : "", " ", badge(task.status));
    document.title = `Task ${task.task_id}${task.name ? ` · ${task.name}` : ""} · fedmarket`;
    statusLine(task);
    const latest = [...task.rounds].reverse().find((r) => r.new_model_cid);
    fill(
      "facts",
      fact("Owner", account(task.owner)),
      fact("Reward pool", fmt(terms.reward_pool)),
      fact("Rounds done", `${task.rounds_closed} / ${terms.rounds}`),
      fact("Trainers joined", `${task.trainers_joined} / ${terms.max_trainers}`, el("span", { class: "muted" }, ` (needs ${terms.min_trainers})`)),
      fact("Validators joined", `${task.validators_joined} / ${terms.max_validators}`, el("span", { class: "muted" }, ` (needs ${terms.min_validators})`)),
      fact("Trainer stake", fmt(terms.min_stake)),
      fact("Validator stake", `≥ ${fmt(terms.min_validator_stake)}`),
      fact("Validators' share", bps(terms.validator_share_bps)),
      fact("Slash", `${bps(terms.slash_bps)} of stake, burned`),
      fact("Owner's refund", task.refund === null ? (task.status === "open" ? "at the end" : "—") : fmt(task.refund)),
      fact(task.status === "completed" ? "Final model" : "Latest model", latest ? blob(latest.new_model_cid) : blob(task.model_cid)),
      fact("Spec", blob(task.spec_cid)),
    );
  }

  function renderMetrics(task, metrics) {
    const evaluated = metrics.evaluation_samples !== null;
    fill("chart", lineChart(metrics.points, task.terms.rounds, evaluated ? ["accuracy", "loss"] : ["loss_drop"]));
    fill("chart-note", evaluated ? metrics.evaluation : `Validators' loss drop: the loss improvement they measured on their own data (median). ${metrics.evaluation}.`);
    const byRound = new Map(metrics.points.map((p) => [p.round, p]));
    const rows = [...task.rounds].reverse().map((r) => {
      const p = byRound.get(r.round) || {};
      return el(
        "tr",
        { "data-round": r.round },
        el("td", {}, roundLink(task.task_id, r.round)),
        el("td", {}, badge(r.status)),
        num(`${p.aggregated ?? 0} / ${p.revealed ?? 0}`),
        num(fmt(r.payout)),
        num(signed(p.loss_drop)),
        num(p.accuracy === null || p.accuracy === undefined ? "—" : SERIES.accuracy.format(p.accuracy)),
        num(loss(p.loss)),
        el("td", {}, blob(r.new_model_cid, "model")),
        el("td", {}, blob(r.report_cid, "report")),
        el("td", {}, when(p.closed_at)),
      );
    });
    const headers = ["Round", "Status", { text: "Aggregated / revealed", attrs: { class: "num" } }, { text: "Paid", attrs: { class: "num" } },
      { text: "Loss drop", attrs: { class: "num", title: "validators' median" } }, { text: "Accuracy", attrs: { class: "num" } },
      { text: "Loss", attrs: { class: "num" } }, "Model", "Report", "Closed"];
    fill("rounds", table(headers, rows, "No round started yet."));
  }

  function slashList(slashes) {
    if (!slashes.length) return "—";
    return slashes.map((s) => el("span", { class: "sub" }, badge(`round ${s.round}: −${fmt(s.amount)}`, "slashed"), " ", s.reason));
  }

  function renderStandings(standings) {
    const trainers = standings.trainers.map((t, i) =>
      el(
        "tr",
        { "data-account": t.trainer },
        num(i + 1),
        el("td", {}, account(t.trainer), t.joined ? null : el("span", { class: "sub" }, "not joined")),
        num(fmt(t.earned)),
        num(fmt(t.claimed)),
        num(fmt(t.stake)),
        num(`${t.accepted} / ${t.submitted}`),
        el("td", {}, slashList(t.slashes)),
      ),
    );
    fill("trainers", table(["#", "Trainer", { text: "Earned", attrs: { class: "num" } }, { text: "Claimed", attrs: { class: "num" } },
      { text: "Stake", attrs: { class: "num" } }, { text: "Accepted", attrs: { class: "num" } }, "Slashes"], trainers, "No trainer joined yet."));
    const validators = standings.validators.map((v) =>
      el(
        "tr",
        { "data-account": v.validator },
        el("td", {}, account(v.validator), v.joined ? null : el("span", { class: "sub" }, "not joined")),
        num(fmt(v.stake)),
        num(pct(v.agreement), el("span", { class: "sub" }, `${v.rounds_scored} round${v.rounds_scored === 1 ? "" : "s"} scored`)),
        num(fmt(v.earned)),
        el("td", {}, slashList(v.slashes)),
      ),
    );
    fill("validators", table(["Validator", { text: "Stake", attrs: { class: "num" } }, { text: "Agreement", attrs: { class: "num" } },
      { text: "Earned", attrs: { class: "num" } }, "Slashes"], validators, "No validator joined yet."));
  }

  // ---------------------------------------------------------------- round

  const verdicts = new Map(); // cid -> {state, text}: survives re-rendering

  async function checkBytes(bytes, expectedHex) {
    // SHA-256 in this browser, against the 0x-hex digest the chain's Revealed event carries
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const hex = `0x${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    return hex === expectedHex.toLowerCase() ? "verified" : "mismatch";
  }

  async function verify(cid, expectedHex) {
    if (!window.isSecureContext || !crypto.subtle) {
      return { state: "error", text: "cannot hash here: WebCrypto needs https or a local address" };
    }
    const response = await fetch(`/v1/blobs/${cid}`, { cache: "no-store" });
    if (response.ok) {
      const state = await checkBytes(await response.arrayBuffer(), expectedHex);
      return { state, text: state === "verified" ? "its SHA-256 is the revealed hash" : "its SHA-256 is not the revealed hash" };
    }
    const body = await response.json().catch(() => ({}));
    if (body.error === "CorruptBlob") {
      // the coordinator hashed its copy too and refuses to serve bytes that are not the revealed ones
      return { state: "mismatch", text: "the coordinator's copy does not hash to the revealed hash" };
    }
    return { state: "error", text: `could not download it (${response.status} ${body.error || ""})` };
  }

  function verifyCell(submission, rerender) {
    if (!submission.update_cid) return el("td", {}, "—");
    const verdict = verdicts.get(submission.update_cid);
    const button = el("button", {
      class: "verify", type: "button", "data-cid": submission.update_cid, disabled: verdict && verdict.state === "busy",
      onclick: async () => {
        verdicts.set(submission.update_cid, { state: "busy", text: "downloading and hashing…" });
        rerender();
        let result;
        try {
          result = await verify(submission.update_cid, submission.update_hash);
        } catch (error) {
          result = { state: "error", text: `could not check it: ${error.message}` };
        }
        verdicts.set(submission.update_cid, result);
        rerender();
      },
    }, "Verify");
    const shown = verdict && verdict.state !== "busy"
      ? el("span", { class: "verdict", "data-state": verdict.state }, badge(verdict.state), " ", verdict.text)
      : verdict ? el("span", { class: "verdict muted" }, verdict.text) : null;
    return el("td", {}, button, shown);
  }

  function scoreCell(validator, trainer) {
    if (!validator.shares) return el("td", { class: "num muted" }, validator.revealed_tx ? "—" : "committed");
    const share = validator.shares[trainer];
    const raw = validator.scores[trainer];
    if (share === undefined) return num("—");
    if (share === "self") return num(el("span", { class: "muted" }, "self"));
    if (["invalid", "harmful", "unavailable"].includes(share)) return num(badge(share));
    return num(pct(share), el("span", { class: "sub" }, signed(score(raw))));
  }

  let shownRound = null; // the round the updates table shows: a Verify click re-renders it

  function roundPage(taskId, roundNo) {
    poll(async () => {
      const [round, task] = await Promise.all([getJSON(`/v1/tasks/${taskId}/rounds/${roundNo}`), getJSON(`/v1/tasks/${taskId}`)]);
      setClock(task.chain_time);
      const current = task.current_round === roundNo && round.status === "started";
      if (changed("status", [current ? task : null, round.status, round.closed_at, round.new_model_cid])) {
        if (current) statusLine(task);
        else {
          const node = document.getElementById("status");
          node.className = `status-line ${round.status === "finalized" ? "done" : "closed"}`;
          fill("status", el("span", { class: "sentence", id: "status-text" },
            round.status === "finalized" ? (round.new_model_cid ? "finalized and published" : "finalized; publishing the new model") : round.status),
            round.closed_at ? el("span", { class: "muted" }, "closed ", when(round.closed_at)) : null);
        }
      }
      if (changed("round", round)) {
        renderRoundFacts(round);
        renderSubmissions(round);
        renderRoundValidators(round);
        renderTransactions(round, task);
      }
    });
  }

  function renderRoundFacts(r) {
    fill(
      "facts",
      fact("Status", badge(r.status)),
      fact("Model trained", blob(r.model_cid)),
      fact("New model", blob(r.new_model_cid)),
      fact("Round report", blob(r.report_cid)),
      fact("Paid to trainers", fmt(r.trainer_payout)),
      fact("Paid to validators", fmt(r.validator_payout)),
      fact("Burned", fmt(r.burned)),
      fact("Commit deadline", when(r.commit_deadline)),
      fact("Reveal deadline", when(r.reveal_deadline)),
      fact("Score-commit deadline", when(r.score_commit_deadline)),
      fact("Score-reveal deadline", when(r.score_reveal_deadline)),
      fact("Closed", when(r.closed_at)),
    );
  }

  function renderSubmissions(r) {
    shownRound = r;
    const validators = r.validators;
    const rows = r.submissions.map((s) =>
      el(
        "tr",
        { "data-trainer": s.trainer },
        el("td", {}, account(s.trainer)),
        el("td", {}, blob(s.update_cid), s.update_hash ? el("span", { class: "sub mono", title: s.update_hash }, `sha256 ${shortHex(s.update_hash)}`) : el("span", { class: "sub" }, "not revealed")),
        el("td", {}, s.outcome ? badge(s.outcome) : badge("pending", "started"), el("span", { class: "sub reason" }, s.reason)),
        validators.map((v) => scoreCell(v, s.trainer)),
        num(s.consensus === null ? "—" : pct(s.consensus)),
        num(fmt(s.payout)),
        num(s.slashed ? badge(`−${fmt(s.slashed)}`, "slashed") : "—"),
        verifyCell(s, () => renderSubmissions(shownRound)),
      ),
    );
    const headers = ["Trainer", "Update", "Verdict",
      ...validators.map((v) => ({ text: shortHex(v.validator), attrs: { class: "num addr", title: `validator ${v.validator}` } })),
      { text: "Consensus", attrs: { class: "num" } }, { text: "Payout", attrs: { class: "num" } }, { text: "Slashed", attrs: { class: "num" } }, "Check"];
    fill("updates", table(headers, rows, "No update committed yet."));
  }

  function renderRoundValidators(r) {
    const rows = r.validators.map((v) =>
      el(
        "tr",
        { "data-validator": v.validator },
        el("td", {}, account(v.validator)),
        el("td", {}, v.revealed_tx ? badge("revealed", "finalized") : badge("committed", "started")),
        num(pct(v.agreement)),
        num(fmt(v.payout)),
        num(v.slashed ? badge(`−${fmt(v.slashed)}`, "slashed") : "—"),
      ),
    );
    fill("validators", table(["Validator", "Scores", { text: "Agreement", attrs: { class: "num" } }, { text: "Payout", attrs: { class: "num" } },
      { text: "Slashed", attrs: { class: "num" } }], rows, "No validator committed scores yet."));
  }

  function renderTransactions(r, task) {
    const list = [["startRound", task.coordinator, r.started_tx]];
    for (const s of r.submissions) list.push(["commit", s.trainer, s.committed_tx], ["reveal", s.trainer, s.revealed_tx]);
    for (const v of r.validators) list.push(["commitScores", v.validator, v.committed_tx], ["revealScores", v.validator, v.revealed_tx]);
    list.push([r.status === "aborted" ? "abortRound" : "finalizeRound", null, r.closed_tx], ["publishModel", task.coordinator, r.published_tx]);
    const rows = list.filter(([, , hash]) => hash).map(([what, who, hash]) =>
      el("tr", {}, el("td", {}, el("code", {}, what)), el("td", {}, who ? account(who) : "anyone"), el("td", {}, tx(hash))));
    fill("txs", table(["Call", "By", "Transaction"], rows, "No transaction yet."));
  }

  // ---------------------------------------------------------------- account

  function accountPage(address) {
    poll(async () => {
      const body = await getJSON(`/v1/accounts/${address}`);
      if (!changed("account", body)) return;
      fill(
        "facts",
        fact("Tasks", body.tasks.length),
        fact("Earned", fmt(body.earned)),
        fact("Claimed", fmt(body.claimed)),
        fact("Unclaimed", fmt(body.unclaimed)),
        fact("Staked now", fmt(body.stake)),
      );
      const rows = body.tasks.map((t) =>
        el(
          "tr",
          { "data-task-id": t.task_id },
          el("td", {}, el("a", { href: `/tasks/${t.task_id}` }, `#${t.task_id}`), t.name ? ` ${t.name}` : ""),
          el("td", {}, badge(t.status)),
          el("td", {}, t.roles.join(", ")),
          num(fmt(t.earned_as_trainer)),
          num(fmt(t.earned_as_validator)),
          num(fmt(t.claimed)),
          num(fmt(t.unclaimed)),
          num(fmt(t.stake)),
          num(t.slashed === "0" ? "—" : badge(`−${fmt(t.slashed)}`, "slashed")),
          num(t.refund === null ? "—" : fmt(t.refund)),
        ),
      );
      const n = (text) => ({ text, attrs: { class: "num" } });
      fill("tasks", table(["Task", "Status", "Roles", n("Earned training"), n("Earned validating"), n("Claimed"), n("Unclaimed"),
        n("Stake"), n("Slashed"), n("Refund")], rows, "No task."));
    });
  }

  // ---------------------------------------------------------------- start

  window.fedmarketDashboard = { checkBytes, fmt, pct, relative };
  document.addEventListener("DOMContentLoaded", () => {
    const data = document.body.dataset;
    if (data.page === "market") marketPage();
    else if (data.page === "task") taskPage(Number(data.taskId));
    else if (data.page === "round") roundPage(Number(data.taskId), Number(data.round));
    else if (data.page === "account") accountPage(data.address);
  });
})();

// The CloseEvent explorer: run a scenario, show the browser's CloseEvent next to the server's
// close record for the same connection. Plain script, no build step.
"use strict";

const DATA = JSON.parse(document.getElementById("closeguard-data").textContent);
const NAMED = new Map(DATA.codes.map((entry) => [entry.code, entry.description]));
const CLOSE_WAIT_MS = 10000; // a scenario that has not closed by then is closed by the page
const RECORD_POLLS = 40; // the record is written right after the close: poll briefly
const RECORD_POLL_MS = 100;

function nonce() {
  // getRandomValues works on plain http too (randomUUID needs a secure context).
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function wsUrl(path, params) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams(params).toString();
  return `${scheme}//${location.host}${path}?${query}`;
}

async function describeCode(code) {
  if (code === null || code === undefined) return "";
  if (NAMED.has(code)) return NAMED.get(code);
  try {
    const response = await fetch(`/codes/${encodeURIComponent(code)}`);
    if (response.ok) return (await response.json()).description;
  } catch (err) {
    // The description is a nicety; the code itself is already on screen.
  }
  return String(code);
}

// Open a WebSocket, let the scenario act on it, and resolve with what the browser saw.
function observe(url, scenario) {
  return new Promise((resolve) => {
    const seen = { notes: [], messages: 0, errorEvent: false, opened: false };
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const timer = setTimeout(() => {
      seen.notes.push(`no close after ${CLOSE_WAIT_MS / 1000} s: the page closed it`);
      ws.close(1000, "explorer timeout");
    }, CLOSE_WAIT_MS);
    ws.onopen = () => {
      seen.opened = true;
      if (scenario.onOpen) scenario.onOpen(ws, seen);
    };
    ws.onmessage = (event) => {
      seen.messages += 1;
      if (scenario.onMessage) scenario.onMessage(ws, seen, event);
    };
    ws.onerror = () => {
      seen.errorEvent = true;
    };
    ws.onclose = (event) => {
      clearTimeout(timer);
      resolve({ ...seen, code: event.code, reason: event.reason, wasClean: event.wasClean });
    };
  });
}

async function fetchRecord(key) {
  for (let i = 0; i < RECORD_POLLS; i += 1) {
    const response = await fetch(`/closes?nonce=${encodeURIComponent(key)}`);
    if (response.ok) return response.json();
    await new Promise((done) => setTimeout(done, RECORD_POLL_MS));
  }
  return null;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

// One labelled value; data-field is how the browser tests find it, as a person finds the label.
function row(list, label, field, value, extraClass) {
  const shown = value === null || value === undefined ? "none" : String(value);
  list.append(el("dt", {}, label));
  const dd = el("dd", { "data-field": field }, shown);
  if (extraClass) dd.classList.add(extraClass);
  list.append(dd);
}

async function renderBrowser(panel, seen) {
  const list = el("dl");
  row(list, "code", "browser.code", seen.code);
  row(list, "meaning", "browser.meaning", await describeCode(seen.code));
  row(list, "reason", "browser.reason", seen.reason === "" ? "(empty)" : seen.reason);
  row(list, "wasClean", "browser.wasClean", seen.wasClean, seen.wasClean ? "good" : "bad");
  row(list, "opened", "browser.opened", seen.opened);
  // reconnect.js hands a page no error event; the policies' runs do without it.
  if (seen.errorEvent !== undefined) row(list, "error event", "browser.error", seen.errorEvent);
  row(list, "messages received", "browser.messages", seen.messages);
  panel.append(el("h3", {}, "Browser: CloseEvent"), list);
  if (seen.notes.length) {
    const notes = el("ul", { class: "notes", "data-field": "browser.notes" });
    for (const note of seen.notes) notes.append(el("li", {}, note));
    panel.append(notes);
  }
}

function renderServer(panel, record) {
  panel.append(el("h3", {}, "Server: close record"));
  if (record === null) {
    panel.append(el("p", { "data-field": "server.missing" }, "No close record arrived."));
    return;
  }
  const list = el("dl");
  row(list, "code", "server.code", record.code);
  row(list, "meaning", "server.meaning", record.code_description);
  row(list, "reason", "server.reason", record.reason === "" ? "(empty)" : record.reason);
  row(list, "initiator", "server.initiator", record.initiator);
  row(list, "accepted", "server.accepted", record.accepted);
  if (record.http_status !== null) row(list, "HTTP status", "server.http_status", record.http_status);
  if (record.requested_code !== null) {
    row(list, "requested code", "server.requested_code", record.requested_code);
  }
  if (record.violation !== null) row(list, "violation", "server.violation", record.violation);
  if (record.exception !== null) row(list, "exception", "server.exception", record.exception);
  row(list, "duration", "server.duration", `${(record.duration * 1000).toFixed(1)} ms`);
  row(list, "messages in / out", "server.messages",
    `${record.messages_received} / ${record.messages_sent}`);
  row(list, "connection id", "server.connection_id", record.connection_id);
  const raw = el("details", {}, el("summary", {}, "the whole record (JSON)"),
    el("pre", {}, JSON.stringify(record, null, 2)));
  panel.append(list, raw);
}

/** Run one scenario in its section: the button held, "running…" shown, then the panels that
 * `panels()` makes, or what failed; `data-state="done"` either way (the browser tests wait on it). */
async function showRun(section, panels) {
  const button = section.querySelector("button[type=submit]");
  const result = section.querySelector(".result");
  button.disabled = true;
  result.hidden = false;
  result.replaceChildren(el("p", { class: "running" }, "running…"));
  result.removeAttribute("data-state");
  try {
    result.replaceChildren(...(await panels()));
  } catch (err) {
    result.replaceChildren(el("p", { class: "bad" }, `The page failed: ${err}`));
  } finally {
    result.setAttribute("data-state", "done");
    button.disabled = false;
  }
}

function run(section, path, params, scenario) {
  return showRun(section, async () => {
    const key = nonce();
    const seen = await observe(wsUrl(path, { ...params, nonce: key }), scenario);
    const browser = el("div", { class: "panel browser" });
    const server = el("div", { class: "panel server" });
    await renderBrowser(browser, seen);
    renderServer(server, await fetchRecord(key));
    return [browser, server];
  });
}

const SCENARIOS = {
  close(form) {
    const params = { code: form.code.value, reason: form.reason.value };
    return ["/ws/close", params, {}];
  },
  raise() {
    return ["/ws/raise", {}, {}];
  },
  refuse() {
    return ["/ws/refuse", {}, {}];
  },
  return() {
    return ["/ws/return", {}, {}];
  },
  size(form) {
    const size = Number(form.size.value);
    return ["/ws/echo", {}, {
      onOpen(ws, seen) {
        ws.send("x".repeat(size));
        seen.notes.push(`sent a text message of ${size} bytes`);
      },
      onMessage(ws, seen, event) {
        seen.notes.push(`the echo came back: ${event.data.length} bytes; the page closed with 1000`);
        ws.close(1000, "echo received");
      },
    }];
  },
  client(form) {
    const code = Number(form.code.value);
    const reason = form.reason.value;
    return ["/ws/echo", {}, {
      onOpen(ws, seen) {
        try {
          ws.close(code, reason);
          seen.notes.push(`the page called ws.close(${code}, ${JSON.stringify(reason)})`);
        } catch (err) {
          seen.notes.push(`ws.close(${code}) threw ${err.name}: ${err.message}`);
          seen.notes.push("the page closed with 1000 instead");
          ws.close(1000, "the browser refused the chosen code");
        }
      },
    }];
  },
};

// Close policies ------------------------------------------------------------------------------

const POLICIES = new Map(DATA.policies.map((demo) => [demo.name, demo]));
// reconnect.js's own waits, shorter than its defaults (1 s, 30 s) so that a person sees it
// come back; the logic is the file's, unchanged.
const RETRY_OPTIONS = { baseDelay: 1000, maxDelay: 4000 };
// After a close reconnect.js does not retry, how long the page watches before saying so: its
// first wait after a close it does retry is at most baseDelay.
const STOP_WATCH_MS = RETRY_OPTIONS.baseDelay + 1000;
const POLICY_WAIT_MS = 20000; // a run that has not settled by then is ended by the page
const MAX_ATTEMPTS = 6;
// The contract's advice as a decision, in the words the page uses for reconnect.js's.
const DECISION_OF_ADVICE = { RECONNECT: "reconnect", BACK_OFF: "back off", DO_NOT_RETRY: "stop" };

// The docs' browser snippet, docs/examples/reconnect.js as the server serves it, run in a scope
// of its own: written to be pasted into a page, it declares its names at the top level, and
// here they stay out of the page's. Resolves with what the page uses of it.
const SNIPPET = fetch("/reconnect.js").then(async (response) => {
  if (!response.ok) throw new Error(`/reconnect.js: HTTP ${response.status}`);
  const names = "{ reconnectingWebSocket, RECONNECT_CODES, BACK_OFF_CODES }";
  return new Function(`${await response.text()}\nreturn ${names};`)();
});
SNIPPET.catch(() => {}); // a failure is shown by the run that needs the snippet
let snippet = null; // SNIPPET, once loaded

// What reconnect.js does after a close with this code, by its own code sets.
function snippetDecision(code) {
  if (snippet.RECONNECT_CODES.has(code)) return "reconnect";
  if (snippet.BACK_OFF_CODES.has(code)) return "back off";
  return "stop";
}

// The contract's row for what the server sent, as its record says: a close's code, or a
// refused handshake's HTTP status, and the reason token.
function contractRow(record) {
  if (record === null) return null;
  const row = DATA.contract.find((entry) => entry.code === record.code
    && entry.http_status === record.http_status && entry.reason === record.reason);
  return row || null;
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

// Connect through reconnect.js, do what the demo does, and watch what follows the policy's
// close: resolves with every connection reconnect.js opened, and the page's notes.
function followPolicy(demo, actions) {
  return new Promise((resolve) => {
    const attempts = [];
    const notes = [];
    let attempt = null;
    let client = null;
    let closing = false; // the page closed a connection reconnect.js came back with
    let settled = false;
    let stopTimer = null;
    const giveUp = setTimeout(() => settle(`not settled after ${seconds(POLICY_WAIT_MS)}`),
      POLICY_WAIT_MS);

    function settle(note) {
      if (settled) return;
      settled = true;
      clearTimeout(giveUp);
      clearTimeout(stopTimer);
      if (note) notes.push(note);
      client.close(1000, "explorer: seen enough"); // stops reconnect.js; a closed socket ignores it
      if (actions.cleanUp) actions.cleanUp();
      resolve({ attempts, notes });
    }

    // reconnect.js opens each connection with new WebSocket(url), which makes url a string each
    // time: a nonce per connection, so that the server's record of each one can be found.
    const url = {
      toString() {
        attempt = { nonce: nonce(), startedAt: performance.now(), opened: false, messages: 0 };
        attempts.push(attempt);
        return wsUrl(demo.path, { nonce: attempt.nonce });
      },
    };
    const handlers = {
      onopen(event, socket) {
        attempt.opened = true;
        if (attempts.length === 1) {
          if (actions.onOpen) actions.onOpen(socket, notes);
          return;
        }
        notes.push(`connection ${attempts.length} opened; the page closes it with 1000`);
        closing = true;
        client.close(1000, "explorer: seen enough");
      },
      onmessage() {
        attempt.messages += 1;
      },
      onclose(event) {
        Object.assign(attempt, {
          code: event.code, reason: event.reason, wasClean: event.wasClean,
          closedAt: performance.now(),
        });
        if (attempts.length === 1 && actions.onClose) actions.onClose(notes);
        if (closing || settled) {
          settle();
        } else if (snippetDecision(event.code) === "stop") {
          stopTimer = setTimeout(
            () => settle(`no new connection within ${seconds(STOP_WATCH_MS)} of the close`),
            STOP_WATCH_MS);
        } else if (attempts.length >= MAX_ATTEMPTS) {
          settle(`still closed after ${attempts.length} connections: the page stopped`);
        }
      },
    };
    client = snippet.reconnectingWebSocket(url, handlers, RETRY_OPTIONS);
  });
}

// Open ``count`` plain connections to ``path`` and resolve once all are open (or failed).
function hold(path, count) {
  return Promise.all(Array.from({ length: count }, () => new Promise((resolve) => {
    const ws = new WebSocket(wsUrl(path, {}));
    const timer = setTimeout(() => resolve(ws), CLOSE_WAIT_MS);
    ws.onopen = () => { clearTimeout(timer); resolve(ws); };
    ws.onclose = () => { clearTimeout(timer); resolve(ws); };
  })));
}

// What the page does on each demo's route, to make its policy act.
const POLICY_ACTIONS = {
  idle() {
    return {
      onOpen(ws, notes) {
        ws.send("hello");
        notes.push("the page sent one message, then nothing");
      },
    };
  },
  lifetime() {
    let ticker = null;
    return {
      onOpen(ws, notes) {
        ticker = setInterval(() => ws.send("tick"), 500);
        notes.push("the page sent a message every 0.5 s: busy, but old");
      },
      onClose() {
        clearInterval(ticker);
      },
      cleanUp() {
        clearInterval(ticker);
      },
    };
  },
  "first-message"() {
    return {
      onOpen(ws, notes) {
        notes.push("the page sent nothing");
      },
    };
  },
  "message-rate"(demo) {
    const count = Math.ceil(demo.value * DATA.rate_burst) * 2;
    return {
      onOpen(ws, notes) {
        for (let i = 0; i < count; i += 1) ws.send(`message ${i + 1}`);
        notes.push(`the page sent ${count} messages at once, twice the burst`);
      },
    };
  },
  "byte-rate"(demo) {
    const burst = demo.value * DATA.rate_burst;
    const size = Math.ceil(burst / 4);
    return {
      onOpen(ws, notes) {
        for (let i = 0; i < 8; i += 1) ws.send("x".repeat(size));
        notes.push(`the page sent 8 messages of ${size} bytes at once, twice the burst`);
      },
    };
  },
  cap(demo) {
    let holders = [];
    const free = () => holders.forEach((ws) => ws.close(1000, "explorer: done holding"));
    return {
      async before(notes) {
        holders = await hold(demo.path, demo.value);
        const open = holders.filter((ws) => ws.readyState === WebSocket.OPEN).length;
        notes.push(`the page opened ${open} of ${demo.value} connections first, filling the cap`);
      },
      onClose(notes) {
        free();
        notes.push("the page then closed the connections it held, making room");
      },
      cleanUp: free,
    };
  },
};
POLICY_ACTIONS["cap-per-client"] = POLICY_ACTIONS.cap;

function renderRetry(panel, run, record) {
  const [first, ...later] = run.attempts;
  const contract = contractRow(record);
  const decision = snippetDecision(first.code);
  const expected = contract === null ? null : DECISION_OF_ADVICE[contract.advice];
  const cameBack = later.length > 0;
  const agrees = expected === decision && cameBack === (decision !== "stop");
  let sent = null;
  if (record !== null) {
    sent = `${record.code === null ? `HTTP ${record.http_status}` : record.code} ${record.reason}`;
  }
  const list = el("dl");
  row(list, "the server sent", "retry.sent", sent);
  row(list, "the contract says", "retry.advice", contract && contract.advice_text);
  row(list, "its row", "retry.when", contract && contract.sent_when);
  row(list, "reconnect.js decided", "retry.decision", decision);
  let because = `${first.code} is in neither of its code sets: final`;
  if (snippet.RECONNECT_CODES.has(first.code)) because = `${first.code} is in its RECONNECT_CODES`;
  if (snippet.BACK_OFF_CODES.has(first.code)) because = `${first.code} is in its BACK_OFF_CODES`;
  row(list, "because", "retry.because", because);
  row(list, "it came back", "retry.came_back", cameBack ? "yes" : "no");
  row(list, "as the contract says", "retry.agrees", agrees ? "yes" : "no", agrees ? "good" : "bad");
  panel.append(el("h3", {}, "Retry contract and reconnect.js"), list);
  const steps = el("ol", { class: "notes", "data-field": "retry.attempts" });
  let previous = null;
  for (const attempt of run.attempts) {
    const after = previous === null ? "" : `${seconds(attempt.startedAt - previous.closedAt)} later: `;
    let closed = "not closed";
    if (attempt.code !== undefined) {
      closed = `closed ${attempt.code} ${attempt.reason === "" ? "(no reason)" : attempt.reason}`;
    }
    steps.append(el("li", {}, `${after}${attempt.opened ? "opened" : "never opened"}, ${closed}`));
    previous = attempt;
  }
  panel.append(steps);
}

function runPolicy(section, demo) {
  return showRun(section, async () => {
    try {
      snippet = await SNIPPET;
    } catch (err) {
      throw new Error(`reconnect.js did not load (served from a checkout's docs/examples): ${err}`);
    }
    const actions = POLICY_ACTIONS[demo.name](demo);
    const before = [];
    if (actions.before) await actions.before(before);
    const run = await followPolicy(demo, actions);
    const [first] = run.attempts;
    const record = await fetchRecord(first.nonce);
    const browser = el("div", { class: "panel browser" });
    const server = el("div", { class: "panel server" });
    const retry = el("div", { class: "panel retry" });
    const seen = { ...first, notes: [...before, ...run.notes] };
    await renderBrowser(browser, seen);
    renderServer(server, record);
    renderRetry(retry, run, record);
    return [browser, server, retry];
  });
}

function setUpPolicies() {
  for (const node of document.querySelectorAll("[data-field=rate_burst]")) {
    node.textContent = String(DATA.rate_burst);
  }
  for (const section of document.querySelectorAll(".scenario[data-policy]")) {
    const demo = POLICIES.get(section.dataset.policy);
    for (const node of section.querySelectorAll("[data-demo]")) {
      node.textContent = String(demo[node.dataset.demo]);
    }
    section.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      runPolicy(section, demo);
    });
  }
}

function setUp() {
  for (const node of document.querySelectorAll("[data-field=limit]")) {
    node.textContent = String(DATA.max_message_size);
  }
  const sizeInput = document.querySelector("#size input[name=size]");
  sizeInput.value = String(DATA.max_message_size + 1);

  for (const section of document.querySelectorAll(".scenario:not([data-policy])")) {
    const form = section.querySelector("form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const [path, params, scenario] = SCENARIOS[section.dataset.scenario](form);
      run(section, path, params, scenario);
    });
    for (const preset of form.querySelectorAll("button[data-code]")) {
      preset.addEventListener("click", () => {
        form.code.value = preset.dataset.code;
        form.reason.value = preset.dataset.reason;
      });
    }
  }

  const body = document.querySelector("#codes tbody");
  for (const entry of DATA.codes) {
    body.append(el("tr", { class: entry.may_be_sent ? "" : "local" },
      el("td", {}, String(entry.code)), el("td", {}, entry.name),
      el("td", {}, entry.may_be_sent ? "yes" : "no: reported locally only")));
  }
  setUpPolicies();
}

setUp();

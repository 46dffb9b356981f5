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
  row(list, "error event", "browser.error", seen.errorEvent);
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

async function run(section, path, params, scenario) {
  const button = section.querySelector("button[type=submit]");
  const result = section.querySelector(".result");
  button.disabled = true;
  result.hidden = false;
  result.replaceChildren(el("p", { class: "running" }, "running…"));
  result.removeAttribute("data-state");
  try {
    const key = nonce();
    const seen = await observe(wsUrl(path, { ...params, nonce: key }), scenario);
    const browser = el("div", { class: "panel browser" });
    const server = el("div", { class: "panel server" });
    await renderBrowser(browser, seen);
    renderServer(server, await fetchRecord(key));
    result.replaceChildren(browser, server);
  } catch (err) {
    result.replaceChildren(el("p", { class: "bad" }, `The page failed: ${err}`));
  } finally {
    result.setAttribute("data-state", "done");
    button.disabled = false;
  }
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

function setUp() {
  for (const node of document.querySelectorAll("[data-field=limit]")) {
    node.textContent = String(DATA.max_message_size);
  }
  const sizeInput = document.querySelector("#size input[name=size]");
  sizeInput.value = String(DATA.max_message_size + 1);

  for (const section of document.querySelectorAll(".scenario")) {
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
}

setUp();

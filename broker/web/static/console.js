// The operator's console: every view and action is a call of the admin API (the same one the CLI
// uses), tenant-scoped by it. Signed in by the portal login's cookie (directory admins; state
// changes carry its CSRF token) or by an operator's token (kept for this tab only). Hosts and
// sessions follow the API's event stream: one stream per open console, no polling.

const body = document.body;
const texts = JSON.parse(document.getElementById("texts").textContent);
const lang = document.documentElement.lang;
const BASE = "/api/v1/admin";
const TOKEN_KEY = "pforte.console-token";
const RETRY_MS = 2000;

const $ = (id) => document.getElementById(id);
const timeZone = body.dataset.zone;     // the municipalities' clock, wherever the admin is
const clock = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", timeZone });
const moment = new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "short",
                                               timeZone });

let token = sessionStorage.getItem(TOKEN_KEY);
let tenant = null;            // the municipality shown
let overview = { hosts: [], sessions: [] };
let following = null;         // AbortController of the event stream

const plurals = new Intl.PluralRules(document.documentElement.lang);

// A text by its key, with its {values} put in; a counting text (its plural forms, one and
// other in German and English) by the form its {count} takes.
function text(key, values = {}) {
    let found = texts[key];
    if (Array.isArray(found)) found = found[plurals.select(values.count) === "one" ? 0 : 1];
    return Object.entries(values).reduce((s, [k, v]) => s.replaceAll(`{${k}}`, v), found);
}

function said(message) {
    $("said").textContent = message;
}

function authorised(method) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (method !== "GET") headers["X-CSRF-Token"] = body.dataset.csrf;
    return headers;
}

async function api(method, path, payload) {
    const headers = authorised(method);
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(BASE + path, {
        method, headers, credentials: "same-origin",
        body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
        const error = new Error(answer.message || String(response.status));
        error.status = response.status;
        throw error;
    }
    return answer;
}

const inTenant = (path) => `/tenants/${encodeURIComponent(tenant)}${path}`;

// An action: its answer said in the status line; the live view shows its effect.
async function act(method, path, payload, done = () => text("c_done")) {
    try {
        const answer = await api(method, inTenant(path), payload);
        said(done(answer));
        loadAudit();
        return answer;
    } catch (e) {
        said(text("c_failed", { why: e.message }));
        return null;
    }
}

// -- dialogs: what will happen is said before it happens ------------------------------------
function ask(dialog) {
    return new Promise((resolve) => {
        dialog.returnValue = "";
        dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
        dialog.showModal();
    });
}

function confirmed(message) {
    $("confirm-text").textContent = message;
    return ask($("confirm"));
}

function usersOn(host) {
    return overview.sessions.filter((s) => s.host === host).length;
}

function drainConsequence(host) {
    const minutes = Number($("drain-minutes").value) || 0;
    const count = usersOn(host);
    let message;
    if (!count) message = text("c_drain_nobody", { host });
    else if (minutes > 0 && $("drain-logoff").checked) {
        const at = clock.format(new Date(Date.now() + minutes * 60000));
        message = text("c_drain_logoff_at", { count, host, time: at });
    } else message = text("c_drain_asked", { count, host });
    $("drain-consequence").textContent = message;
}

async function drain(host) {
    $("drain-heading").textContent = text("c_drain_heading", { host });
    const update = () => drainConsequence(host);
    update();
    $("drain-minutes").oninput = update;
    $("drain-logoff").onchange = update;
    if (!(await ask($("drain")))) return;
    const minutes = Number($("drain-minutes").value) || 0;
    const payload = { message: $("drain-message").value, logoff: $("drain-logoff").checked };
    if (minutes > 0) payload.deadline_seconds = minutes * 60;
    await act("POST", `/hosts/${encodeURIComponent(host)}/actions/drain`, payload);
}

async function hostAction(host, action) {
    if (action === "drain") return drain(host);
    if (action !== "enable" && !(await confirmed(text(`c_confirm_${action}`, { host })))) return;
    await act("POST", `/hosts/${encodeURIComponent(host)}/actions/${action}`);
}

async function logoff(session) {
    if (!(await confirmed(text("c_confirm_logoff", { user: session.user, host: session.host })))) {
        return;
    }
    await act("POST", `/sessions/${encodeURIComponent(session.id)}/logoff`);
}

async function message(session) {
    $("message-heading").textContent = text("c_message_heading", { user: session.user });
    $("message-text").value = "";
    if (!(await ask($("message"))) || !$("message-text").value.trim()) return;
    await act("POST", `/sessions/${encodeURIComponent(session.id)}/message`,
              { text: $("message-text").value },
              (answer) => text(answer.reached ? "c_message_reached" : "c_message_not_reached",
                               { user: session.user }));
}

// -- tables ---------------------------------------------------------------------------------
function cell(row, content) {
    const td = row.insertCell();
    if (content instanceof Node) td.append(content);
    else td.textContent = content;
    return td;
}

function button(label, name, key, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-label", name);
    b.dataset.key = key;          // to give the focus back after the table is drawn again
    b.addEventListener("click", onclick);
    return b;
}

function fill(id, items, draw) {
    const focused = document.activeElement?.dataset?.key;
    const tbody = $(id).tBodies[0];
    const opened = [...tbody.querySelectorAll("details[open]")].map((d) => d.dataset.key);
    tbody.replaceChildren();
    for (const item of items) draw(tbody.insertRow(), item);
    if (!items.length) {
        const td = tbody.insertRow().insertCell();
        td.colSpan = $(id).tHead.rows[0].cells.length;
        td.textContent = texts.c_none;
    }
    for (const key of opened) {
        const details = tbody.querySelector(`details[data-key="${CSS.escape(key)}"]`);
        if (details) details.open = true;
    }
    if (focused) tbody.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
}

function drawHosts() {
    fill("hosts", overview.hosts, (row, h) => {
        row.className = `${h.state}${h.healthy ? "" : " unhealthy"}`;
        cell(row, h.id);
        cell(row, texts[`c_state_${h.state}`] || h.state);
        cell(row, h.healthy ? texts.c_yes : texts.c_no);
        cell(row, `${h.used} / ${h.free}`);
        let drainText = "";
        if (h.state === "draining") {
            drainText = h.deadline && h.logoff_at_deadline
                ? text("c_drain_until", { time: clock.format(new Date(h.deadline * 1000)) })
                : texts.c_drain_wait;
            if (h.message) drainText += ` — ${h.message}`;
        }
        cell(row, drainText);
        const actions = document.createElement("span");
        for (const action of h.actions) {
            const again = action === "drain" && h.state === "draining";  // a new notice, deadline
            const label = texts[again ? "c_action_drain_change" : `c_action_${action}`];
            actions.append(button(label, `${label} ${h.id}`, `host:${h.id}:${action}`,
                                  () => hostAction(h.id, action)));
        }
        cell(row, actions);
    });
}

const seconds = new Intl.NumberFormat(lang, { maximumFractionDigits: 2 });
const millis = new Intl.NumberFormat(lang, { maximumFractionDigits: 0 });

// A logon's total, and on opening, each phase (what helpdesk asks about a slow morning).
function logonDetails(logon, key) {
    const details = document.createElement("details");
    details.dataset.key = key;
    const summary = document.createElement("summary");
    summary.dataset.key = `${key}:summary`;
    summary.textContent = text(logon.slow ? "c_logon_slow" : "c_logon_total",
                               { seconds: seconds.format(logon.total_ms / 1000) });
    const list = document.createElement("ul");
    for (const [phase, ms] of Object.entries(logon.phases_ms)) {
        const item = document.createElement("li");
        item.textContent = `${texts[`c_phase_${phase}`] || phase}: ${millis.format(ms)} ms`;
        list.append(item);
    }
    details.append(summary, list);
    return details;
}

function drawSessions() {
    const needle = $("session-filter").value.trim().toLowerCase();
    const shown = overview.sessions.filter((s) => !needle || s.user.toLowerCase().includes(needle)
                                               || s.host.toLowerCase().includes(needle));
    fill("sessions", shown, (row, s) => {
        cell(row, s.user);
        cell(row, s.host);
        cell(row, s.pool_name).title = s.pool;          // the name users know; the id on hover
        cell(row, moment.format(new Date(s.since * 1000)));
        cell(row, texts[`c_session_${s.state}`] || s.state);
        cell(row, s.device || texts.c_browser);
        cell(row, s.logon ? logonDetails(s.logon, `logon:${s.id}`) : "–");
        if (s.logon?.slow) row.classList.add("slow");
        const actions = document.createElement("span");
        const messageLabel = texts.c_action_message;
        const logoffLabel = texts.c_action_logoff;
        actions.append(
            button(messageLabel, `${messageLabel} ${s.user}`, `session:${s.id}:message`,
                   () => message(s)),
            button(logoffLabel, `${logoffLabel} ${s.user}`, `session:${s.id}:logoff`,
                   () => logoff(s)));
        cell(row, actions);
    });
}

async function loadDevices() {
    try {
        const { devices } = await api("GET", inTenant("/devices"));
        fill("devices", devices, (row, d) => {
            cell(row, d.name);
            cell(row, d.site);
            cell(row, d.device_class);
            cell(row, d.last_seen ? moment.format(new Date(d.last_seen * 1000)) : "–");
            if (d.revoked) {
                cell(row, texts.c_revoked);
                return;
            }
            const revoke = texts.c_action_revoke;
            const move = texts.c_action_move;
            const actions = document.createElement("span");
            actions.append(
                button(move, `${move} ${d.name}`, `device:${d.id}:move`, () => moveDevice(d)),
                button(revoke, `${revoke} ${d.name}`, `device:${d.id}:revoke`, async () => {
                    if (await confirmed(text("c_confirm_revoke", { device: d.name }))) {
                        await act("POST", `/devices/${encodeURIComponent(d.id)}/revoke`);
                        loadDevices();
                    }
                }));
            cell(row, actions);
        });
    } catch (e) {
        said(text("c_failed", { why: e.message }));
    }
}

async function moveDevice(device) {
    $("move-heading").textContent = text("c_move_heading", { device: device.name });
    $("move-site").value = device.site;
    $("move-class").value = device.device_class;
    if (!(await ask($("move")))) return;
    await act("POST", `/devices/${encodeURIComponent(device.id)}/move`,
              { site: $("move-site").value.trim(), device_class: $("move-class").value.trim() });
    loadDevices();
}

async function loadAssignments() {
    const pool = $("assign-pool").value.trim();
    if (!pool) return;
    try {
        const { assignments } = await api("GET",
                                          inTenant(`/pools/${encodeURIComponent(pool)}/assignments`));
        fill("assignments", Object.entries(assignments), (row, [user, host]) => {
            cell(row, user);
            cell(row, host);
        });
    } catch (e) {
        said(text("c_failed", { why: e.message }));
    }
}

let auditTimer = null;
function loadAudit() {
    clearTimeout(auditTimer);
    auditTimer = setTimeout(async () => {
        const q = $("audit-search").value.trim();
        try {
            const { audit } = await api("GET", inTenant(
                `/audit?limit=100${q ? `&q=${encodeURIComponent(q)}` : ""}`));
            fill("audit", audit, (row, e) => {
                cell(row, moment.format(new Date(e.at * 1000)));
                cell(row, e.actor);
                cell(row, e.action);
                cell(row, e.result);
                cell(row, e.detail);
            });
        } catch (e) {
            said(text("c_failed", { why: e.message }));
        }
    }, 250);
}

// -- maintenance windows and holidays, as one timeline -------------------------------------
async function loadMaintenance() {
    try {
        const plan = await api("GET", inTenant("/maintenance"));
        const day = new Intl.DateTimeFormat(lang, {
            weekday: "short", day: "2-digit", month: "2-digit", year: "numeric",
            timeZone: "UTC" });   // a calendar day, not an instant
        const entries = [
            ...plan.windows.map((w) => [w.start * 1000, text("c_window_item", {
                start: moment.format(new Date(w.start * 1000)),
                end: clock.format(new Date(w.end * 1000)), window: w.window,
                hosts: w.hosts.join(", ") })]),
            ...plan.days.map((d) => [Date.parse(`${d.day}T00:00:00`), text("c_day_item", {
                day: day.format(new Date(`${d.day}T12:00:00Z`)), name: d.name,
                calendar: d.calendar })]),
        ].sort((a, b) => a[0] - b[0]);
        $("timeline").replaceChildren(...entries.map(
            ([, line]) => Object.assign(document.createElement("li"), { textContent: line })));
        $("timeline").hidden = !entries.length;           // an empty list is a sentence
        $("timeline-none").hidden = entries.length > 0;
    } catch (e) {
        said(text("c_failed", { why: e.message }));
    }
}

// -- usage for billing ------------------------------------------------------------------------
const hours = new Intl.NumberFormat(lang, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function usagePath(format) {
    const month = $("usage-month").value;
    const query = new URLSearchParams();
    if (month) query.set("month", month);
    if (format) query.set("format", format);
    if (format === "csv") query.set("locale", lang === "de" ? "de" : "en");  // its spreadsheets
    return inTenant(`/usage?${query}`);
}

async function loadUsage() {
    try {
        const answer = await api("GET", usagePath());
        if (!$("usage-month").value) $("usage-month").value = answer.month;
        fill("usage", answer.usage, (row, u) => {
            cell(row, u.pool_name).title = u.pool;
            cell(row, String(u.sessions));
            cell(row, hours.format(u.desktop_hours));
        });
    } catch (e) {
        said(text("c_failed", { why: e.message }));
    }
}

$("usage-month").addEventListener("change", loadUsage);
$("usage-csv").addEventListener("click", async () => {
    // fetched (an operator's token cannot ride on a link), then handed over as a file
    const response = await fetch(BASE + usagePath("csv"), {
        headers: authorised("GET"), credentials: "same-origin" });
    if (!response.ok) {
        said(text("c_failed", { why: response.status }));
        return;
    }
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `pforte-usage-${tenant}-${$("usage-month").value}.csv`;
    link.click();
    URL.revokeObjectURL(link.href);
});

// -- the live view --------------------------------------------------------------------------
function onEvent(block) {
    let kind = "message";
    let data = "";
    for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (kind === "ended") {          // signed out, expired or no longer an admin: sign in again
        window.location.assign("/login");
        return;
    }
    if (kind !== "overview" || !data) return;
    overview = JSON.parse(data);
    drawHosts();
    drawSessions();
    loadAudit();
}

async function follow(signal) {
    while (!signal.aborted) {
        try {
            const response = await fetch(BASE + inTenant("/events"), {
                headers: authorised("GET"), credentials: "same-origin", signal,
            });
            if (!response.ok) throw new Error(String(response.status));
            $("live").textContent = texts.c_live;
            const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
            let buffer = "";
            for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                buffer += value;
                let end;
                while ((end = buffer.indexOf("\n\n")) >= 0) {
                    onEvent(buffer.slice(0, end));
                    buffer = buffer.slice(end + 2);
                }
            }
        } catch (e) {
            if (signal.aborted) return;
        }
        $("live").textContent = texts.c_offline;
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
}

function show(id) {
    following?.abort();
    tenant = id;
    following = new AbortController();
    follow(following.signal);
    loadDevices();
    loadAudit();
    loadUsage();
    loadMaintenance();
}

// -- forms ----------------------------------------------------------------------------------
$("session-filter").addEventListener("input", drawSessions);
$("audit-search").addEventListener("input", loadAudit);
$("tenant").addEventListener("change", (event) => show(event.target.value));

$("mfa-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("mfa-user").value.trim();
    if (await confirmed(text("c_confirm_mfa", { user }))) {
        await act("POST", `/users/${encodeURIComponent(user)}/mfa-reset`);
    }
});

$("assign-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await act("POST", `/pools/${encodeURIComponent($("assign-pool").value.trim())}/assignments`,
              { user: $("assign-user").value.trim(), host: $("assign-host").value.trim() });
    loadAssignments();
});
$("assign-show").addEventListener("click", loadAssignments);

$("code-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await act("POST", "/enrolment-codes",
                             { site: $("code-site").value.trim(),
                               device_class: $("code-class").value.trim() });
    if (answer) {
        $("code").textContent = text("c_code_made", {
            code: answer.code, time: moment.format(new Date(answer.expires * 1000)) });
    }
});

$("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
});

// An operator signed in with a token signs out here: the tab forgets it.
$("token-sign-out")?.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
});

// -- signing in -----------------------------------------------------------------------------
async function start() {
    let tenants;
    try {
        ({ tenants } = await api("GET", "/tenants"));
    } catch (e) {
        tenants = [];
    }
    if (!tenants.length) {
        if (token) $("signin-said").textContent = texts.c_token_wrong;
        token = null;
        sessionStorage.removeItem(TOKEN_KEY);
        $("signin").hidden = false;
        $("console").hidden = true;
        return;
    }
    $("signin").hidden = true;
    $("console").hidden = false;
    if (token && $("token-sign-out")) $("token-sign-out").hidden = false;
    const select = $("tenant");
    select.replaceChildren(...tenants.map((t) => new Option(t.name, t.id)));
    show(tenants[0].id);
}

start();

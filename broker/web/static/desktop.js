// The desktop page: asks the broker for a ticket, opens the gateway stream through PforteChannel
// (ticket as first message, never in the URL; survives network drops) and gives it to noVNC.
import RFB from "/novnc/core/rfb.js";
import keysyms from "/novnc/core/input/keysymdef.js";
import { PforteChannel } from "/static/pforte-channel.js";
import { accentOf, afterAccent } from "/static/dead-keys.js";
import { onNoticeDismissed, showNotice } from "/static/notice.js";
import { sayer } from "/static/status.js";

const body = document.body;
const status = document.getElementById("status");
const screen = document.getElementById("screen");
const texts = JSON.parse(document.getElementById("texts").textContent);

const ctrlAltDel = document.getElementById("ctrl-alt-del");
const fullScreen = document.getElementById("full-screen");
let current = null;          // the RFB of the open connection

// The browser keeps Ctrl+Alt+Del to itself: a button sends it to the desktop.
ctrlAltDel.addEventListener("click", () => {
    if (current) {
        current.sendCtrlAltDel();
        current.focus();
    }
});
// Dead keys (static/dead-keys.js): the page composes what the system reports in two events.
// Ahead of noVNC (capture on the screen, around its canvas): the dead key and the key that
// completes it never reach noVNC (and so neither do their releases), the result is sent as
// the characters' own keysyms.
let accent = null;
screen.addEventListener("keydown", (event) => {
    if (!current) return;
    if (event.key === "Dead") {
        const known = accentOf(event.code, event.shiftKey);
        if (!known) return;                      // a dead key of another layout: as noVNC does
        accent = known;
    } else if (accent) {
        const text = afterAccent(accent, event.key);
        if (text === null) return;               // Shift and the like: the accent waits
        accent = null;
        for (const c of text) current.sendKey(keysyms.lookup(c.codePointAt(0)), null);
    } else {
        return;
    }
    event.preventDefault();
    event.stopImmediatePropagation();
}, { capture: true });

// Full screen on a button; Esc (the browser's own) or the same button leaves it.
fullScreen.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
});
document.addEventListener("fullscreenchange", () => {
    fullScreen.setAttribute("aria-pressed", document.fullscreenElement ? "true" : "false");
});

// The clipboard, as far as the pool allows (the gateway enforces the same, whatever this page
// does). Text copied in the desktop lands in the copy box and, where the browser permits, in the
// computer's clipboard. Text for the desktop comes from the paste box — or, when the user comes
// back into the desktop and the browser permits reading the clipboard, straight from it.
const policy = body.dataset.clipboard;
const intoDesktop = policy === "both" || policy === "in";
const outOfDesktop = policy === "both" || policy === "out";
const clipboardButton = document.getElementById("clipboard");
const panel = document.getElementById("clipboard-panel");
const pasteBox = document.getElementById("clipboard-in");
const copyBox = document.getElementById("clipboard-out");
const clipboardSaid = document.getElementById("clipboard-said");
let lastSent = null;          // what this page last gave the desktop
let lastCopied = null;        // what the desktop last gave this page

function sendToDesktop(text) {
    if (current && text && intoDesktop) {
        current.clipboardPasteFrom(text);
        lastSent = text;
        return true;
    }
    return false;
}

function copiedOnDesktop(text) {
    if (!outOfDesktop) return;
    lastCopied = text;
    copyBox.value = text;
    navigator.clipboard?.writeText(text).catch(() => {});  // needs focus; the box remains
}

async function readComputerClipboard(ask) {
    if (!intoDesktop || !navigator.clipboard?.readText) return null;
    try {
        if (!ask) {
            const permission = await navigator.permissions.query({ name: "clipboard-read" });
            if (permission.state !== "granted") return null;
        }
        return await navigator.clipboard.readText();
    } catch (e) {
        return null;              // not permitted: the paste box remains
    }
}

function showClipboard(open) {
    panel.hidden = !open;
    clipboardButton.setAttribute("aria-expanded", open ? "true" : "false");
}

clipboardButton?.addEventListener("click", async () => {
    const open = panel.hidden;
    showClipboard(open);
    if (!open) {
        current?.focus();
        return;
    }
    clipboardSaid.textContent = "";
    (pasteBox || copyBox).focus();
    const text = await readComputerClipboard(true);   // a click: the browser may ask once
    if (pasteBox && text && !pasteBox.value) pasteBox.value = text;
});
document.getElementById("clipboard-close")?.addEventListener("click", () => {
    showClipboard(false);
    clipboardButton.focus();
});
document.getElementById("clipboard-send")?.addEventListener("click", () => {
    if (sendToDesktop(pasteBox.value)) clipboardSaid.textContent = texts.clipboard_sent;
});
document.getElementById("clipboard-copy")?.addEventListener("click", async () => {
    try {
        await navigator.clipboard.writeText(copyBox.value);
        clipboardSaid.textContent = texts.clipboard_copied;
    } catch (e) {
        copyBox.select();
        clipboardSaid.textContent = texts.clipboard_copy_failed;
    }
});
// Back into the desktop: what the user copied elsewhere meanwhile goes along.
screen.addEventListener("focusin", async () => {
    const text = await readComputerClipboard(false);
    if (text && text !== lastSent && text !== lastCopied) sendToDesktop(text);
});

onNoticeDismissed(() => current?.focus());

const MOVE_ATTEMPTS = 5;     // a gateway shut down or gone: open the desktop again, elsewhere
const MOVE_DELAY_MS = 100;    // the balancer already sends new connections elsewhere
let moves = 0;

const reconnect = document.getElementById("reconnect");
const say = sayer(texts);

// The connection's quality, for the helpdesk to ask about: the round trip through the gateway
// and what arrived per second, in the user's language's numbers.
const quality = document.getElementById("quality");
const numbers = new Intl.NumberFormat(document.documentElement.lang, { maximumFractionDigits: 1 });
function showQuality(roundTripMs, bytesPerSecond) {
    quality.textContent = texts.quality
        .replace("{ms}", numbers.format(roundTripMs))
        .replace("{kbps}", numbers.format(bytesPerSecond * 8 / 1000));
}

reconnect.addEventListener("click", () => {
    moves = 0;
    screen.replaceChildren();
    connect();
});

// The broker's reconnect pass for this pool: shown with the next request, it brings the user
// back to this desktop while the broker's database is down (broker/reconnect_pass.py).
// A pass lives a few minutes: while the desktop is connected the page asks for a fresh one.
const PASS_KEY = `pforte.reconnect-pass.${body.dataset.pool}`;
let renewal = null;

function renewPassEvery(seconds) {
    clearInterval(renewal);
    renewal = setInterval(async () => {
        try {
            const response = await fetch(`/api/v1/pools/${encodeURIComponent(body.dataset.pool)}/reconnect-pass`, {
                method: "POST",
                credentials: "same-origin",
                headers: { "X-CSRF-Token": body.dataset.csrf },
            });
            if (response.ok) sessionStorage.setItem(PASS_KEY, (await response.json()).reconnect_pass);
        } catch (e) {
            // the broker did not answer: the pass held is kept, the next beat tries again
        }
    }, seconds * 1000);
}

async function connect() {
    say("connecting");
    let answer;
    try {
        const headers = { "X-CSRF-Token": body.dataset.csrf };
        const held = sessionStorage.getItem(PASS_KEY);
        if (held) headers["X-Pforte-Reconnect-Pass"] = held;
        const response = await fetch(`/api/v1/pools/${encodeURIComponent(body.dataset.pool)}/connect`, {
            method: "POST",
            credentials: "same-origin",
            headers,
        });
        answer = await response.json();
        if (!response.ok) {            // the broker said why, in the user's language
            say("gateway_other");
            status.textContent = answer.message;
            return;
        }
        if (answer.reconnect_pass) sessionStorage.setItem(PASS_KEY, answer.reconnect_pass);
    } catch (e) {
        say("gateway_other");
        return;
    }
    const channel = new PforteChannel(answer.gateway_url, answer.ticket,
                                      (state, deadline) => say(state, null, deadline));
    channel.onquality = showQuality;
    channel.onnotice = (text, deadline) => showNotice(texts, text, deadline);
    const rfb = new RFB(screen, channel);
    current = rfb;
    // The pool's choice: the desktop takes the window's size (TigerVNC resizes on request), or
    // keeps its own and is scaled into the window.
    rfb.resizeSession = body.dataset.screen === "follow";
    rfb.scaleViewport = !rfb.resizeSession;
    rfb.addEventListener("connect", () => {
        say("connected");
        if (answer.reconnect_pass_renew_after) renewPassEvery(answer.reconnect_pass_renew_after);
    });
    rfb.addEventListener("clipboard", (event) => copiedOnDesktop(event.detail.text));
    rfb.addEventListener("disconnect", () => {
        clearInterval(renewal);
        if (body.dataset.state === "connected" || body.dataset.state === "connecting") {
            say("disconnected");
        }
    });
    const previous = channel.onclose;
    channel.onclose = (event) => {
        if (previous) previous(event);
        const moved = event.code === 1001 || event.code === 4410;
        if (moved && moves < MOVE_ATTEMPTS) {
            // The gateway is being drained (1001), or the one that held the stream is gone so
            // that it cannot be resumed (4410): a new ticket leads to another gateway, and the
            // desktop itself lives on, so the user finds it as they left it.
            moves += 1;
            say("reconnecting");
            screen.replaceChildren();
            setTimeout(connect, MOVE_DELAY_MS);
        } else if (event.code >= 4000) {
            say(`gateway_${event.code}`, "gateway_other");
        }
    };
}

connect();

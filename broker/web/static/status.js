// The desktop bar's status line, in the user's language (both desktop pages): `say(key)` names
// the state (a gateway's close code is `gateway_CODE`; `fallback` when the key has no text);
// "reconnecting" counts down to `deadline` (ms). An end offers "Connect again" and takes what
// worked on the session away: its buttons, the clipboard panel, a notice and its countdown.
import { endNotice } from "/static/notice.js";

const SESSION_BUTTONS = ["ctrl-alt-del", "clipboard", "full-screen"];
const body = document.body;
const status = document.getElementById("status");
const reconnect = document.getElementById("reconnect");
let countdown = null;

export function sayer(texts) {
    return function say(key, fallback, deadline) {
        clearInterval(countdown);
        body.dataset.state = key;
        status.textContent = texts[key] || texts[fallback] || key;
        if (key === "reconnecting" && deadline) {
            const tick = () => {
                const seconds = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
                status.textContent = texts.reconnecting_countdown.replace("{seconds}", seconds);
            };
            tick();
            countdown = setInterval(tick, 1000);
        }
        const ended = key === "disconnected" || key.startsWith("gateway_");
        reconnect.hidden = !ended;
        for (const id of SESSION_BUTTONS) {
            const button = document.getElementById(id);
            if (button) button.hidden = ended;
        }
        if (ended) {
            const panel = document.getElementById("clipboard-panel");
            if (panel) panel.hidden = true;
            document.getElementById("clipboard")?.setAttribute("aria-expanded", "false");
            endNotice();
        }
    };
}

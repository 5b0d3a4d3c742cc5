// The desktop page: asks the broker for a ticket, opens the gateway websocket, hands the ticket
// over as the first message (never in the URL) and gives the open socket to noVNC.
import RFB from "/novnc/core/rfb.js";

const body = document.body;
const status = document.getElementById("status");
const screen = document.getElementById("screen");
const texts = JSON.parse(document.getElementById("texts").textContent);

function say(key, fallback) {
    status.textContent = texts[key] || texts[fallback] || key;
}

async function connect() {
    say("connecting");
    let answer;
    try {
        const response = await fetch(`/api/v1/pools/${encodeURIComponent(body.dataset.pool)}/connect`, {
            method: "POST",
            credentials: "same-origin",
            headers: { "X-CSRF-Token": body.dataset.csrf },
        });
        answer = await response.json();
        if (!response.ok) {
            status.textContent = answer.message;
            return;
        }
    } catch (e) {
        say("gateway_other");
        return;
    }
    const ws = new WebSocket(answer.gateway_url);
    ws.binaryType = "arraybuffer";
    ws.addEventListener("close", (event) => {
        if (event.code >= 4000) {
            say(`gateway_${event.code}`, "gateway_other");
        }
    });
    ws.addEventListener("open", () => {
        ws.send(answer.ticket);
        const rfb = new RFB(screen, ws);
        rfb.scaleViewport = true;
        rfb.addEventListener("connect", () => {
            say("connected");
            body.dataset.state = "connected";
        });
        rfb.addEventListener("disconnect", () => {
            body.dataset.state = "disconnected";
            if (status.textContent === texts.connected || status.textContent === texts.connecting) {
                say("disconnected");
            }
        });
    }, { once: true });
}

connect();

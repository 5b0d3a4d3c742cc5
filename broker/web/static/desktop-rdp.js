// The desktop page of an RDP pool: asks the broker for a ticket and gives it to IronRDP's client
// (npm @devolutions/iron-remote-desktop), which sends it to the gateway inside its first message
// (RDCleanPath), never in the URL, through a resumable channel. The page's client holds no
// password: the gateway fills in the user's Windows logon, and the pool's keyboard layout,
// clipboard and redirections (gateway/rdp.py). The client's own credential fields get
// placeholders it requires.
import "/rdp/iron-remote-desktop/iron-remote-desktop.js";
import { Backend, init, enableCredssp, displayControl }
    from "/rdp/iron-remote-desktop-rdp/iron-remote-desktop-rdp.js";
import { onNoticeDismissed, showNotice } from "/static/notice.js";
import { rdpSocket } from "/static/pforte-channel.js";
import { sayer } from "/static/status.js";

const body = document.body;
const status = document.getElementById("status");
const screen = document.getElementById("screen");
const texts = JSON.parse(document.getElementById("texts").textContent);
const reconnect = document.getElementById("reconnect");
const fullScreen = document.getElementById("full-screen");
let session = null;           // IronRDP's UserInteraction, once the element is ready

const say = sayer(texts);

// IronRDP opens its websocket itself: as the page's WebSocket, a resumable PforteChannel carries
// it, so that a network drop is bridged as on the VNC page (the gateway holds the host's TLS),
// and the IT service's notices (a drain's words and deadline) arrive on it.
let closedWith = 0;           // the gateway's close code, once the stream ended
globalThis.WebSocket = rdpSocket({
    onstatus: (state, deadline) => say(state, null, deadline),
    onnotice: (text, deadline) => showNotice(texts, text, deadline),
    onclose: (code) => { closedWith = code; },
});

// How the session ended, in the user's words: the gateway's reason (idle, logged off, …).
function ended() {
    return closedWith >= 4000 ? `gateway_${closedWith}` : "disconnected";
}

// The HTTP status the gateway answers a refused RDCleanPath request with, as its close code.
const REFUSALS = { 400: 4400, 401: 4401, 403: 4403, 408: 4408, 409: 4409, 429: 4429,
                   502: 4502, 503: 4503 };

document.getElementById("ctrl-alt-del").addEventListener("click", () => session?.ctrlAltDel());
fullScreen.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
});
document.addEventListener("fullscreenchange", () => {
    fullScreen.setAttribute("aria-pressed", document.fullscreenElement ? "true" : "false");
});
reconnect.addEventListener("click", () => location.reload());
onNoticeDismissed(() => screen.querySelector("iron-remote-desktop")?.focus());

async function ticket() {
    const response = await fetch(`/api/v1/pools/${encodeURIComponent(body.dataset.pool)}/connect`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": body.dataset.csrf },
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.message);
    return answer;
}

async function start(ui) {
    session = ui;
    let answer;
    try {
        answer = await ticket();
    } catch (e) {
        say("gateway_other");
        if (e.message) status.textContent = e.message;
        return;
    }
    ui.setEnableClipboard(body.dataset.clipboard !== "none");   // one way: the gateway's part
    const size = screen.getBoundingClientRect();
    const config = ui.configBuilder()
        .withDestination("desktop")            // the gateway goes where the ticket says
        .withProxyAddress(answer.gateway_url)
        .withAuthToken(answer.ticket)
        .withUsername("-")                     // filled in by the gateway
        .withPassword("-")
        .withDesktopSize({ width: Math.max(640, Math.floor(size.width)),
                           height: Math.max(480, Math.floor(size.height)) })
        .withExtension(enableCredssp(false))
        .withExtension(displayControl(false))
        .build();
    try {
        const info = await ui.connect(config);
        say("connected");
        ui.setVisibility(true);
        await info.run();
        say(ended(), "disconnected");
    } catch (e) {
        const httpStatus = e?.rdcleanpathDetails?.()?.httpStatusCode;
        say(REFUSALS[httpStatus] ? `gateway_${REFUSALS[httpStatus]}` : ended(),
            "gateway_other");
    }
}

say("connecting");
await init("WARN");
const element = document.createElement("iron-remote-desktop");
element.module = Backend;
element.scale = "fit";
element.addEventListener("ready", (event) => start(event.detail.irgUserInteraction));
screen.append(element);

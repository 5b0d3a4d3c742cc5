// PforteChannel: the gateway stream for noVNC, surviving network drops.
//
// noVNC accepts any object with WebSocket's shape as its channel (send, close, binaryType,
// protocol, readyState, onopen, onmessage, onclose, onerror). This one presents the ticket as the
// first message (never in a URL), asks for a resumable session, and when the connection breaks
// without a goodbye it reattaches with the resume token and the number of bytes it has received.
// Given no ticket, it carries an RDP client (IronRDP, see rdpSocket): it announces itself as
// resumable, opens at once, and passes the client's RDCleanPath request (which carries the
// ticket) and the gateway's answer outside the counted stream.
// The gateway resends what was lost and says how much it received; this side resends the rest.
// noVNC sees one unbroken stream; the page shows "reconnecting…" meanwhile (onstatus, with the
// time by which the channel gives up).
// The protocol is described in wire/resume.py; the words below are its control messages, and
// tests/test_resume_protocol.py checks that both sides agree on them.

export const ACK_EVERY = 64 * 1024;
const RESUME_WITHIN_MS = 60000;
const RETRY_DELAYS_MS = [100, 250, 500, 1000, 2000, 4000];
export const QUALITY_EVERY_MS = 5000;   // a ping through the gateway, for the round trip
const NativeWebSocket = globalThis.WebSocket;   // the browser's (the RDP page replaces the global)

export const messages = {
    offer: (ticket) => JSON.stringify({ ticket, resumable: true }),
    resumableRdp: () => JSON.stringify({ resumable: true }),
    resume: (token, offset) => JSON.stringify({ resume: token, offset }),
    ack: (offset) => JSON.stringify({ ack: offset }),
    ping: (mark) => JSON.stringify({ ping: mark }),
};

// Where to reattach: the same URL, naming the gateway that holds the session (wire.resume_url).
export function resumeUrl(url, gateway) {
    if (!gateway) return url;
    const u = new URL(url);
    u.searchParams.delete("gateway");
    u.searchParams.append("gateway", gateway);
    return u.toString();
}

// A gateway's control message: {kind: "ack" | "token" | "resumed" | "pong" | "notice", value
// [, gateway | deadline]}, or null.
export function decodeControl(text) {
    let control;
    try { control = JSON.parse(text); } catch { return null; }
    if (control === null || typeof control !== "object") return null;
    if (Number.isInteger(control.ack) && control.ack >= 0) return { kind: "ack", value: control.ack };
    if (typeof control.resume === "string" && !("offset" in control)) {
        const gateway = control.gateway === undefined ? "" : control.gateway;
        if (typeof gateway !== "string") return null;
        return { kind: "token", value: control.resume, gateway };
    }
    if (Number.isInteger(control.resumed) && control.resumed >= 0) {
        return { kind: "resumed", value: control.resumed };
    }
    if (Number.isInteger(control.pong) && control.pong >= 0) {
        return { kind: "pong", value: control.pong };
    }
    if (typeof control.notice === "string") {
        const deadline = control.deadline === undefined ? 0 : control.deadline;
        if (!Number.isInteger(deadline) || deadline < 0) return null;
        return { kind: "notice", value: control.notice, deadline };
    }
    return null;
}

export class PforteChannel {
    constructor(url, ticket, onstatus = () => {}) {
        this.url = url;
        this.binaryType = "arraybuffer";
        this.protocol = "";
        this.onopen = null;
        this.onmessage = null;
        this.onclose = null;
        this.onerror = null;
        this.onstatus = onstatus;
        this.onnotice = null;     // (text, deadline in Unix seconds or 0): a notice for the user
        this.onquality = null;    // (round trip ms, bytes per second received), every few seconds
        this._quality = setInterval(() => this._ping(), QUALITY_EVERY_MS);
        this._lastPing = null;
        this._state = "connecting";
        this._token = null;
        this._received = 0;
        this._ackedDown = 0;
        this._sent = [];          // [{end, bytes}] sent but not acknowledged
        this._sentEnd = 0;
        this._ws = null;
        this._rdp = ticket === null;
        this._rdcleanpath = { request: this._rdp, answer: this._rdp };   // still to pass, uncounted
        this._connect(this._rdp ? messages.resumableRdp() : messages.offer(ticket), false);
    }

    get readyState() { return this._state; }

    send(data) {
        if (this._rdcleanpath.request) {          // the RDP client's first message
            this._rdcleanpath.request = false;
            this._ws.send(data);
            return;
        }
        // noVNC reuses its send buffer: keep a copy until the gateway acknowledges it.
        const bytes = new Uint8Array(data.buffer ? data.buffer.slice(data.byteOffset,
            data.byteOffset + data.byteLength) : data);
        this._sentEnd += bytes.byteLength;
        this._sent.push({ end: this._sentEnd, bytes });
        if (this._ws && this._ws.readyState === NativeWebSocket.OPEN && this._attached) {
            this._ws.send(bytes);
        }
    }

    close() {
        clearInterval(this._quality);
        this._state = "closing";
        if (this._ws) this._ws.close(1000);
    }

    _connect(firstMessage, resuming) {
        const ws = new NativeWebSocket(resuming ? this._resumeUrl : this.url);
        ws.binaryType = "arraybuffer";
        this._ws = ws;
        this._attached = false;
        ws.onopen = () => {
            ws.send(firstMessage);
            if (this._rdp && !resuming) this._opened();   // the RDP client's request next
        };
        ws.onmessage = (event) => this._message(ws, event, resuming);
        ws.onclose = (event) => this._closed(ws, event);
    }

    _message(ws, event, resuming) {
        if (typeof event.data !== "string") {
            if (this._rdcleanpath.answer) {        // the gateway's RDCleanPath answer
                this._rdcleanpath.answer = false;
                if (this.onmessage) this.onmessage({ data: event.data });
                return;
            }
            this._received += event.data.byteLength;
            if (this._received - this._ackedDown >= ACK_EVERY) {
                this._ackedDown = this._received;
                ws.send(messages.ack(this._received));
            }
            if (this.onmessage) this.onmessage({ data: event.data });
            return;
        }
        const control = decodeControl(event.data);
        if (control === null) return;
        if (control.kind === "pong") {
            const ping = this._lastPing;
            if (ping && ping.mark === control.value && this.onquality) {
                this.onquality(Math.round(performance.now() - ping.at), ping.rate);
            }
        } else if (control.kind === "notice") {
            if (this.onnotice) this.onnotice(control.value, control.deadline);
        } else if (control.kind === "ack") {
            this._trim(control.value);
        } else if (control.kind === "token") {
            this._token = control.value;
            this._resumeUrl = resumeUrl(this.url, control.gateway);
            this._attached = true;
            if (this._state === "connecting") this._opened();
        } else if (control.kind === "resumed") {
            this._trim(control.value);
            this._attached = true;
            for (const chunk of this._sent) {
                const skip = Math.max(0, control.value - (chunk.end - chunk.bytes.byteLength));
                ws.send(skip ? chunk.bytes.subarray(skip) : chunk.bytes);
            }
            this._resumeStarted = null;
            this.onstatus("connected");
        }
    }

    _opened() {
        this._state = "open";
        if (this.onopen) this.onopen({});
    }

    _ping() {
        if (this._state !== "open" || !this._attached) return;
        const at = performance.now();
        const last = this._lastPing;           // what arrived since the last ping, per second
        const rate = last ? (this._received - last.received) / ((at - last.at) / 1000) : 0;
        this._lastPing = { mark: Math.round(at), at, received: this._received, rate };
        this._ws.send(messages.ping(this._lastPing.mark));
    }

    _trim(offset) {
        while (this._sent.length && this._sent[0].end <= offset) this._sent.shift();
    }

    _closed(ws, event) {
        if (ws !== this._ws) return;
        const dropped = event.code === 1006 && this._token && this._state === "open";
        if (!dropped) {
            this._state = "closed";
            clearInterval(this._quality);
            if (this.onclose) this.onclose(event);
            return;
        }
        // The network failed: reattach within the gateway's grace period.
        const now = Date.now();
        this._resumeStarted = this._resumeStarted || now;
        if (now - this._resumeStarted > RESUME_WITHIN_MS) {
            this._state = "closed";
            if (this.onclose) this.onclose(event);
            return;
        }
        this.onstatus("reconnecting", this._resumeStarted + RESUME_WITHIN_MS);
        this._attempt = (this._attempt || 0) + 1;
        const delay = RETRY_DELAYS_MS[Math.min(this._attempt - 1, RETRY_DELAYS_MS.length - 1)];
        setTimeout(() => this._connect(messages.resume(this._token, this._received), true), delay);
    }
}

// A class with WebSocket's shape for IronRDP's client, which opens its websocket itself with
// `new WebSocket(url)` and listens with addEventListener: installed as the page's WebSocket, it
// makes the RDP stream a resumable PforteChannel. `onstatus` and `onnotice` as PforteChannel's;
// `onclose(code)` hears how the stream ended (the client itself does not say).
export function rdpSocket({ onstatus, onnotice = null, onclose = () => {} }) {
    const states = { connecting: 0, open: 1, closing: 2, closed: 3 };
    return class RdpSocket extends EventTarget {
        static CONNECTING = 0;
        static OPEN = 1;
        static CLOSING = 2;
        static CLOSED = 3;

        constructor(url) {
            super();
            this.url = url;
            this.binaryType = "arraybuffer";
            this.protocol = "";
            this.extensions = "";
            this.bufferedAmount = 0;
            const channel = new PforteChannel(url, null, onstatus);
            channel.onnotice = onnotice;
            channel.onopen = () => this._emit(new Event("open"));
            channel.onmessage = ({ data }) => this._emit(new MessageEvent("message", { data }));
            channel.onclose = ({ code, reason, wasClean }) => {
                onclose(code);
                this._emit(new CloseEvent("close", { code, reason, wasClean }));
            };
            this._channel = channel;
            this._sending = Promise.resolve();
        }

        get readyState() { return states[this._channel.readyState] ?? 3; }

        // IronRDP sends Blobs: they are read in order. Other data is copied at once (it may be
        // a view of the client's memory, reused right after).
        send(data) {
            const bytes = data instanceof Blob ? data.arrayBuffer()
                : new Uint8Array(data.buffer ? data.buffer.slice(data.byteOffset,
                    data.byteOffset + data.byteLength) : data.slice(0));
            this._sending = this._sending.then(() => bytes)
                .then((read) => this._channel.send(read));
        }

        close() { this._channel.close(); }

        _emit(event) {
            this.dispatchEvent(event);
            const handler = this[`on${event.type}`];
            if (typeof handler === "function") handler.call(this, event);
        }
    };
}

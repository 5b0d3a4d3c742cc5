// A notice from the IT service (a drain, an admin's message) over the desktop, with a countdown
// to the logoff where there is one. It takes no focus: typing goes on into the desktop; screen
// readers announce it (role="alert"); "OK" hides it and calls `dismissed` (the desktop takes
// the focus back). Both desktop pages use it, with the notices their streams carry.
const notice = document.getElementById("notice");
const noticeText = document.getElementById("notice-text");
const noticeCountdown = document.getElementById("notice-countdown");
let noticeTimer = null;

export function showNotice(texts, text, deadline) {
    clearInterval(noticeTimer);
    noticeText.textContent = text || texts.notice_default;
    noticeCountdown.textContent = "";
    if (deadline) {
        const tick = () => {
            const left = Math.max(0, Math.round(deadline - Date.now() / 1000));
            const time = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
            noticeCountdown.textContent = left > 0
                ? texts.notice_countdown.replace("{time}", time) : texts.notice_now;
        };
        tick();
        noticeTimer = setInterval(tick, 1000);
    }
    notice.hidden = false;
}

export function onNoticeDismissed(dismissed) {
    document.getElementById("notice-dismiss").addEventListener("click", () => {
        notice.hidden = true;
        clearInterval(noticeTimer);
        dismissed();
    });
}

// The session is over: a notice and its countdown go with it (the status line says why).
export function endNotice() {
    clearInterval(noticeTimer);
    notice.hidden = true;
}

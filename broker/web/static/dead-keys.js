// Dead keys, as a German keyboard has them. Chromium reports the accent key as "Dead" (the
// X11 and Windows systems compose, the page is told nothing of which accent) and then the
// plain letter ("a", not "â"): noVNC would send a keysym that means nothing (NoSymbol) and then
// "a", and the desktop would get "a". So the page composes: the accent is known by the key's
// place (code) and Shift, the letter and the accent become one character where Unicode has
// one, Space gives the accent alone, and anything else the accent and then the character, as
// the keyboard itself would. Pure: no DOM; the desktop page sends what it returns.

// German T1 (DIN 2137): where the dead keys are, the combining mark, the accent alone
export const GERMAN_DEAD_KEYS = {
    "Backquote": ["\u0302", "^"],        // ^ (circumflex)
    "Equal": ["\u0301", "\u00b4"],       // ´ (acute)
    "Shift+Equal": ["\u0300", "`"],      // ` (grave)
};

// The accent a "Dead" key event stands for, or null for a dead key this table does not know.
export function accentOf(code, shift, table = GERMAN_DEAD_KEYS) {
    return table[(shift ? "Shift+" : "") + code] || null;
}

// What to type for ``key`` (a KeyboardEvent's key) after ``accent``; null when ``key`` is no
// character (Shift, AltGraph, ...): the accent then waits for the next one.
export function afterAccent(accent, key) {
    if ([...key].length !== 1) return null;
    const [mark, alone] = accent;
    if (key === " ") return alone;
    const composed = (key + mark).normalize("NFC");
    if ([...composed].length === 1) return composed;
    if (key === alone || key.codePointAt(0) > 0x7f) return key;   // composed by the system
    return alone + key;
}

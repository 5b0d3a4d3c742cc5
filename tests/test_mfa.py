"""The TOTP policy: pure, over (secret, code, now, last_step)."""

import pytest
from wire.sealing import SealBroken
from hypothesis import given, strategies as st

from broker import mfa
from broker.errors import CodeRejected

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_015  # inside step 60_000_000


def step_of(t: float) -> int:
    return int(t) // mfa.STEP


def test_the_current_code_is_accepted_and_its_step_returned():
    assert mfa.check_code(SECRET, mfa.current_code(SECRET, NOW), now=NOW, last_step=None) == \
        step_of(NOW)


@pytest.mark.parametrize("offset", [-1, 1])
def test_codes_one_step_either_side_are_accepted(offset):
    code = mfa.current_code(SECRET, NOW + offset * mfa.STEP)
    assert mfa.check_code(SECRET, code, now=NOW, last_step=None) == step_of(NOW) + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_codes_further_away_are_expired(offset):
    code = mfa.current_code(SECRET, NOW + offset * mfa.STEP)
    if code in {mfa.current_code(SECRET, NOW + k * mfa.STEP) for k in (-1, 0, 1)}:
        pytest.skip("code collides with one inside the window")
    with pytest.raises(CodeRejected):
        mfa.check_code(SECRET, code, now=NOW, last_step=None)


def test_a_used_code_is_refused_for_its_whole_window():
    code = mfa.current_code(SECRET, NOW)
    step = mfa.check_code(SECRET, code, now=NOW, last_step=None)
    for later in (NOW, NOW + mfa.STEP, (step + 2) * mfa.STEP - 1):  # last instant it is valid
        with pytest.raises(mfa.CodeReplayed):
            mfa.check_code(SECRET, code, now=later, last_step=step)


def test_an_older_code_after_a_newer_one_is_refused():
    newer = mfa.check_code(SECRET, mfa.current_code(SECRET, NOW), now=NOW, last_step=None)
    with pytest.raises(mfa.CodeReplayed):
        mfa.check_code(SECRET, mfa.current_code(SECRET, NOW - mfa.STEP), now=NOW,
                       last_step=newer)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes_are_refused(code):
    with pytest.raises(CodeRejected):
        mfa.check_code(SECRET, code, now=NOW, last_step=None)


def test_spaces_inside_a_code_are_ignored():
    code = mfa.current_code(SECRET, NOW)
    assert mfa.check_code(SECRET, f"{code[:3]} {code[3:]}", now=NOW, last_step=None)


@given(now=st.integers(10**9, 3 * 10**9), last=st.one_of(st.none(), st.integers(0, 10**8)),
       offset=st.integers(-3, 3))
def test_an_accepted_step_is_later_than_the_last_and_inside_the_window(now, last, offset):
    code = mfa.current_code(SECRET, now + offset * mfa.STEP)
    try:
        step = mfa.check_code(SECRET, code, now=now, last_step=last)
    except CodeRejected:
        return
    assert abs(step - step_of(now)) <= mfa.DRIFT_STEPS
    assert last is None or step > last


def test_sealed_secrets_open_only_in_their_context():
    key = bytes(32)
    sealed = mfa.seal(key, SECRET, "town/anna")
    assert SECRET not in sealed
    assert mfa.unseal(key, sealed, "town/anna") == SECRET
    with pytest.raises(SealBroken):
        mfa.unseal(key, sealed, "town/bernd")


def test_the_enrolment_qr_code_is_svg():
    svg = mfa.qr_svg(mfa.provisioning_uri(SECRET, "anna@town.example"))
    assert svg.startswith("<svg") and "path" in svg

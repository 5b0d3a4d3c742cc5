"""Client profiles: layered inheritance and validation, pure (plus the shipped examples)."""

from pathlib import Path

import pytest

from client_profiles.profiles import load_layers, merge, resolve
from wire.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "client_profiles" / "examples"


def test_layers_merge_base_class_site_device_in_that_order():
    p = resolve(load_layers(EXAMPLES, device="tc-0042", device_class="thin-client",
                            site="rathaus-front-office"))
    assert p.viewer == "vnc"                          # from the class
    assert p.display.monitors == 2
    assert p.pools == ("buero",)                      # from the site
    assert p.redirect.clipboard is True and p.redirect.usb is False   # site over base, base kept
    assert p.keyboard_layout == "us" and p.language == "de"           # device over base


def test_a_device_without_class_or_site_gets_the_base():
    p = resolve(load_layers(EXAMPLES, device="unknown-device"))
    assert p.viewer == "browser" and p.display.resolution == "auto" and p.pools == ()


def test_a_mistake_names_the_file_that_made_it():
    layers = [("base.toml", {"tenant": "t"}),
              ("sites/x.toml", {"display": {"monitors": 9}})]
    with pytest.raises(ConfigError) as err:
        resolve(layers)
    assert err.value.path == "sites/x.toml" and err.value.key == "display.monitors"


@pytest.mark.parametrize("table, key", [
    ({"viewer": "teamviewer"}, "viewer"),
    ({"display": {"resolution": "big"}}, "display.resolution"),
    ({"kiosk": {"on_logoff": "explode"}}, "kiosk.on_logoff"),
    ({"redirect": {"usb": "yes"}}, "redirect.usb"),
    ({"screen_lock": 5}, "screen_lock"),                 # misspelt key
    ({"keyboard": {"layout": "de; reboot"}}, "keyboard.layout"),   # reaches a command line
    ({"keyboard": {"layout": "-option"}}, "keyboard.layout"),
])
def test_invalid_values_and_unknown_keys_are_refused(table, key):
    with pytest.raises(ConfigError) as err:
        resolve([("base.toml", {"tenant": "t"}), ("devices/d.toml", table)])
    assert err.value.key == key


def test_the_tenant_is_required():
    with pytest.raises(ConfigError) as err:
        resolve([("base.toml", {"viewer": "vnc"})])
    assert err.value.key == "tenant"


def test_names_that_are_no_plain_file_names_are_refused(tmp_path):
    (tmp_path / "base.toml").write_text('tenant = "t"\n')
    with pytest.raises(ConfigError):
        load_layers(tmp_path, device="../../etc/passwd")


def test_merging_does_not_change_the_layers():
    base = {"redirect": {"usb": False}}
    merge([("a", base), ("b", {"redirect": {"usb": True}})])
    assert base == {"redirect": {"usb": False}}


def test_an_edited_layer_applies_at_the_next_fetch(tmp_path):
    (tmp_path / "base.toml").write_text('tenant = "t"\nviewer = "vnc"\n')
    assert resolve(load_layers(tmp_path, device="d")).viewer == "vnc"
    (tmp_path / "base.toml").write_text('tenant = "t"\nviewer = "rdp"\n[keyboard]\nlayout = "fr"\n')
    p = resolve(load_layers(tmp_path, device="d"))
    assert p.viewer == "rdp" and p.keyboard_layout == "fr"
    (tmp_path / "base.toml").write_text('tenant = "t"\nviewer = \n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_layers(tmp_path, device="d")

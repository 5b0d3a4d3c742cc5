"""A malformed config is refused with file, key and what was expected; a good one loads."""

from pathlib import Path

import pytest

from broker.config import load_config
from broker.keys import generate_keys
from gateway.config import gateway_config
from wire.config import load_toml
from wire.errors import ConfigError


def good_config(tmp_path: Path) -> str:
    keys = tmp_path / "keys"
    generate_keys(keys)
    (keys / "ldap.pass").write_text("secret\n")
    (keys / "vnc.pass").write_text("vncpw\n")
    return """
[broker]
listen = "127.0.0.1:8080"
state_dir = "state"
ticket_private_key_file = "keys/ticket-signing.pem"
credential_key_file = "keys/credential.key"
totp_key_file = "keys/totp.key"
report_token_file = "keys/report.token"
gateway_url = "wss://gw.example/ws"
gateway_audience = "gw"

[gateway]
listen = "0.0.0.0:8443"
audience = "gw"
ticket_public_key_file = "keys/ticket-verify.pem"
credential_key_file = "keys/credential.key"
report_token_file = "keys/report.token"
broker_url = "http://127.0.0.1:8080"
allowed_targets = ["10.20.0.0/16"]

[[tenants]]
id = "jork"
name = "Gemeinde Jork"
domains = ["jork.example"]

[tenants.directory]
servers = ["ldaps://dc1.jork.example", "ldaps://dc2.jork.example"]
base_dn = "dc=jork,dc=example"
bind_dn = "cn=svc,dc=jork,dc=example"
bind_password_file = "keys/ldap.pass"

[[tenants.pools]]
id = "office"
name = "Office"
group = "cn=desktop,dc=jork,dc=example"
hosts = ["h1"]

[[tenants.hosts]]
id = "h1"
address = "10.20.0.5"
port = 5901
seats = 10
secret_file = "keys/vnc.pass"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pforte.toml"
    path.write_text(text)
    return path


def test_a_complete_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, good_config(tmp_path)))
    tenant = cfg.tenant("jork")
    assert tenant.pool("office").hosts == ("h1",)
    assert tenant.host("h1").secret == b"vncpw"
    assert tenant.directory.servers == ("ldaps://dc1.jork.example", "ldaps://dc2.jork.example")
    assert cfg.ticket_lifetime == 30
    gw = gateway_config(load_toml(tmp_path / "pforte.toml"))
    assert gw.audience == "gw" and gw.listen == ("0.0.0.0", 8443)


@pytest.mark.parametrize("change, key, expected", [
    (("seats = 10", "seats = 0"), "tenants[0].hosts[0].seats", ">= 1"),
    (("seats = 10", 'seats = "ten"'), "tenants[0].hosts[0].seats", "integer"),
    (('hosts = ["h1"]', 'hosts = ["h2"]'), "tenants[0].pools[0].hosts[0]", "id of a host"),
    (('address = "10.20.0.5"', 'address = "desk.example"'), "tenants[0].hosts[0].address",
     "IP address"),
    (('gateway_url = "wss://gw.example/ws"', 'gateway_url = "https://gw"'), "broker.gateway_url",
     "ws://"),
    (('listen = "127.0.0.1:8080"', 'listen = "8080"'), "broker.listen", "HOST:PORT"),
    (('servers = ["ldaps://dc1.jork.example", "ldaps://dc2.jork.example"]',
      'servers = ["dc1.jork.example"]'), "tenants[0].directory.servers[0]", "ldap://"),
    (('bind_password_file = "keys/ldap.pass"', 'bind_password_file = "keys/nope"'),
     "tenants[0].directory.bind_password_file", "does not exist"),
    (('gateway_audience = "gw"', 'gateway_audience = "gw"\nticket_lifetime = 600'),
     "broker.ticket_lifetime", "<= 60"),
    (('gateway_audience = "gw"', 'gateway_audience = "gw"\ngatway = 1'), "broker.gatway",
     "not a known setting"),
    (('id = "office"', 'id = "Office Pool"'), "tenants[0].pools[0].id", "lower-case"),
    (("seats = 10", 'seats = 10\nprotocol = "x11"'), "tenants[0].hosts[0].protocol",
     "one of vnc, rdp, spice"),
])
def test_each_mistake_names_file_key_and_expectation(tmp_path, change, key, expected):
    path = write(tmp_path, good_config(tmp_path).replace(*change))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.path == str(path)
    assert err.value.key == key
    assert expected in err.value.expected


def test_invalid_toml_reports_the_line(tmp_path):
    path = write(tmp_path, good_config(tmp_path).replace('name = "Office"', 'name = "Office'))
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_config(path)


def test_a_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_duplicate_host_ids_are_refused(tmp_path):
    text = good_config(tmp_path) + '\n[[tenants.hosts]]\nid = "h1"\naddress = "10.20.0.6"\n' \
        'port = 5901\nseats = 1\n'
    with pytest.raises(ConfigError, match="appears twice"):
        load_config(write(tmp_path, text))


def test_a_missing_section_is_reported(tmp_path):
    text = good_config(tmp_path)
    text = text[:text.index("[[tenants]]")]
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert err.value.key == "tenants"


def test_a_short_aes_key_is_refused(tmp_path):
    text = good_config(tmp_path)
    (tmp_path / "keys" / "credential.key").write_text("abcd\n")
    with pytest.raises(ConfigError, match="64 hex digits"):
        load_config(write(tmp_path, text))


def test_the_cli_reports_a_config_error_and_exits_2(tmp_path, capsys):
    from pforte.cli import main
    path = write(tmp_path, good_config(tmp_path).replace("seats = 10", "seats = -1"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "tenants[0].hosts[0].seats" in err


def test_plain_ldap_must_be_asked_for(tmp_path):
    text = good_config(tmp_path).replace(
        'servers = ["ldaps://dc1.jork.example", "ldaps://dc2.jork.example"]',
        'servers = ["ldap://dc1.jork.example"]')
    with pytest.raises(ConfigError, match="ldaps://") as err:
        load_config(write(tmp_path, text))
    assert err.value.key == "tenants[0].directory.servers[0]"
    for security in ("starttls", "plain"):
        cfg = load_config(write(tmp_path, text.replace(
            'base_dn = "dc=jork,dc=example"',
            f'base_dn = "dc=jork,dc=example"\nsecurity = "{security}"')))
        assert cfg.tenant("jork").directory.security == security


def test_check_config_checks_every_client_profile_a_device_can_get(tmp_path, capsys):
    import shutil
    from pforte.cli import main
    profiles = tmp_path / "profiles"
    shutil.copytree(Path(__file__).resolve().parent.parent / "client_profiles" / "examples",
                    profiles)
    text = good_config(tmp_path).replace('[broker]\n', f'[broker]\nprofiles_dir = "{profiles}"\n')
    text = text.replace('id = "jork"', 'id = "musterstadt"')  # the examples' tenant
    path = write(tmp_path, text)
    assert main(["check-config", str(path)]) == 0
    assert "client profiles" in capsys.readouterr().out
    (profiles / "sites" / "schule-nord.toml").write_text('[display]\nmonitors = "zwei"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "schule-nord.toml" in err and "display.monitors" in err
    (profiles / "sites" / "schule-nord.toml").write_text('tenant = "jork"\n')
    assert main(["check-config", str(path)]) == 2
    assert "schule-nord.toml" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gateway 1", "gw/1", "-gw", "gw?x=1", "g" * 64, "gwé"])
def test_a_gateway_name_a_balancer_could_not_route_by_is_refused(tmp_path, name):
    path = write(tmp_path, good_config(tmp_path).replace("[gateway]\n",
                                                         f'[gateway]\nname = "{name}"\n'))
    with pytest.raises(ConfigError) as err:
        gateway_config(load_toml(path))
    assert err.value.key == "gateway.name"


def test_a_gateway_is_named_as_its_balancer_names_it(tmp_path):
    path = write(tmp_path, good_config(tmp_path).replace("[gateway]\n",
                                                         '[gateway]\nname = "gw-2.dc1"\n'))
    assert gateway_config(load_toml(path)).name == "gw-2.dc1"
    assert gateway_config(load_toml(write(tmp_path, good_config(tmp_path)))).name == ""

"""Directory login against a real slapd: the right answers, and bounded failure when it is down."""

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import ldap3
import pytest
from hypothesis import given, settings, strategies as st
from ldap3.utils.conv import escape_filter_chars

from broker.config import DirectoryConfig
from broker.directory import Directory
from broker.errors import BadCredentials, DirectoryUnavailable
from testbed import free_port

from .conftest import SPECIAL_LOGIN, USERS, sign_in

pytestmark = pytest.mark.integration


def directory(slapd, servers=None, timeout=2.0) -> Directory:
    return Directory(DirectoryConfig(
        servers=tuple(servers or [slapd.url]), base_dn=slapd.suffix, bind_dn=slapd.service_dn,
        bind_password=slapd.service_password, login_attribute="uid",
        user_object_class="inetOrgPerson", timeout=timeout, group_depth=8, security="plain",
        ca_file=None, kind="openldap", domains=("musterstadt.example",)),
        ThreadPoolExecutor(4))


async def test_a_user_logs_in_and_nested_groups_are_resolved(slapd):
    user = await sign_in(directory(slapd), "anna", USERS["anna"][1])
    assert user.display_name == "Anna Schmidt"
    assert slapd.group_dn("buergerbuero").lower() in user.groups
    assert slapd.group_dn("desktop-users").lower() in user.groups  # through buergerbuero


async def test_a_wrong_password_is_refused(slapd):
    with pytest.raises(BadCredentials):
        await sign_in(directory(slapd), "anna", "wrong")


async def test_reused_connections_never_carry_one_users_bind_into_the_next_check(slapd):
    # One directory, one thread: every check after the first runs on the same pooled connection.
    d = Directory(directory(slapd).config, ThreadPoolExecutor(1))
    for _ in range(2):
        assert (await sign_in(d, "anna", USERS["anna"][1])).login == "anna"
        with pytest.raises(BadCredentials):
            await sign_in(d, "bernd", USERS["anna"][1])  # bound as anna a moment ago
        with pytest.raises(BadCredentials):
            await sign_in(d, "anna", "wrong")
        assert (await sign_in(d, "bernd", USERS["bernd"][1])).login == "bernd"


async def test_own_memberships_apply_at_once_and_nesting_within_its_ttl(slapd):
    inner, outer = slapd.group_dn("cache-inner"), slapd.group_dn("cache-outer")
    anna = slapd.user_dn("anna")
    d = directory(slapd)
    with slapd.admin() as admin:
        admin.add(inner, ["groupOfNames"], {"cn": "cache-inner", "member": [anna]})
        admin.add(outer, ["groupOfNames"], {"cn": "cache-outer", "member": [inner]})
        try:
            groups = (await sign_in(d, "anna", USERS["anna"][1])).groups
            assert {inner.lower(), outer.lower()} <= groups
            admin.modify(outer, {"member": [(ldap3.MODIFY_REPLACE, [slapd.user_dn("bernd")])]})
            groups = (await sign_in(d, "anna", USERS["anna"][1])).groups
            assert outer.lower() in groups  # the nesting is remembered ...
            fresh = directory(slapd)  # as after the TTL: nothing remembered
            groups = (await sign_in(fresh, "anna", USERS["anna"][1])).groups
            assert inner.lower() in groups and outer.lower() not in groups  # ... for its TTL
            admin.modify(inner, {"member": [(ldap3.MODIFY_REPLACE, [slapd.user_dn("bernd")])]})
            groups = (await sign_in(d, "anna", USERS["anna"][1])).groups
            assert inner.lower() not in groups  # the user's own membership: at once
        finally:
            admin.delete(outer)
            admin.delete(inner)


async def test_an_unknown_user_is_refused_like_a_wrong_password(slapd):
    with pytest.raises(BadCredentials):
        await sign_in(directory(slapd), "nobody", "whatever")


async def test_an_empty_password_never_binds_anonymously(slapd):
    with pytest.raises(BadCredentials):
        await sign_in(directory(slapd), "anna", "")


@pytest.mark.parametrize("login", ["jörg", SPECIAL_LOGIN])
async def test_umlauts_and_ldap_special_characters_work(slapd, login):
    user = await sign_in(directory(slapd), login, USERS[login][1])
    assert user.login == login


async def test_a_wildcard_login_finds_nobody(slapd):
    with pytest.raises(BadCredentials):
        await sign_in(directory(slapd), "*", USERS["anna"][1])
    with pytest.raises(BadCredentials):
        await sign_in(directory(slapd), "ann*", USERS["anna"][1])


async def test_a_closed_port_is_reported_unavailable_quickly(slapd):
    start = time.monotonic()
    with pytest.raises(DirectoryUnavailable):
        await sign_in(directory(slapd, [f"ldap://127.0.0.1:{free_port()}"]), "anna", "x")
    assert time.monotonic() - start < 5  # a bound on a hang, not a speed claim


async def test_a_server_that_never_answers_is_reported_unavailable_within_the_timeout(slapd):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (kernel backlog) but never speaks LDAP
    try:
        start = time.monotonic()
        with pytest.raises(DirectoryUnavailable):
            await sign_in(directory(slapd, [f"ldap://127.0.0.1:{silent.getsockname()[1]}"],
                                    timeout=1.0), "anna", USERS["anna"][1])
        assert time.monotonic() - start < 10
    finally:
        silent.close()


async def test_the_next_server_takes_over_when_the_first_is_down(slapd):
    d = directory(slapd, [f"ldap://127.0.0.1:{free_port()}", slapd.url])
    assert (await sign_in(d, "bernd", USERS["bernd"][1])).login == "bernd"
    # the dead server is now set aside: the next login goes straight to the live one
    assert d._servers() == [slapd.url]


async def test_concurrent_logins_are_all_answered(slapd):
    d = directory(slapd)
    users = [f"user{i}" for i in range(1, 7)] * 3
    results = await asyncio.gather(*(sign_in(d, u, USERS[u][1]) for u in users))
    assert [r.login for r in results] == users


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_escaped_filter_values_contain_no_filter_syntax(value):
    escaped = escape_filter_chars(value)
    assert not any(c in escaped for c in "()*\0")
    assert escaped.count("\\") == sum(value.count(c) for c in "\\()*\0")


def tls_directory(server, servers, security, ca_file):
    return Directory(DirectoryConfig(
        servers=tuple(servers), base_dn=server.suffix, bind_dn=server.service_dn,
        bind_password=server.service_password, login_attribute="uid",
        user_object_class="inetOrgPerson", timeout=2.0, group_depth=8, security=security,
        ca_file=ca_file, kind="openldap", domains=()), ThreadPoolExecutor(2))


@pytest.mark.parametrize("security", ["ldaps", "starttls"])
async def test_logins_over_tls_verify_the_servers_certificate(tls_slapd, security):
    url = tls_slapd.ldaps_url if security == "ldaps" else tls_slapd.url
    d = tls_directory(tls_slapd, [url], security, tls_slapd.tls[0])
    assert (await sign_in(d, "tina", "Tina-pass-1")).login == "tina"


@pytest.mark.parametrize("security", ["ldaps", "starttls"])
async def test_a_server_certificate_from_an_unknown_ca_is_refused(tls_slapd, tmp_path, security):
    from testbed import self_signed_certificate
    other_ca, _ = self_signed_certificate(tmp_path / "other")
    url = tls_slapd.ldaps_url if security == "ldaps" else tls_slapd.url
    d = tls_directory(tls_slapd, [url], security, other_ca)
    with pytest.raises(DirectoryUnavailable):
        await sign_in(d, "tina", "Tina-pass-1")


async def test_group_of_unique_names_and_posix_groups_count(slapd):
    d = directory(slapd)
    bernd = await sign_in(d, "bernd", USERS["bernd"][1])
    assert slapd.group_dn("standesamt").lower() in bernd.groups        # uniqueMember
    clara = await sign_in(d, "clara", USERS["clara"][1])
    assert slapd.group_dn("unix-staff").lower() in clara.groups        # memberUid
    assert slapd.group_dn("desktop-users").lower() not in clara.groups

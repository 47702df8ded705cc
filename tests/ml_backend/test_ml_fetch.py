"""The shared downloader (``vl4pose.fetch``) against real listeners on 127.0.0.1: credentials only to their
origin, no cookies, internal addresses only when trusted or allow-listed, a wall-clock deadline, a size limit."""

from __future__ import annotations

import time

import pytest

from vl4pose.fetch import AddressPolicy, Credential, DownloadLimits, FetchError, download, is_internal


def trusted(*listeners) -> AddressPolicy:
    return AddressPolicy().with_trusted(*[listener.url for listener in listeners])


def test_the_credential_goes_to_its_origin_and_never_after_a_redirect_away(listeners):
    home, away = listeners(), listeners()
    policy = trusted(home, away)
    credential = Credential.token(home.url, "admin-token")
    assert download(f"{home.url}/a.png", credential=credential, policy=policy)
    # home -> away -> home: the credential is sent on the first hop only, never again once the chain left home
    back = f"{home.url}/redirect?to={home.url}/back.png"
    assert download(f"{home.url}/redirect?to={away.url}/redirect?to={back}", credential=credential, policy=policy)
    assert [r["authorization"] for r in home.requests] == ["Token admin-token", "Token admin-token", None, None]
    assert away.credentials() == [(None, None)]
    assert download(f"{away.url}/b.png", credential=credential, policy=policy)  # another origin: never
    assert away.credentials() == [(None, None), (None, None)]


def test_no_cookie_is_kept_or_sent(listeners):
    home, other = listeners(), listeners()
    policy = trusted(home, other)
    download(f"{home.url}/set-cookie.png", policy=policy)  # the server sets sessionid
    download(f"{home.url}/again.png", policy=policy)
    download(f"{other.url}/x.png", policy=policy)
    download(f"{home.url}/redirect?to={other.url}/y.png", policy=policy)
    assert all(cookie is None for _, cookie in home.credentials() + other.credentials())


def test_internal_addresses_need_trust_or_the_allow_list(listeners):
    server = listeners()
    port = server.url.rsplit(":", 1)[1]
    with pytest.raises(FetchError, match="internal address 127.0.0.1") as refused:
        download(f"{server.url}/a.png")
    assert refused.value.kind == "blocked" and server.requests == []  # refused at connect time: nothing sent
    assert download(f"{server.url}/a.png", policy=AddressPolicy(allow_hosts=frozenset({f"127.0.0.1:{port}"})))
    assert download(f"{server.url}/a.png", policy=AddressPolicy(allow_hosts=frozenset({"127.0.0.1"})))
    network = AddressPolicy(allow_networks=(__import__("ipaddress").ip_network("127.0.0.0/8"),))
    assert download(f"{server.url}/a.png", policy=network)
    # a trusted origin may not redirect to another internal one (each hop's connection is checked)
    home = listeners()
    with pytest.raises(FetchError) as redirected:
        download(f"{home.url}/redirect?to={server.url}/secret", policy=trusted(home))
    assert redirected.value.kind == "blocked" and len(server.requests) == 3
    for address, internal in (("127.0.0.1", True), ("10.1.2.3", True), ("169.254.169.254", True), ("::1", True),
                              ("::ffff:127.0.0.1", True), ("100.64.0.1", True), ("0.0.0.0", True),
                              ("8.8.8.8", False), ("2606:4700::1111", False)):
        assert is_internal(address) is internal, address


def test_a_trickling_server_is_cut_at_the_deadline(listeners):
    slow = listeners(trickle_s=0.3)  # one byte every 0.3 s: each read is quick, the whole would take minutes
    started = time.monotonic()
    with pytest.raises(FetchError, match="no complete answer within 1.5 s") as late:
        download(f"{slow.url}/slow.png", DownloadLimits(timeout=1.0, deadline=1.5), policy=trusted(slow))
    elapsed = time.monotonic() - started
    assert late.value.kind == "timeout" and late.value.transient
    assert 1.4 <= elapsed < 2.5, elapsed


def test_size_limit_unsupported_urls_and_http_errors(listeners):
    server = listeners()
    policy = trusted(server)
    with pytest.raises(FetchError, match="more than the limit of 100") as big:
        download(f"{server.url}/a.png", DownloadLimits(max_bytes=100), policy=policy)
    assert big.value.kind == "too_large"
    for url in ("file:///etc/passwd", "ftp://x/y", "http://", "http://[bad"):
        with pytest.raises(FetchError) as bad:
            download(url, policy=policy)
        assert bad.value.kind == "url"
    with pytest.raises(FetchError, match="more than 1 redirects"):
        download(f"{server.url}/redirect?to={server.url}/redirect?to={server.url}/a.png",
                 DownloadLimits(max_redirects=1), policy=policy)

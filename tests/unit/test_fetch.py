"""Image URLs (``--allow-image-urls``): every hop checked, the connection pinned to the checked address,
the whole fetch bounded in time and size (issue 17 #5).

A loopback HTTP server stands in for the internet: the resolver says ``public.test`` is 8.8.8.8 (a global
address, so it passes), and the opener connects "8.8.8.8" to the loopback server.
"""

import http.server
import socket
import threading
import time

import pytest

from retouch.serving.images import FetchError, fetch_url

PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        routes = self.server.routes  # type: ignore[attr-defined]
        action = routes.get(self.path, ("status", 404))
        kind, value = action
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", value)
            self.end_headers()
        elif kind == "status":
            self.send_response(value)
            self.end_headers()
        elif kind == "body":
            self.send_response(200)
            self.send_header("Content-Length", str(len(value)))
            self.end_headers()
            self.wfile.write(value)
        elif kind == "trickle":
            self.send_response(200)
            self.end_headers()
            for _ in range(value):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        elif kind == "hang":
            time.sleep(value)


@pytest.fixture
def site():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.routes = {}
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def network(site, names=None):
    names = {"public.test": ["8.8.8.8"], **(names or {})}

    def resolve(host, port):
        if host in names:
            return names[host]
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]

    def open_socket(address, port, timeout):
        assert address == "8.8.8.8", address  # only checked, global addresses are ever connected to
        return socket.create_connection(("127.0.0.1", site.server_address[1]), timeout=timeout)

    return {"resolve": resolve, "open_socket": open_socket}


def test_a_public_url_is_fetched(site):
    site.routes["/a.png"] = ("body", PNG)
    assert fetch_url("http://public.test/a.png", **network(site)) == PNG


def test_redirects_are_followed_and_each_hop_is_checked(site):
    site.routes["/a.png"] = ("redirect", "/b.png")
    site.routes["/b.png"] = ("body", PNG)
    assert fetch_url("http://public.test/a.png", **network(site)) == PNG
    site.routes["/evil.png"] = ("redirect", f"http://127.0.0.1:{site.server_address[1]}/a.png")
    with pytest.raises(FetchError, match="local or private address"):
        fetch_url("http://public.test/evil.png", **network(site))
    site.routes["/rebind.png"] = ("redirect", "http://rebind.test/a.png")
    with pytest.raises(FetchError, match="local or private address .*rebind.test"):
        fetch_url("http://public.test/rebind.png", **network(site, {"rebind.test": ["8.8.4.4", "10.0.0.1"]}))


def test_redirect_loops_end(site):
    site.routes["/loop"] = ("redirect", "/loop")
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch_url("http://public.test/loop", **network(site))


def test_the_whole_fetch_is_bounded_in_time(site):
    site.routes["/slow"] = ("hang", 5)
    site.routes["/trickle"] = ("trickle", 50)  # 10 s of bytes, each in time
    for path in ("/slow", "/trickle"):
        started = time.monotonic()
        with pytest.raises(FetchError, match="within"):
            fetch_url(f"http://public.test{path}", seconds=1.0, **network(site))
        assert time.monotonic() - started < 4


def test_and_in_size(site):
    site.routes["/big"] = ("body", b"x" * 5000)
    with pytest.raises(FetchError, match="larger than 4096 bytes") as e:
        fetch_url("http://public.test/big", max_bytes=4096, **network(site))
    assert e.value.status == 413


def test_other_schemes_and_errors(site):
    for url in ("file:///etc/passwd", "ftp://public.test/x", "http:///x"):
        with pytest.raises(FetchError, match="only http"):
            fetch_url(url, **network(site))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url("http://public.test/missing", **network(site))

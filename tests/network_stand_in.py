"""A stand-in Internet for a few HTTPS sites, on 127.0.0.1: an HTTP proxy that accepts CONNECT
for the hosts it knows, speaks TLS with certificates of a test authority (trustme) and answers
GET and HEAD from memory. Programs reach it unchanged through the usual variables: HTTPS_PROXY
(where to connect) and REQUESTS_CA_BUNDLE / SSL_CERT_FILE (whom to trust); any other host is
refused, so a test notices a download it did not expect."""
from __future__ import annotations

import socketserver
import ssl
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import trustme

from stand_ins import BackgroundServer, GetHeadHandler


class StandInInternet(BackgroundServer):
    """`with StandInInternet({"https://host/path": b"content"}, folder) as web:` then run programs
    with `web.environment()`; `web.requests` lists the URLs served, `web.refused` the hosts asked
    for in vain."""

    def __init__(self, files: dict[str, bytes], folder: Path):
        self.files = dict(files)
        self.hosts = sorted({urlsplit(url).hostname for url in files})
        self.requests: list[str] = []
        self.refused: list[str] = []
        authority = trustme.CA()
        self.ca_file = folder / "stand-in-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert(*self.hosts).configure_cert(self.tls)
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._proxy_handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def environment(self) -> dict[str, str]:
        """Variables that send HTTPS through the stand-in and make its certificates trusted
        (plain HTTP to 127.0.0.1, such as a stand-in Hugging Face Hub, goes direct)."""
        return {"HTTPS_PROXY": self.url, "https_proxy": self.url, "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost", "REQUESTS_CA_BUNDLE": str(self.ca_file),
                "SSL_CERT_FILE": str(self.ca_file)}

    def _proxy_handler(self) -> type[socketserver.StreamRequestHandler]:
        web = self

        class Proxy(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request_line = self.rfile.readline().decode("latin-1").split()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # the CONNECT request's headers
                host = request_line[1].rsplit(":", 1)[0] if len(request_line) == 3 else ""
                if request_line[:1] != ["CONNECT"] or host not in web.hosts:
                    web.refused.append(host)
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                with web.tls.wrap_socket(self.connection, server_side=True) as tls_socket:
                    web._site_handler(host)(tls_socket, self.client_address, None)

        return Proxy

    def _site_handler(self, host: str) -> type[BaseHTTPRequestHandler]:
        web = self

        class Site(GetHeadHandler):
            protocol_version = "HTTP/1.1"

            def answer(self, send_body: bool) -> None:
                url = f"https://{host}{urlsplit(self.path).path}"
                content = web.files.get(url)
                web.requests.append(url)
                self.send_response(200 if content is not None else 404)
                self.send_header("Content-Length", str(len(content or b"")))
                self.send_header("Connection", "close")
                self.end_headers()
                if send_body and content:
                    self.wfile.write(content)
                self.close_connection = True

        return Site

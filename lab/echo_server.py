"""Lab HTTP server: answers with the client's address and logs every connection.

Usage: echo_server.py [--files=DIR] LOGFILE PORT ADDRESS [ADDRESS ...]
  GET /            -> the client address as seen here
  GET /bytes/N     -> N bytes (for download tests)
  GET /files/NAME  -> the file DIR/NAME (the lab's "internet" download site)
  GET /slow/NAME   -> the same file, spread over about 3 s (a download still running when
                      another client asks for the same image)
Every accepted connection is logged as "<client address>" on its own line, so a test
can prove that nothing arrived (an empty log) as well as what did.
"""
import http.server
import os
import socket
import socketserver
import sys
import threading
import time

ARGS = sys.argv[1:]
FILES = ARGS.pop(0)[len("--files="):] if ARGS and ARGS[0].startswith("--files=") else None
LOG = ARGS[0]
PORT = int(ARGS[1])
ADDRESSES = ARGS[2:]
lock = threading.Lock()


def log(line):
    with lock, open(LOG, "a") as f:
        f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        client = self.client_address[0]
        if client.startswith("::ffff:"):
            client = client[7:]
        if FILES and (self.path.startswith("/files/") or self.path.startswith("/slow/")):
            name = os.path.basename(self.path)
            try:
                with open(os.path.join(FILES, name), "rb") as f:
                    data = f.read()
            except OSError:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.path.startswith("/slow/"):
                step = len(data) // 10 + 1
                for i in range(0, len(data), step):
                    self.wfile.write(data[i : i + step])
                    self.wfile.flush()
                    time.sleep(0.3)
            else:
                self.wfile.write(data)
            return
        if self.path.startswith("/bytes/"):
            size = int(self.path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            while size > 0:
                self.wfile.write(chunk[: min(size, len(chunk))])
                size -= len(chunk)
            return
        body = (client + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address):
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, PORT), Handler)

    def server_bind(self):
        # HTTPServer would look up its own name here: a DNS query to the machine's resolver,
        # which a lab namespace must never send (and which stalls start-up until it times out).
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def verify_request(self, request, client_address):
        log(client_address[0])
        return True


servers = [Server(a) for a in ADDRESSES]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()

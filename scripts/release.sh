#!/usr/bin/env bash
# Builds the release binary, statically linked, into dist/ with what the container image needs
# beside it, and prints its size and sha256.
#
#   scripts/release.sh            # dist/cistern (x86_64 Linux, static glibc)
#
# Static glibc rather than musl: the musl target is a separate Rust toolchain component that is
# not installed here, while glibc's static libraries come with the C toolchain. glibc >= 2.34
# carries its DNS and files resolvers inside libc, so a static build still resolves names
# (/etc/hosts, then DNS per /etc/resolv.conf) without NSS modules; TLS is rustls with the
# Mozilla roots compiled in, plus the system bundle named by SSL_CERT_FILE when set.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -p cistern --target "$target"
mkdir -p dist/data
cp "target/$target/release/cistern" dist/cistern
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt dist/ca-certificates.crt
fi
if ldd dist/cistern >/dev/null 2>&1; then
  echo "dist/cistern is not static:" >&2
  ldd dist/cistern >&2
  exit 1
fi
size=$(stat -c %s dist/cistern)
echo "dist/cistern: static (glibc, $target), $size bytes ($((size / 1024 / 1024)) MiB)"
echo "sha256: $(sha256sum dist/cistern | cut -d' ' -f1)"

# Self-check of the static binary: name resolution without NSS modules and TLS with a CA that
# only SSL_CERT_FILE names. A throw-away CA and a certificate for `localhost`, a TLS server on
# loopback (Python's ssl), and `cistern healthcheck` fetching from it by name.
if [ "${RELEASE_SELF_CHECK:-1}" = 1 ] && command -v openssl >/dev/null && command -v python3 >/dev/null; then
  tmp=$(mktemp -d)
  trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=cistern-test-ca \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout "$tmp/srv.key" \
    -out "$tmp/srv.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$tmp/ext"
  openssl x509 -req -in "$tmp/srv.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 1 -extfile "$tmp/ext" -out "$tmp/srv.pem" 2>/dev/null
  mkdir -p "$tmp/www" && echo ok >"$tmp/www/healthz"
  python3 - "$tmp" >"$tmp/port" <<'PY' &
import http.server, ssl, sys, functools, socketserver
d = sys.argv[1]
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d + "/www")
h.log_message = lambda *a: None
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/srv.pem", d + "/srv.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
  server=$!
  for _ in $(seq 1 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
  port=$(cat "$tmp/port")
  if SSL_CERT_FILE="$tmp/ca.pem" dist/cistern healthcheck --url "https://localhost:$port/healthz"; then
    echo "self-check: the static binary resolved localhost and fetched over TLS from a server signed by a test CA"
  else
    echo "self-check FAILED: the static binary could not fetch https://localhost:$port/healthz" >&2
    exit 1
  fi
  if dist/cistern healthcheck --url "https://localhost:$port/healthz" 2>/dev/null; then
    echo "self-check FAILED: the test CA was trusted without SSL_CERT_FILE" >&2
    exit 1
  fi
fi

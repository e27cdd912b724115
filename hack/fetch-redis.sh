#!/usr/bin/env bash
# Puts a real redis-server for the tests at .cache/redis/redis-server, without root and without
# touching the system: the one on PATH if there is one, else Debian's package and its two libraries
# unpacked into .cache/redis (apt-get download + dpkg-deb -x).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/redis
mkdir -p "$dest"
if [[ -x "$dest/redis-server" ]] && "$dest/redis-server" --version >/dev/null 2>&1; then
  exit 0
fi
if command -v redis-server >/dev/null 2>&1; then
  ln -sf "$(command -v redis-server)" "$dest/redis-server"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "fetch-redis: no redis-server on PATH and no apt-get; install redis-server (>= 6) and re-run" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download redis-server redis-tools liblzf1 libjemalloc2 >/dev/null 2>&1) || {
  echo "fetch-redis: apt-get download failed; run 'apt-get update' or install redis-server" >&2
  exit 1
}
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
rm -rf "$dest/root"
mv "$work/root" "$dest/root"
cat >"$dest/redis-server" <<'WRAP'
#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
for lib in "$here"/root/usr/lib/*-linux-gnu; do LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
export LD_LIBRARY_PATH
exec "$here/root/usr/bin/redis-server" "$@"
WRAP
chmod +x "$dest/redis-server"
"$dest/redis-server" --version

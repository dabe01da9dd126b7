#!/usr/bin/env bash
# Renews gwsync's Google Calendar push channels that expire soon; for cron or a systemd timer.
# gwsync renews channels by itself; this is the belt to its braces, and a check that it works.
#
#   GWSYNC_ADMIN_TOKEN   the server's admin token (required)
#   GWSYNC_SERVER        the server (default http://127.0.0.1:8080)
#   GWSYNC_RENEW_WITHIN  renew channels expiring within this long (default 48h)
#   GWSYNC_BIN           the gwsync binary (default: gwsync on PATH)
#
# Prints "renewed N, failed M, users checked K"; exits 0 when nothing failed, non-zero with a
# one-line reason otherwise (each failed user on its own line, with the fix).
set -euo pipefail

bin="${GWSYNC_BIN:-gwsync}"
if ! command -v "$bin" >/dev/null 2>&1; then
    echo "renew-channels: cannot find the gwsync binary '$bin' (set GWSYNC_BIN)" >&2
    exit 2
fi
if [ -z "${GWSYNC_ADMIN_TOKEN:-}" ]; then
    echo "renew-channels: GWSYNC_ADMIN_TOKEN is not set" >&2
    exit 2
fi
exec "$bin" renew --within "${GWSYNC_RENEW_WITHIN:-48h}"

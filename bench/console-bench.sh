#!/bin/sh
# The web console at 10,000 devices (issue 14): starts `appfence serve --demo` with
# N simulated devices on a private data directory and a loopback port, signs the demo
# analyst in, then times console pages side by side with the API call that reads the
# same page of data (same run, alternating requests), and prints medians, p95s and the
# ratio. Stops the server at the end (and after at most 15 minutes in any case).
#
#   bench/console-bench.sh [DEVICES] [REPS]      (defaults: 10000 40)
set -eu
cd "$(dirname "$0")/.."
DEVICES=${1:-10000}
REPS=${2:-40}
PORT=${APPFENCE_BENCH_PORT:-8190}
cargo build --release --locked -p appfence-cli --bin appfence
BIN="${CARGO_TARGET_DIR:-target}/release/appfence"
DIR=$(mktemp -d)
chmod 700 "$DIR"
LOG="$DIR/serve.log"
timeout -s KILL 900 "$BIN" serve --demo --demo-devices "$DEVICES" --data-dir "$DIR/data" \
    --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
SERVER=$!
trap 'kill -9 $SERVER 2>/dev/null; rm -rf "$DIR"' EXIT INT TERM
for _ in $(seq 300); do grep -q "Web console" "$LOG" && break; sleep 1; done
grep -q "Web console" "$LOG" || { echo "the demo did not start; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
python3 - "http://127.0.0.1:$PORT" "$DIR/data/demo.json" "$REPS" "$DEVICES" <<'PY'
import http.cookiejar, json, re, statistics, sys, time, urllib.parse, urllib.request
base, demo_file, reps, devices = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
demo = json.load(open(demo_file))
jar = http.cookiejar.CookieJar()
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
form = browser.open(base + "/console/sign-in").read().decode()
csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form).group(1)
body = urllib.parse.urlencode({"username": demo["analyst"]["username"], "password": demo["analyst"]["password"], "csrf": csrf, "next": "/console/devices"}).encode()
try:
    browser.open(base + "/console/sign-in", body)
except urllib.error.HTTPError as e:
    assert e.code == 303, e.code
token = json.load(urllib.request.urlopen(demo["tokenUrl"], urllib.parse.urlencode({
    "grant_type": "client_credentials", "client_id": demo["clientId"], "client_secret": demo["clientSecret"],
    "scope": "https://api.securitycenter.microsoft.com/.default"}).encode()))["access_token"]
api = urllib.request.build_opener()
api.addheaders = [("Authorization", "Bearer " + token)]
def timed(opener, url):
    start = time.perf_counter(); opener.open(base + url).read(); return time.perf_counter() - start
last = devices // 50
pairs = [
    ("/console/devices", "/api/machines?$top=50&$count=true&$orderby=computerDnsName"),
    (f"/console/devices?page={last // 2}", f"/api/machines?$top=50&$skip={(last // 2 - 1) * 50}&$count=true&$orderby=computerDnsName"),
    ("/console/devices?q=demo-linux-5&health=Active", "/api/machines?$top=50&$count=true&$orderby=computerDnsName&$filter=startswith(computerDnsName,'demo-linux-5') and healthStatus eq 'Active'"),
]
print(f"| console page ({devices} devices) | median ms | p95 ms | API call | median ms | p95 ms | ratio (medians) |")
print("|---|---|---|---|---|---|---|")
for page, call in pairs:
    c, a = [], []
    for _ in range(reps):
        c.append(timed(browser, page)); a.append(timed(api, urllib.parse.quote(call, safe="/?$=&(),'")))
        time.sleep(1.3)  # under the API's 100 calls a minute (the console counts the same way)
    p95 = lambda xs: sorted(xs)[int(len(xs) * 0.95) - 1]
    cm, am = statistics.median(c), statistics.median(a)
    print(f"| `{page}` | {cm*1000:.1f} | {p95(c)*1000:.1f} | `{call}` | {am*1000:.1f} | {p95(a)*1000:.1f} | {cm/am:.2f} |")
PY

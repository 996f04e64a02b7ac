#!/usr/bin/env bash
# The `docs` phase of `make test`: the documentation is checked against the running platform.
#
#   1. Relative links between the Markdown pages resolve (files and #anchors).
#   2. Every ```sql block marked `<!-- plan -->` is a job the engine's planner accepts.
#   3. The `helm install` command of docs/operations.md renders (`helm template`, same flags).
#   4. docs/reference/crds.md and rest.md are what docs/reference/generate.py makes of the
#      committed CRD YAML and of the running api-server's /openapi.json (else: stale, exit 1).
#   5. Every page in PAGES is run: its ```sh blocks marked `<!-- run -->` (or
#      `<!-- run, then check: NAME -->`) run in order, in one bash shell with errexit and
#      pipefail, from the repository root; after a block marked with a check, check_NAME
#      below checks what it printed. A ```sh block must carry `<!-- run … -->` or
#      `<!-- skip: why -->` on the line before it, so no shell block goes unchecked silently.
#
# The pages use names of their own (namespace `quickstart`, tenant `quickstart`, topics
# `quickstart-*`), which nothing else on the platform uses. What an earlier run left is cleared
# first, and again on exit. Every wait has a deadline. Needs the platform (make up).
set -euo pipefail
source "$(dirname "$0")/../e2e/platform/lib.sh"
cd "$ROOT"
[[ -f "$LOCAL/env" ]] || die "${LOCAL#"$ROOT"/}/env is missing: run make up first"
set -a; source "$LOCAL/env"; set +a
[[ -n "${MILLRACE_API_URL:-}" && -n "${MILLRACE_ADMIN_TOKEN:-}" ]] || die "MILLRACE_API_URL is not in .local/env: the chart is not installed (make up)"

PAGES=(docs/quickstart.md)
work="$LOCAL/docs-check"; rm -rf "$work"; mkdir -p "$work"
kafka() { bash "$ROOT/e2e/platform/kafka.sh" "$@"; }
admin() { curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $MILLRACE_ADMIN_TOKEN" "$@"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- what the pages leave behind -------------------------------------------------------------

no_namespace() { ! kubectl get namespace "$1" >/dev/null 2>&1; }
no_quickstart_topics() { ! kafka topics --list 2>/dev/null | grep -qE '^quickstart[-.]'; }
clear_quickstart() {
  if ! no_namespace quickstart; then
    kubectl delete namespace quickstart --wait=false >/dev/null
  fi
  if [[ "$(admin "$MILLRACE_API_URL/v1/tenants/quickstart")" == 200 ]]; then
    admin -X DELETE "$MILLRACE_API_URL/v1/tenants/quickstart?force=true" >/dev/null
  fi
  wait_for "namespace quickstart to be deleted" 180 no_namespace quickstart
  wait_for "namespace tenant-quickstart to be deleted" 180 no_namespace tenant-quickstart
  # A KafkaTopic adopts a topic that already exists, old records and all: none may be left.
  local leftover
  leftover="$(kafka topics --list 2>/dev/null | grep -E '^quickstart[-.]' || true)"
  for t in $leftover; do kafka topics --delete --topic "$t" >/dev/null 2>&1 || true; done
  wait_for "the quickstart topics to leave Kafka" 120 no_quickstart_topics
  # A job created again under the same name resumes from the checkpoints it left.
  rm -rf "$LOCAL/checkpoints/quickstart" "$LOCAL/checkpoints/tenant-quickstart"
}

# ---- checks, one per `run, then check: NAME` marker; $1 is what the block printed ----------

numbers() { grep -E '^-?[0-9]+(\.[0-9]+)?$' "$1" | paste -sd' ' -; }
expect_numbers() { # expect_numbers FILE WANT...
  local file="$1" got; shift
  got="$(numbers "$file")"
  [[ "$got" == "$*" ]] || fail "expected the records '$*', got '$got'"
}
phase() { kubectl get sj "$2" -n "$1" -o 'jsonpath={.status.phase}'; }

check_env() {
  grep -q '^millrace-operator ' "$1" || fail "no millrace-operator Deployment listed"
  grep -q '^millrace-api ' "$1" || fail "no millrace-api Deployment listed"
  command -v kubectl >/dev/null && command -v helm >/dev/null || fail "kubectl and helm are not on PATH"
}
check_topics() {
  local t
  for t in quickstart-input quickstart-output quickstart-dlq; do
    grep -Eq "^$t +$t +1 " "$1" || fail "KafkaTopic $t is not listed"
    # Ready is asserted on the resource, not on the listing: right after a create the operator
    # can report KafkaUnavailable for a second ("the topic appeared while it was being
    # created") before it adopts the topic.
    kubectl wait -n quickstart --for=condition=Ready "kt/$t" --timeout=60s >/dev/null || fail "KafkaTopic $t is not Ready"
    kafka topics --list | grep -qx "$t" || fail "topic $t is not in Kafka"
  done
}
check_job() {
  [[ "$(phase quickstart seed-a)" == Running ]] || fail "seed-a is not Running"
  grep -Eq '^seed-a +Running +1 +1/1 +True' "$1" || fail "kubectl get sj does not show seed-a Running 1/1"
}
check_first_output() { expect_numbers "$1" 70.0 80.0 90.0; }
check_dead_letter() {
  grep -q 'millrace.error:' "$1" || fail "the dead letter has no millrace.error header"
  grep -q 'not-a-number' "$1" || fail "the dead letter is not the malformed record"
  grep -Eq '^millrace_worker_dead_lettered_records_total\{.*outcome="dlq".*\} 1$' "$1" \
    || fail "the worker's metrics do not count one dead letter"
}
check_savepoint() {
  local location path
  location="$(grep -E '^(file|s3)://' "$1" | tail -1)"
  [[ "$location" == file://* ]] || fail "no file:// savepoint location printed (local storage is file://)"
  path="${location#file://}"
  [[ -f "$path/_metadata" ]] || fail "the savepoint at $path has no _metadata"
}
check_scale() {
  [[ "$(kubectl get sj seed-a -n quickstart -o 'jsonpath={.status.parallelism}')" == 2 ]] || fail "status.parallelism is not 2"
  [[ "$(kubectl get sj seed-a -n quickstart -o 'jsonpath={.status.savepointHistory[0].trigger}')" == upgrade ]] \
    || fail "the rescale did not go through a savepoint (trigger upgrade)"
  local workers
  workers="$(kubectl get pods -n quickstart -l app.kubernetes.io/instance=seed-a,millrace.io/role=worker -o name | wc -l)"
  (( workers == 2 )) || fail "$workers worker Pods, expected 2"
}
check_second_output() { expect_numbers "$1" 70.0 80.0 90.0 100.0 110.0; }
check_tenant() {
  grep -q '"name":"quickstart"' "$1" || fail "the tenant was not created"
  [[ "${KEY:-}" == mr_* ]] || fail "KEY does not hold a tenant API key"
}
check_rest_topics() {
  grep -q '"kafkaTopic":"quickstart.input"' "$1" || fail "topic input is not quickstart.input in Kafka"
  kafka topics --list | grep -qx quickstart.output || fail "quickstart.output is not in Kafka"
}
check_rest_invalid() {
  grep -q '"status":422' "$1" || fail "the invalid SQL was not refused with 422"
  grep -q '"line":2' "$1" && grep -q '"column":' "$1" || fail "the refusal has no line 2 and column"
}
check_rest_job() {
  grep -q '"phase":"Running"' "$1" || fail "the REST job is not Running"
  [[ "$(phase tenant-quickstart filter)" == Running ]] || fail "StreamJob tenant-quickstart/filter is not Running"
}
check_rest_output() { expect_numbers "$1" 50 93; }

# ---- running a page ---------------------------------------------------------------------------

# blocks PAGE SCRIPT: writes the page's runnable blocks as one bash script; lists skipped ones.
blocks() {
  python3 - "$1" "$2" <<'PY'
import re, sys
page, script = sys.argv[1], sys.argv[2]
lines = open(page).read().split("\n")
marker = None
out = []
i = 0
while i < len(lines):
    line = lines[i]
    m = re.fullmatch(r"<!-- (run(?:, then check: ([a-z_]+))?|skip: (.+)) -->", line.strip())
    if m:
        marker = (m.group(1).startswith("run"), m.group(2), m.group(3), i + 1)
        i += 1
        continue
    if line.startswith("```sh"):
        start = i + 1
        end = start
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if marker is None or marker[3] != i:
            sys.exit(f"{page}:{i + 1}: a ```sh block without <!-- run --> or <!-- skip: why --> before it")
        run, check, why = marker[:3]
        if run:
            n = len([l for l in out if l.startswith("__block ")]) + 1
            out.append(f"__block {n} {start} {check or '-'}")
            out.append("{")
            out.extend(lines[start:end])
            out.append(f'}} >"$__out/{n}" 2>&1')
            out.append(f"__done {n} {check or '-'}")
        else:
            print(f"    skipped {page}:{start}: {why}", file=sys.stderr)
        marker = None
        i = end + 1
        continue
    marker = None  # a marker belongs to the line right after it
    i += 1
open(script, "w").write("\n".join(out) + "\n")
PY
}

run_page() { # run_page PAGE
  local page="$1" script="$work/$(basename "$1" .md).sh"
  step "$page"
  blocks "$page" "$script"
  (
    exec 3>&2   # the blocks' own stderr goes to their output files; reports go here
    __page="$page"   # the EXIT trap runs after run_page's locals are gone
    __out="$work/$(basename "$page" .md).out"; mkdir -p "$__out"
    __current=0 __line=0
    __block() { __current="$1"; __line="$2"; info "block $1 ($page:$2)"; }
    __done() {
      sed 's/^/      /' "$__out/$1" >&2
      __current=0   # the block ran; what fails now is its check, which says why
      if [[ "$2" != - ]]; then "check_$2" "$__out/$1" || exit 1; info "check $2: ok"; fi
    }
    __on_exit() {
      local rc=$?
      if (( rc != 0 && __current == 0 )); then
        printf 'error: %s: the check after the block at line %s failed\n' "$__page" "$__line" >&3
      elif (( rc != 0 )); then
        [[ -f "$__out/$__current" ]] && sed 's/^/      /' "$__out/$__current" >&3
        printf 'error: %s: the block at line %s failed (exit %s)\n' "$__page" "$__line" "$rc" >&3
      fi
    }
    trap __on_exit EXIT
    set -euo pipefail
    # shellcheck disable=SC1090
    source "$script"
  )
}

# links_resolve: every relative link between the Markdown pages names a file that exists and,
# with a #fragment, a heading or id="…" anchor in it (GitHub's slugs). Links that leave the
# repository (../shared/) are not checked.
links_resolve() {
  python3 - README.md docs/*.md docs/reference/*.md <<'PY'
import pathlib, re, sys
def anchors(text):
    found = set(re.findall(r'id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.*)$", text, re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found
bad = []
for name in sys.argv[1:]:
    page = pathlib.Path(name)
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", link):
            continue
        path, _, fragment = link.partition("#")
        target = page.parent / path if path else page
        if not target.resolve().is_relative_to(pathlib.Path.cwd()):
            continue  # outside the repository (../shared/): not ours to check
        if not target.exists():
            bad.append(f"{page}: {link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target.read_text()):
            bad.append(f"{page}: {link}: no such anchor")
for b in bad:
    print(f"error: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# plan_sql_blocks: every ```sql block marked `<!-- plan -->` is a whole job that the engine's
# planner accepts (`millrace-worker run --explain` plans it and runs nothing).
plan_sql_blocks() {
  local dir="$work/sql" n=0 f
  mkdir -p "$dir"
  python3 - "$dir" docs/*.md <<'PY'
import pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    lines = pathlib.Path(name).read_text().split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "<!-- plan -->":
            if i + 1 >= len(lines) or not lines[i + 1].startswith("```sql"):
                sys.exit(f"{name}:{i + 1}: <!-- plan --> must come right before a ```sql block")
            end = i + 2
            while not lines[end].startswith("```"):
                end += 1
            stem = pathlib.Path(name).stem
            (out / f"{stem}-{i + 3}.sql").write_text("\n".join(lines[i + 2:end]) + "\n")
PY
  for f in "$dir"/*.sql; do
    [[ -e "$f" ]] || continue
    "$MILLRACE_BIN_DIR/millrace-worker" run -f "$f" --explain >/dev/null \
      || fail "docs/$(basename "${f%-*}").md, the block from line $(basename "${f##*-}" .sql): the planner refuses its SQL"
    n=$((n + 1))
  done
  info "$n SQL blocks planned"
}

# helm_install_renders: the `helm install` command of docs/operations.md (a cluster of your own,
# so not run) renders with `helm template` and the same flags: its values pass the chart's
# schema and templates.
helm_install_renders() {
  local command
  command="$(python3 - docs/operations.md <<'PY'
import re, sys
text = open(sys.argv[1]).read()
match = re.search(r"^helm install .*?(?<!\\)$", text, re.M | re.S)
if not match:
    sys.exit("docs/operations.md has no `helm install` command")
print(match.group(0).replace("\\\n", " "))
PY
)"
  read -ra words <<<"$command"
  [[ "${words[0]} ${words[1]}" == "helm install" ]] || fail "unexpected install command: $command"
  helm template "${words[@]:2}" >/dev/null || fail "docs/operations.md: '$command' does not render"
  info "${command%% --set*} … renders"
}

# ---- the checks, in order -------------------------------------------------------------------

step "links between the pages"
links_resolve
step "SQL blocks marked <!-- plan -->"
plan_sql_blocks
step "the install command of docs/operations.md"
helm_install_renders
step "generated references"
python3 docs/reference/generate.py crds --check
python3 docs/reference/generate.py rest --check --openapi-url "$MILLRACE_API_URL/openapi.json"

step "clearing what an earlier run left (namespace and tenant quickstart, their topics and checkpoints)"
clear_quickstart
trap 'rc=$?; step "clearing up"; clear_quickstart || true; exit $rc' EXIT
for page in "${PAGES[@]}"; do run_page "$page"; done
info "every block of ${PAGES[*]} ran and printed what the page says"

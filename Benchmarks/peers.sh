# Sourced by the benchmark scripts: what they need beside the project, installed once.
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

# parsedmarc 11.1.0 from PyPI in .build-bench/venv (the report-parsing and receiving peer).
need_parsedmarc() {
    if [ ! -x .build-bench/venv/bin/python ] || ! .build-bench/venv/bin/python -c 'import parsedmarc' 2>/dev/null; then
        python3 -m venv .build-bench/venv
        .build-bench/venv/bin/pip install -q parsedmarc==11.1.0
    fi
}

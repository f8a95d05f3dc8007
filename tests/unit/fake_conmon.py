"""A podman stand-in whose containers outlive their client, as conmon's do (unit tests of stopping them)."""

#: A stand-in for podman whose container, like conmon's, does not get the signals of the job's
#: processes: "run" starts what follows the image in a session of its own and waits for it; "stop",
#: "rm -f" and "kill" act on it by its name, as podman does (the real one:
#: tests/integration/test_containers.py).
FAKE_CONMON_RUNTIME = """#!/bin/bash
printf '%s\\0' "$@" >> "$FAKE_CALLS"; printf '\\036' >> "$FAKE_CALLS"
name=${*: -1}
case $1 in
run)
  name=$3
  while [ "$1" != bash ]; do shift; done
  setsid "$@" </dev/null &
  printf '%s' $! > "$FAKE_STATE/$name"
  wait $!; rc=$?; rm -f "$FAKE_STATE/$name"; exit $rc ;;  # --rm
stop)  # TERM to its PID 1, after -t s KILL to all of it (its session here, its pid namespace there)
  pid=$(cat "$FAKE_STATE/$name") || exit 0
  kill -TERM "$pid"  # ended (a zombie counts: its parent, the client, may be gone) or KILLed after -t s
  for _ in $(seq $(($4 * 10))); do case $(ps -o stat= -p "$pid") in ""|Z*) exit 0 ;; esac; sleep 0.1; done
  pkill -KILL -s "$pid" ;;
rm) pid=$(cat "$FAKE_STATE/$name") || exit 0; pkill -KILL -s "$pid"; rm -f "$FAKE_STATE/$name" ;;
kill) kill -s "$3" "$(cat "$FAKE_STATE/$name")" ;;
esac
"""

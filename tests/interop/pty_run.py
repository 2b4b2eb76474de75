#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal, as a user at a terminal would, for tests/cli.rs.

Reads one JSON request on stdin:
  {"argv": [...], "env": {...}, "answers": ["..."], "prompt": "passphrase for"}
Each time the terminal output shows one more `prompt` than has been answered, waits until the
program has turned the terminal's echo off (Linux shares the termios of a pty's two ends), types
the next answer and Enter. Writes {"status": exit code, "output": everything the terminal showed,
"echo_off": whether echo was off at every prompt answered, "answered": how many were}.
"""
import json
import os
import pty
import select
import sys
import termios
import time

req = json.load(sys.stdin)
answers = list(req.get("answers", []))
prompt = req.get("prompt", "passphrase for").encode()
env = dict(os.environ)
env.update(req.get("env", {}))

pid, fd = pty.fork()
if pid == 0:
    os.execvpe(req["argv"][0], req["argv"], env)

out = b""
answered = 0
echo_off = True
deadline = time.time() + req.get("timeout", 120)
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.2)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    if out.count(prompt) > answered and answers:
        wait_until = time.time() + 5
        while termios.tcgetattr(fd)[3] & termios.ECHO and time.time() < wait_until:
            time.sleep(0.01)
        echo_off = echo_off and not termios.tcgetattr(fd)[3] & termios.ECHO
        os.write(fd, answers.pop(0).encode() + b"\n")
        answered += 1
if time.time() >= deadline:
    os.kill(pid, 9)
_, status = os.waitpid(pid, 0)
json.dump(
    {
        "status": os.waitstatus_to_exitcode(status),
        "output": out.decode("utf-8", "replace"),
        "echo_off": echo_off,
        "answered": answered,
    },
    sys.stdout,
)

#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal, as a user at a terminal would, for tests/cli.rs.

Reads one JSON request on stdin:
  {"argv": [...], "env": {...}, "answers": ["..."], "prompt": "passphrase for"}
Each time the terminal output shows one more `prompt` than has been answered, waits until the
program has turned the terminal's echo off (Linux shares the termios of a pty's two ends), types
the next answer and Enter. Writes {"status": exit code, "output": everything the terminal showed,
"echo_off": whether echo was off at every prompt answered, "answered": how many were}.

With "stdout": "pipe" only stdin and stderr are the terminal; standard output goes to a pipe
(as in `cryptobucket cp s3://... - | sha256sum` typed at a terminal), and the result adds
"stdout_sha256" and "stdout_len".
"""
import hashlib
import subprocess
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

piped = req.get("stdout") == "pipe"
if piped:
    fd, slave = pty.openpty()
    child = subprocess.Popen(req["argv"], env=env, stdin=slave, stdout=subprocess.PIPE,
                             stderr=slave, start_new_session=True)
    os.close(slave)
    pid = child.pid
    digest, stdout_len = hashlib.sha256(), 0
else:
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(req["argv"][0], req["argv"], env)

out = b""
answered = 0
echo_off = True
deadline = time.time() + req.get("timeout", 120)
pipe_open = piped
while time.time() < deadline:
    watch = [fd] + ([child.stdout] if pipe_open else [])
    ready, _, _ = select.select(watch, [], [], 0.2)
    if piped and child.stdout in ready:
        data = os.read(child.stdout.fileno(), 1 << 20)
        if data:
            digest.update(data)
            stdout_len += len(data)
        else:
            pipe_open = False
    if fd in ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            if piped and pipe_open:
                continue
            break
        out += chunk
    elif piped and not pipe_open and child.poll() is not None:
        break
    if out.count(prompt) > answered and answers:
        wait_until = time.time() + 5
        while termios.tcgetattr(fd)[3] & termios.ECHO and time.time() < wait_until:
            time.sleep(0.01)
        echo_off = echo_off and not termios.tcgetattr(fd)[3] & termios.ECHO
        os.write(fd, answers.pop(0).encode() + b"\n")
        answered += 1
if time.time() >= deadline:
    os.kill(pid, 9)
if piped:
    code = child.wait()
    # Whatever the terminal still holds after the child ended.
    while select.select([fd], [], [], 0.1)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
else:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
result = {
    "status": code,
    "output": out.decode("utf-8", "replace"),
    "echo_off": echo_off,
    "answered": answered,
}
if piped:
    result["stdout_sha256"] = digest.hexdigest()
    result["stdout_len"] = stdout_len
json.dump(result, sys.stdout)

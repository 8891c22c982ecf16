"""MONITOR output on stdin -> the same commands in RESP on stdout, for `redis-cli --pipe`.

Commands a script ran (`[0 lua]`) are left out: their EVALSHA runs them again. So are the
connection's own bookkeeping (MONITOR, CLIENT, INFO) and FLUSHALL (the replay starts empty).
MONITOR quotes arguments the way sdscatrepr does; they are unquoted back to their bytes."""
import re
import sys

LINE = re.compile(rb'^[0-9.]+ \[([^\]]*)\] (.*)$')
ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
ESCAPES = {ord('n'): b'\n', ord('r'): b'\r', ord('t'): b'\t', ord('a'): b'\a', ord('b'): b'\b',
           ord('"'): b'"', ord('\\'): b'\\'}
SKIP = {b'MONITOR', b'CLIENT', b'INFO', b'FLUSHALL'}


def unquote(s):
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != ord('\\'):
            out.append(c)
            i += 1
        elif s[i + 1] == ord('x'):
            out.append(int(s[i + 2:i + 4], 16))
            i += 4
        else:
            out += ESCAPES[s[i + 1]]
            i += 2
    return bytes(out)


def main():
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        m = LINE.match(line.rstrip(b'\n'))
        if not m or b'lua' in m.group(1):
            continue
        args = [unquote(a) for a in ARG.findall(m.group(2))]
        if not args or args[0].upper() in SKIP:
            continue
        out.write(b'*%d\r\n' % len(args))
        for a in args:
            out.write(b'$%d\r\n%s\r\n' % (len(a), a))


main()

#!/usr/bin/python3
"""matrix_urllib.py - a urllib client for the compatibility matrix: GET each URL (urllib.request, one
connection per request), bodies to stdout.

Usage: matrix_urllib.py [-H "Name: value"]... URL... Exit status 0 when every answer was a 200.
"""
import sys
import urllib.request


def main():
    headers, urls, args = {}, [], sys.argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "-H":
            name, _, value = args.pop(0).partition(":")
            headers[name.strip()] = value.strip()
        else:
            urls.append(arg)
    ok = True
    for url in urls:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            sys.stdout.buffer.write(r.read())
            ok = ok and r.status == 200
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

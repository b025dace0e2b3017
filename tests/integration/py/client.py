#!/usr/bin/python3
"""client.py - a tiny curl stand-in: GET each URL over one keep-alive connection, bodies to stdout.

Usage: client.py [-H "Name: value"]... URL... (all URLs on the same host:port). Used instead of curl
where curl cannot run traced: in sanitizer builds the preloaded libasan deadlocks curl in setlocale.
Exit status 0 when every request got a response, 7 when the connection failed (as curl does).
"""
import http.client
import sys
import urllib.parse


def main():
    headers, urls, args = {}, [], sys.argv[1:]
    while args:
        arg = args.pop(0)
        if arg == "-H":
            name, _, value = args.pop(0).partition(":")
            headers[name.strip()] = value.strip()
        else:
            urls.append(arg)
    first = urllib.parse.urlsplit(urls[0])
    conn = http.client.HTTPConnection(first.hostname, first.port, timeout=10)
    try:
        for url in urls:
            conn.request("GET", urllib.parse.urlsplit(url).path or "/", headers=headers)
            sys.stdout.buffer.write(conn.getresponse().read())
    except OSError as err:
        print("client.py: %s" % err, file=sys.stderr)
        return 7
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

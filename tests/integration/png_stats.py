#!/usr/bin/env python3
"""png_stats.py - decode an 8-bit RGB/RGBA PNG with zlib alone and print what test_html.c checks.

Prints one line: "WIDTH HEIGHT DISTINCT_COLOURS NON_WHITE_PIXELS RED_PIXELS" (red: close to the
page's error colour #dc2626). Exit status 1 with a message when the file is not such a PNG.
"""
import struct
import sys
import zlib


def chunks(data):
    pos = 8
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + n]
        pos += 12 + n


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def unfilter(raw, width, height, bpp):
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    pos = 0
    for _ in range(height):
        ftype, line = raw[pos], bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 255
            elif ftype == 4:
                line[i] = (line[i] + paeth(a, b, c)) & 255
        rows.append(line)
        prev = line
    return rows


def main(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit("png_stats: %s: not a PNG" % path)
    idat = b""
    for kind, body in chunks(data):
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
    if depth != 8 or ctype not in (2, 6):
        sys.exit("png_stats: %s: bit depth %d colour type %d not handled" % (path, depth, ctype))
    bpp = 3 if ctype == 2 else 4
    rows = unfilter(zlib.decompress(idat), width, height, bpp)
    colours, nonwhite, red = set(), 0, 0
    for line in rows:
        for i in range(0, len(line), bpp):
            r, g, b = line[i], line[i + 1], line[i + 2]
            colours.add((r, g, b))
            nonwhite += (r, g, b) != (255, 255, 255)
            red += abs(r - 0xdc) < 24 and abs(g - 0x26) < 24 and abs(b - 0x26) < 24
    print(width, height, len(colours), nonwhite, red)


if __name__ == "__main__":
    main(sys.argv[1])

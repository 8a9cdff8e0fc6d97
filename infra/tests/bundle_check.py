"""The module's bundle preconditions (modules/cloudfront-mtls/main.tf, locals and the
aws_cloudfront_trust_store precondition blocks), mirrored in Python so they can be checked offline
against a real bundle. Keep both in step."""

import re
import sys


def violations(text):
    out = []
    if len(text.encode()) > 65536:
        out.append("over 65,536 bytes")
    blocks = len(re.findall(r"-----BEGIN [A-Z0-9 ]+-----", text))
    certs = len(re.findall(r"-----BEGIN CERTIFICATE-----", text))
    if not 1 <= certs <= 25:
        out.append(f"{certs} certificates; 1 to 25 allowed")
    if blocks != certs:
        out.append("blocks other than CERTIFICATE")
    if re.search(r"-----END CERTIFICATE-----\r?\n[ \t]*\r?\n", text):
        out.append("blank line between certificates")
    return out


if __name__ == "__main__":
    problems = violations(open(sys.argv[1], encoding="utf-8").read())
    for p in problems:
        print(p)
    sys.exit(1 if problems else 0)
